package watermill_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
	shmwm "github.com/shmq/shmq/watermill"
)

func TestMain(m *testing.M) {
	proctest.Register("publisher", runPublisher)
	proctest.Register("member", runMember)
	proctest.Register("handler", runHandler) // bench_test.go
	proctest.Main(m)
}

// procID is the UUID of message i of a cross-process test: every other one is no UUID,
// so that both ways of carrying an id cross processes.
func procID(i int) string {
	if i%2 == 0 {
		return fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
	}
	return fmt.Sprintf("message-%d", i)
}

// runPublisher publishes messages [from, from+count) to a topic and exits.
// Args: dir, topic, from, count.
func runPublisher(c *proctest.Child) error {
	dir, topicName := c.Args[0], c.Args[1]
	from, _ := strconv.Atoi(c.Args[2])
	count, _ := strconv.Atoi(c.Args[3])
	pub, err := shmwm.NewPublisher(shmwm.PublisherConfig{Config: shmwm.Config{Dir: dir}, Source: "child"}, nil)
	if err != nil {
		return err
	}
	defer pub.Close()
	for i := from; i < from+count; i++ {
		msg := message.NewMessage(procID(i), []byte(strconv.Itoa(i)))
		msg.Metadata.Set("i", strconv.Itoa(i))
		if err := pub.Publish(topicName, msg); err != nil {
			return err
		}
	}
	c.Point("published")
	return pub.Close()
}

// runMember is a consumer group member that reports each message it handles, as
// "pid id", and acks it after a pause. Args: dir, topic, group, pause.
func runMember(c *proctest.Child) error {
	dir, topicName, group := c.Args[0], c.Args[1], c.Args[2]
	pause, _ := time.ParseDuration(c.Args[3])
	sub, err := shmwm.NewSubscriber(shmwm.SubscriberConfig{Config: shmwm.Config{Dir: dir}, ConsumerGroup: group}, nil)
	if err != nil {
		return err
	}
	defer sub.Close()
	ch, err := sub.Subscribe(context.Background(), topicName)
	if err != nil {
		return err
	}
	c.Point("subscribed")
	for m := range ch {
		if err := c.Result(m.UUID); err != nil {
			return err
		}
		time.Sleep(pause)
		m.Ack()
	}
	return nil
}

