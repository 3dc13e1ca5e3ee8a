package bus_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/shmq/shmq/bus"
	"github.com/shmq/shmq/codec"
	"github.com/shmq/shmq/envelope"
)

// Reading is an event: fixed-size fields only, so that it travels as codec.Fixed, viewed in
// place by the handler.
type Reading struct {
	Sensor uint32
	Value  float64
}

// A publisher and a reliable subscriber of one bus. Here both are in one process; each
// could be in its own, opening the bus by name with the same configuration and registering
// the same types.
func Example() {
	dir, err := os.MkdirTemp("", "bus-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	b, err := bus.Open("plant", bus.Config{Dir: dir, Source: "capture", LaneSlots: 64, QueueSlots: 64})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	fixed, err := codec.NewFixed[Reading]()
	if err != nil {
		log.Fatal(err)
	}
	if err := bus.Register(b, "reading", codec.Codec[Reading](fixed)); err != nil {
		log.Fatal(err)
	}

	got := make(chan string, 2)
	sub, err := bus.Subscribe(b, func(ctx context.Context, ev *envelope.View, r *Reading) error {
		// ev and r are valid during the call only: copy what must outlive it.
		got <- fmt.Sprintf("%s from %s: sensor %d = %.1f", ev.Type(), ev.Source(), r.Sensor, r.Value)
		return nil // acknowledged
	}, bus.Delivery(bus.Reliable{Name: "storage", Timeout: time.Second}), bus.Workers(1))
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()

	ctx := context.Background()
	for i, v := range []float64{21.5, 22.0} {
		if _, err := bus.Publish(ctx, b, &Reading{Sensor: uint32(7 + i), Value: v}); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(<-got)
	fmt.Println(<-got)
	// Output:
	// reading from capture: sensor 7 = 21.5
	// reading from capture: sensor 8 = 22.0
}
