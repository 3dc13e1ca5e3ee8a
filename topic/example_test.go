package topic_test

import (
	"context"
	"fmt"
	"os"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
	"github.com/shmq/shmq/topic"
)

// One publisher, two subscribers: each reads every message, in place. In real use each
// runs in its own process and opens the topic by the same name and Config.
func Example() {
	dir, _ := os.MkdirTemp("", "topic-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	opts := shm.Options{Dir: dir}
	cfg := topic.Config{Policy: ring.Block, Slots: 256, MaxMessage: 112}

	t, err := topic.Open("events", cfg, opts)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer t.Close()
	audit, _ := t.Subscribe(ctx, ring.SubscribeOptions{Name: "audit", Start: ring.FromOldest}) // durable
	live, _ := t.Subscribe(ctx, ring.SubscribeOptions{})                                       // from what comes next

	pub, _ := t.Publisher(ring.Options{})
	for _, ev := range []string{"started", "ready", "stopped"} {
		pub.Write(ctx, 1, []byte(ev))
	}

	for _, s := range []*ring.Subscriber{audit, live} {
		s.Drain(ctx, func(rec ring.Record) error {
			fmt.Printf("%s got %s\n", map[bool]string{true: "audit", false: "live"}[s.Name() == "audit"], rec.Data)
			return nil
		}, 0)
	}
	// Output:
	// audit got started
	// audit got ready
	// audit got stopped
	// live got started
	// live got ready
	// live got stopped
}