// A publisher process and a subscriber process: every message arrives, in order, with its
// UUID and metadata; the subscription keeps waiting, asleep, after the publisher exited,
// and gets what the next publisher process publishes.
func TestProcPublishSubscribe(t *testing.T) {
	dir := testDir(t)
	sub := newSubscriber(t, shmwm.SubscriberConfig{Config: shmwm.Config{Dir: dir}})
	ch, err := sub.Subscribe(context.Background(), "orders/eu")
	require.NoError(t, err)

	const n = 1000
	p := proctest.Start(t, "publisher", proctest.Options{Args: []string{dir, "orders/eu", "0", strconv.Itoa(n)}})
	for i := range n {
		m := receive(t, ch)
		require.Equal(t, procID(i), m.UUID)
		require.Equal(t, strconv.Itoa(i), string(m.Payload))
		require.Equal(t, message.Metadata{"i": strconv.Itoa(i)}, m.Metadata)
		m.Ack()
	}
	require.NoError(t, p.Wait(wait))

	// Every publisher is gone: the subscription waits on, asleep in the kernel.
	seg, err := shm.Inspect(shmwm.TopicSegment("wm.", "orders/eu"), shm.Options{Dir: dir})
	require.NoError(t, err)
	defer seg.Close()
	var before ring.Stats
	deadline := time.Now().Add(wait)
	for {
		before, err = ring.ReadStats(seg)
		require.NoError(t, err)
		if before.ReadersAsleep == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	assert.Equal(t, 1, before.ReadersAsleep, "the waiting subscription sleeps")
	assertNothing(t, ch, time.Second)
	after, err := ring.ReadStats(seg)
	require.NoError(t, err)
	assert.Equal(t, 1, after.ReadersAsleep)
	// A polling reader would find the topic empty hundreds of times a second; a sleeping
	// one wakes only for its liveness checks.
	t.Logf("empty looks in a second of waiting: %d", after.Readers.Empty-before.Readers.Empty)
	assert.Less(t, after.Readers.Empty-before.Readers.Empty, uint64(20), "looked at an empty topic %d times in a second", after.Readers.Empty-before.Readers.Empty)

	p = proctest.Start(t, "publisher", proctest.Options{Args: []string{dir, "orders/eu", strconv.Itoa(n), "1"}})
	m := receive(t, ch)
	assert.Equal(t, procID(n), m.UUID)
	m.Ack()
	require.NoError(t, p.Wait(wait))
}

// collect gathers the ids that member processes report until want distinct ones came (or
// wait passed), then for grace more, and returns how often each came.
func collect(t *testing.T, procs []*proctest.Proc, want int, grace time.Duration) (map[string]int, []int) {
	t.Helper()
	type report struct {
		proc int
		id   string
	}
	reports := make(chan report, 1024)
	for i, p := range procs {
		go func() {
			for k := 0; ; k++ {
				var id string
				if err := p.Result(k, &id, time.Hour); err != nil {
					return // the child exited (killed at the test's end)
				}
				reports <- report{i, id}
			}
		}()
	}
	counts, per := map[string]int{}, make([]int, len(procs))
	timeout := time.After(wait)
	for len(counts) < want {
		select {
		case r := <-reports:
			counts[r.id]++
			per[r.proc]++
		case <-timeout:
			t.Fatalf("%d of %d messages handled", len(counts), want)
		}
	}
	end := time.After(grace)
	for {
		select {
		case r := <-reports:
			counts[r.id]++
			per[r.proc]++
		case <-end:
			return counts, per
		}
	}
}

// Two member processes of one consumer group share the stream: each message is handled
// once by the group, and both handle some.
func TestProcConsumerGroupShares(t *testing.T) {
	dir := testDir(t)
	c := shmwm.Config{Dir: dir}
	var procs []*proctest.Proc
	for range 2 {
		p := proctest.Start(t, "member", proctest.Options{Args: []string{dir, "jobs", "workers", "2ms"}})
		p.WaitPoint("subscribed", wait)
		procs = append(procs, p)
	}
	pub := newPublisher(t, c)
	const n = 200
	for i := range n {
		require.NoError(t, pub.Publish("jobs", message.NewMessage(procID(i), []byte("job"))))
	}
	counts, per := collect(t, procs, n, 300*time.Millisecond)
	for i := range n {
		assert.Equal(t, 1, counts[procID(i)], "message %d", i)
	}
	assert.Len(t, counts, n)
	assert.Positive(t, per[0], "member 1 handled none")
	assert.Positive(t, per[1], "member 2 handled none")
	t.Logf("handled per member: %v", per)
}

// A member process that dies (SIGKILL) while it pumps the group and holds a message: the
// other member takes over, and every message is handled (the one the dead member held may
// be handled twice: at least once).
func TestProcConsumerGroupMemberKilled(t *testing.T) {
	dir := testDir(t)
	c := shmwm.Config{Dir: dir}
	a := proctest.Start(t, "member", proctest.Options{Args: []string{dir, "jobs", "workers", "20ms"}})
	a.WaitPoint("subscribed", wait) // first: a pumps
	b := proctest.Start(t, "member", proctest.Options{Args: []string{dir, "jobs", "workers", "1ms"}})
	b.WaitPoint("subscribed", wait)

	pub := newPublisher(t, c)
	const n = 100
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // publishes while a dies: under Block the dead pump must stop holding it back
		defer wg.Done()
		for i := range n {
			assert.NoError(t, pub.Publish("jobs", message.NewMessage(procID(i), []byte("job"))))
		}
	}()
	var first string
	require.NoError(t, a.Result(0, &first, wait))
	a.Kill()
	counts, _ := collect(t, []*proctest.Proc{a, b}, n, 0)
	wg.Wait()
	for i := range n {
		assert.GreaterOrEqual(t, counts[procID(i)], 1, "message %d", i)
	}
	assert.True(t, a.Killed())
}
