package watermill_test

import (
	"context"
	"fmt"
	"os"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	shmwm "github.com/shmq/shmq/watermill"
)

// A publisher and a subscriber of one topic. In real use they are in different processes
// that share Config.Dir (by default /dev/shm); here the directory is a temporary one.
func Example() {
	dir, _ := os.MkdirTemp("", "wm-example-")
	defer os.RemoveAll(dir)
	cfg := shmwm.Config{Dir: dir}

	pub, err := shmwm.NewPublisher(shmwm.PublisherConfig{Config: cfg}, watermill.NopLogger{})
	if err != nil {
		panic(err)
	}
	defer pub.Close()
	msg := message.NewMessage("order-1", []byte(`{"sku":"A7","qty":2}`))
	msg.Metadata.Set("region", "eu")
	if err := pub.Publish("orders.created", msg); err != nil { // before anyone subscribed
		panic(err)
	}

	sub, err := shmwm.NewSubscriber(shmwm.SubscriberConfig{Config: cfg}, watermill.NopLogger{})
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	messages, err := sub.Subscribe(context.Background(), "orders.created")
	if err != nil {
		panic(err)
	}
	m := <-messages // a new subscriber starts with the oldest message the topic holds
	fmt.Println(m.UUID, m.Metadata.Get("region"), string(m.Payload))
	m.Ack()
	fmt.Println(shmwm.TopicSegment("wm.", "orders.created"))
	// Output:
	// order-1 eu {"sku":"A7","qty":2}
	// wm.orders.created
}
