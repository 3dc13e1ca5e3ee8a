package watermill_test

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/shmq/shmq/internal/proctest"
	shmwm "github.com/shmq/shmq/watermill"
)

// BenchmarkPublishToHandler measures Watermill messages of 64 bytes from Publish to a
// router's handler: over shmq with the router in another process, and over Watermill's
// GoChannel in this process (its default configuration, where Publish hands each message
// to a goroutine of its own, and with BlockPublishUntilSubscriberAck, where Publish waits
// for the handler). One publisher goroutine publishes b.N messages, one Publish each; the
// time ends when the handler has seen the last one.
//
//	go test -run '^$' -bench PublishToHandler -benchtime 200000x
func BenchmarkPublishToHandler(b *testing.B) {
	payload := make([]byte, 64)
	for _, gc := range []struct {
		name string
		cfg  gochannel.Config
	}{
		{"gochannel", gochannel.Config{}},
		{"gochannel-publish-waits-ack", gochannel.Config{BlockPublishUntilSubscriberAck: true}},
	} {
		b.Run(gc.name, func(b *testing.B) {
			logger := watermill.NopLogger{}
			ps := gochannel.NewGoChannel(gc.cfg, logger)
			defer ps.Close()
			var seen atomic.Int64
			done := make(chan struct{})
			router, err := message.NewRouter(message.RouterConfig{}, logger)
			if err != nil {
				b.Fatal(err)
			}
			router.AddConsumerHandler("count", "bench", ps, func(*message.Message) error {
				if seen.Add(1) == int64(b.N) {
					close(done)
				}
				return nil
			})
			go router.Run(context.Background())
			defer router.Close()
			<-router.Running()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				if err := ps.Publish("bench", message.NewMessage(watermill.NewUUID(), payload)); err != nil {
					b.Fatal(err)
				}
			}
			<-done
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
		})
	}
	b.Run("shmq-2proc", func(b *testing.B) {
		dir := testDir(b)
		topicName := "bench-" + strconv.Itoa(b.N)
		p := proctest.Start(b, "handler", proctest.Options{Args: []string{dir, topicName, strconv.Itoa(b.N)}})
		p.WaitPoint("running", time.Minute)
		pub, err := shmwm.NewPublisher(shmwm.PublisherConfig{Config: shmwm.Config{Dir: dir}}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer pub.Close()
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			if err := pub.Publish(topicName, message.NewMessage(watermill.NewUUID(), payload)); err != nil {
				b.Fatal(err)
			}
		}
		p.WaitPoint("done", time.Minute)
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
		b.StopTimer()
		if err := p.Wait(time.Minute); err != nil {
			b.Fatal(err)
		}
	})
}

// runHandler runs a Watermill router whose handler counts the messages of a topic and
// reports "done" at the count asked for. Args: dir, topic, count.
func runHandler(c *proctest.Child) error {
	dir, topicName := c.Args[0], c.Args[1]
	n, _ := strconv.ParseInt(c.Args[2], 10, 64)
	logger := watermill.NopLogger{}
	sub, err := shmwm.NewSubscriber(shmwm.SubscriberConfig{Config: shmwm.Config{Dir: dir}}, logger)
	if err != nil {
		return err
	}
	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return err
	}
	var seen atomic.Int64
	done := make(chan struct{})
	router.AddConsumerHandler("count", topicName, sub, func(*message.Message) error {
		if seen.Add(1) == n {
			close(done)
		}
		return nil
	})
	go router.Run(context.Background())
	<-router.Running()
	c.Point("running")
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("%d of %d messages handled", seen.Load(), n)
	}
	c.Point("done")
	return router.Close()
}
