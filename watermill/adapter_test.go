package watermill_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
	"github.com/shmq/shmq/topic"
	shmwm "github.com/shmq/shmq/watermill"
)

// wait is how long a test waits for something that should happen at once: generous, for a
// loaded machine.
const wait = 10 * time.Second

func newPublisher(t *testing.T, c shmwm.Config) *shmwm.Publisher {
	t.Helper()
	p, err := shmwm.NewPublisher(shmwm.PublisherConfig{Config: c}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

func newSubscriber(t *testing.T, c shmwm.SubscriberConfig) *shmwm.Subscriber {
	t.Helper()
	s, err := shmwm.NewSubscriber(c, nil)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func receive(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		require.True(t, ok, "channel closed")
		return m
	case <-time.After(wait):
		t.Fatal("no message")
		return nil
	}
}

func assertNothing(t *testing.T, ch <-chan *message.Message, d time.Duration) {
	t.Helper()
	select {
	case m, ok := <-ch:
		if ok {
			t.Fatalf("unexpected message %s %q", m.UUID, m.Payload)
		}
		t.Fatal("channel closed")
	case <-time.After(d):
	}
}

func publish(t *testing.T, p *shmwm.Publisher, topicName string, payloads ...string) []*message.Message {
	t.Helper()
	var msgs []*message.Message
	for _, pl := range payloads {
		msgs = append(msgs, message.NewMessage(watermill.NewUUID(), []byte(pl)))
	}
	require.NoError(t, p.Publish(topicName, msgs...))
	return msgs
}

func TestNackRedeliversInOrder(t *testing.T) {
	c := shmwm.Config{Dir: testDir(t)}
	pub := newPublisher(t, c)
	sub := newSubscriber(t, shmwm.SubscriberConfig{Config: c})
	ch, err := sub.Subscribe(context.Background(), "orders")
	require.NoError(t, err)
	msgs := publish(t, pub, "orders", "a", "b")
	msgs[0].Metadata.Set("k", "v") // after Publish: what was sent had no metadata

	m := receive(t, ch)
	assert.Equal(t, msgs[0].UUID, m.UUID)
	assert.Empty(t, m.Metadata)
	m.Nack()
	select {
	case <-m.Context().Done():
	case <-time.After(wait):
		t.Fatal("the context of a nacked message did not end")
	}
	again := receive(t, ch)
	assert.Equal(t, msgs[0].UUID, again.UUID, "a nacked message comes again before any later one")
	assert.Equal(t, "a", string(again.Payload))
	assertNothing(t, ch, 50*time.Millisecond) // nothing more until it is acked
	again.Ack()
	m = receive(t, ch)
	assert.Equal(t, msgs[1].UUID, m.UUID)
	m.Ack()
	st := sub.Stats()
	assert.Equal(t, uint64(2), st.Delivered)
	assert.Equal(t, uint64(1), st.Redelivered)
}

func TestSeveralInFlight(t *testing.T) {
	c := shmwm.Config{Dir: testDir(t)}
	pub := newPublisher(t, c)
	sub := newSubscriber(t, shmwm.SubscriberConfig{Config: c, InFlight: 3})
	ch, err := sub.Subscribe(context.Background(), "jobs")
	require.NoError(t, err)
	msgs := publish(t, pub, "jobs", "1", "2", "3", "4")

	got := map[string]*message.Message{}
	for range 3 {
		m := receive(t, ch)
		got[m.UUID] = m
	}
	assert.Len(t, got, 3, "three messages out before any ack")
	assertNothing(t, ch, 50*time.Millisecond) // not a fourth
	// Ack the last of them first, nack another: the nacked one comes again, and the fourth.
	got[msgs[2].UUID].Ack()
	got[msgs[0].UUID].Nack()
	seen := map[string]bool{}
	for range 2 {
		m := receive(t, ch)
		seen[m.UUID] = true
		m.Ack()
	}
	assert.Equal(t, map[string]bool{msgs[0].UUID: true, msgs[3].UUID: true}, seen)
	got[msgs[1].UUID].Ack()
	assertNothing(t, ch, 50*time.Millisecond)
}

func TestLargeMessages(t *testing.T) {
	c := shmwm.Config{Dir: testDir(t)} // default topic: 4 KiB slots
	pub := newPublisher(t, c)
	sub := newSubscriber(t, shmwm.SubscriberConfig{Config: c})
	ch, err := sub.Subscribe(context.Background(), "big")
	require.NoError(t, err)

	big := message.NewMessage(watermill.NewUUID(), []byte(strings.Repeat("p", 3900)))
	big.Metadata.Set("m", "v")
	require.NoError(t, pub.Publish("big", big))
	m := receive(t, ch)
	assert.Equal(t, big.Payload, m.Payload)
	m.Ack()

	// One message too large: nothing of the call is published.
	small := message.NewMessage(watermill.NewUUID(), []byte("s"))
	huge := message.NewMessage(watermill.NewUUID(), []byte(strings.Repeat("p", 4100)))
	err = pub.Publish("big", small, huge)
	assert.ErrorIs(t, err, shmwm.ErrTooLarge)
	assert.ErrorIs(t, err, ring.ErrTooLarge)
	assertNothing(t, ch, 50*time.Millisecond)

	// A configured topic takes larger messages.
	c.Topic = shmwm.TopicConfig{Slots: 16, MaxMessage: 1<<20 - 16}
	pub2 := newPublisher(t, c)
	sub2 := newSubscriber(t, shmwm.SubscriberConfig{Config: c})
	ch2, err := sub2.Subscribe(context.Background(), "huge")
	require.NoError(t, err)
	huge = message.NewMessage(watermill.NewUUID(), []byte(strings.Repeat("h", 1<<19)))
	require.NoError(t, pub2.Publish("huge", huge))
	m = receive(t, ch2)
	assert.Equal(t, huge.Payload, m.Payload)
	m.Ack()
}

// A topic created by another process keeps its shape: a publisher configured otherwise
// joins it as it is.
func TestExistingTopicJoinedAsItIs(t *testing.T) {
	dir := testDir(t)
	opts := shm.Options{Dir: dir}
	tp, err := topic.Open(shmwm.TopicSegment("wm.", "made"), topic.Config{Policy: ring.Overwrite, Slots: 8, MaxMessage: 240}, opts)
	require.NoError(t, err)
	defer tp.Close()
	c := shmwm.Config{Dir: dir} // would create block, 1024 slots of 4 KiB
	pub := newPublisher(t, c)
	sub := newSubscriber(t, shmwm.SubscriberConfig{Config: c})
	ch, err := sub.Subscribe(context.Background(), "made")
	require.NoError(t, err)
	publish(t, pub, "made", "x")
	receive(t, ch).Ack()
	err = pub.Publish("made", message.NewMessage(watermill.NewUUID(), make([]byte, 600)))
	assert.ErrorIs(t, err, shmwm.ErrTooLarge, "the existing topic's 8 slots of 512 bytes hold")

	_, err = topic.Open(shmwm.TopicSegment("wm.", "latest"), topic.Config{Policy: ring.Latest, Slots: 8}, opts)
	require.NoError(t, err)
	_, err = sub.Subscribe(context.Background(), "latest")
	assert.ErrorIs(t, err, shmwm.ErrInvalidConfig)
}

func TestForeignRecordsPassedOver(t *testing.T) {
	dir := testDir(t)
	c := shmwm.Config{Dir: dir}
	pub := newPublisher(t, c)
	sub := newSubscriber(t, shmwm.SubscriberConfig{Config: c})
	ch, err := sub.Subscribe(context.Background(), "mixed")
	require.NoError(t, err)

	tp, err := topic.Join(context.Background(), shmwm.TopicSegment("wm.", "mixed"), shm.Options{Dir: dir})
	require.NoError(t, err)
	defer tp.Close()
	raw, err := tp.Publisher(ring.Options{})
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, raw.Write(ctx, 1, []byte("no envelope")))
	other := message.NewMessage(watermill.NewUUID(), []byte("x"))
	other.Metadata.Set("a", "b")
	// An envelope of another topic in this topic's segment: what a hash collision would do.
	h, err := envelope.NewHeader("another topic", "")
	require.NoError(t, err)
	h.Meta = []envelope.KV{{Key: "uuid", Value: ""}}
	b, err := h.Append(nil, []byte("x"))
	require.NoError(t, err)
	require.NoError(t, raw.Write(ctx, envelope.TypeID("another topic"), b))
	msgs := publish(t, pub, "mixed", "ours")

	m := receive(t, ch)
	assert.Equal(t, msgs[0].UUID, m.UUID)
	m.Ack()
	assert.Equal(t, uint64(2), sub.Stats().Rejected)
}

// Under ring.Overwrite a subscriber that falls a ring behind loses the oldest messages and
// counts them: received + lost = published.
func TestOverwriteCountsLost(t *testing.T) {
	c := shmwm.Config{Dir: testDir(t), Topic: shmwm.TopicConfig{Policy: ring.Overwrite, Slots: 16, MaxMessage: 240}}
	pub := newPublisher(t, c)
	sub := newSubscriber(t, shmwm.SubscriberConfig{Config: c})
	ch, err := sub.Subscribe(context.Background(), "fast")
	require.NoError(t, err)
	var payloads []string
	for i := range 100 {
		payloads = append(payloads, fmt.Sprint(i))
	}
	publish(t, pub, "fast", payloads...) // the publisher never waits; the subscriber is lapped
	received := uint64(0)
	deadline := time.After(wait)
	for received+sub.Stats().Lost < 100 {
		select {
		case m := <-ch:
			m.Ack()
			received++
		case <-time.After(time.Millisecond):
		case <-deadline:
			t.Fatalf("received %d, lost %d of 100", received, sub.Stats().Lost)
		}
	}
	assertNothing(t, ch, 50*time.Millisecond)
	st := sub.Stats()
	assert.Positive(t, st.Lost)
	assert.Equal(t, uint64(100), received+st.Lost)
}

func TestBlockPublishWaitsAndCloseWakesIt(t *testing.T) {
	c := shmwm.Config{Dir: testDir(t), Topic: shmwm.TopicConfig{Slots: 4, MaxMessage: 240}}
	pub := newPublisher(t, c)
	sub := newSubscriber(t, shmwm.SubscriberConfig{Config: c})
	ch, err := sub.Subscribe(context.Background(), "slow")
	require.NoError(t, err)
	publish(t, pub, "slow", "first")
	m := receive(t, ch) // handed out, not acked: the subscription reads no further
	// Four slots: the subscription released "first" and reads the next into its hands
	// once "first" is acked; until then the topic fills.
	done := make(chan error, 1)
	go func() {
		var err error
		for i := 0; i < 8 && err == nil; i++ {
			err = pub.Publish("slow", message.NewMessage(watermill.NewUUID(), []byte("more")))
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Publish did not wait for the subscriber: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); assert.NoError(t, pub.Close()) }()
	}
	select {
	case err := <-done:
		assert.ErrorIs(t, err, shmwm.ErrClosed)
		assert.ErrorIs(t, err, ring.ErrClosed)
	case <-time.After(wait):
		t.Fatal("Close did not wake Publish")
	}
	wg.Wait()
	assert.ErrorIs(t, pub.Publish("slow", message.NewMessage("x", nil)), shmwm.ErrClosed)
	m.Ack()
}

func TestPublishTimeout(t *testing.T) {
	c := shmwm.Config{Dir: testDir(t), Topic: shmwm.TopicConfig{Slots: 2, MaxMessage: 240}}
	pub, err := shmwm.NewPublisher(shmwm.PublisherConfig{Config: c, Timeout: 50 * time.Millisecond}, nil)
	require.NoError(t, err)
	defer pub.Close()
	sub := newSubscriber(t, shmwm.SubscriberConfig{Config: c})
	ch, err := sub.Subscribe(context.Background(), "t")
	require.NoError(t, err)
	publish(t, pub, "t", "1")
	m := receive(t, ch)
	var perr error
	for i := 0; i < 4 && perr == nil; i++ {
		perr = pub.Publish("t", message.NewMessage(watermill.NewUUID(), nil))
	}
	assert.ErrorIs(t, perr, context.DeadlineExceeded)
	m.Ack()
}

func TestSubscriberClose(t *testing.T) {
	c := shmwm.Config{Dir: testDir(t)}
	pub := newPublisher(t, c)
	sub, err := shmwm.NewSubscriber(shmwm.SubscriberConfig{Config: c}, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	byCtx, err := sub.Subscribe(ctx, "c")
	require.NoError(t, err)
	held, err := sub.Subscribe(context.Background(), "c")
	require.NoError(t, err)
	idle, err := sub.Subscribe(context.Background(), "other")
	require.NoError(t, err)
	publish(t, pub, "c", "x")
	m := receive(t, held) // handed out and not acked when Close comes

	cancel()
	for range byCtx { // closes when its context ends; a message may come first
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); assert.NoError(t, sub.Close()) }()
	}
	wg.Wait()
	_, open := <-held
	assert.False(t, open, "closed when Close returned")
	_, open = <-idle
	assert.False(t, open)
	select {
	case <-m.Context().Done():
	default:
		t.Fatal("the unacked message's context did not end at Close")
	}
	_, err = sub.Subscribe(context.Background(), "c")
	assert.ErrorIs(t, err, shmwm.ErrClosed)
	assert.ErrorIs(t, sub.SubscribeInitialize("c"), shmwm.ErrClosed)
}

func TestFromLatest(t *testing.T) {
	c := shmwm.Config{Dir: testDir(t)}
	pub := newPublisher(t, c)
	publish(t, pub, "news", "old")
	sub := newSubscriber(t, shmwm.SubscriberConfig{Config: c, FromLatest: true})
	ch, err := sub.Subscribe(context.Background(), "news")
	require.NoError(t, err)
	msgs := publish(t, pub, "news", "new")
	m := receive(t, ch)
	assert.Equal(t, msgs[0].UUID, m.UUID)
	m.Ack()
}

func TestInvalidConfig(t *testing.T) {
	for _, c := range []shmwm.Config{
		{Prefix: ".x"},
		{Prefix: "a", NoPrefix: true},
		{Topic: shmwm.TopicConfig{Policy: ring.Latest}},
		{Topic: shmwm.TopicConfig{Slots: 3}},
		{Topic: shmwm.TopicConfig{GroupSlots: 3}},
		{Topic: shmwm.TopicConfig{MaxMessage: -1}},
	} {
		_, err := shmwm.NewPublisher(shmwm.PublisherConfig{Config: c}, nil)
		assert.ErrorIs(t, err, shmwm.ErrInvalidConfig, "%+v", c)
		_, err = shmwm.NewSubscriber(shmwm.SubscriberConfig{Config: c}, nil)
		assert.ErrorIs(t, err, shmwm.ErrInvalidConfig, "%+v", c)
	}
	_, err := shmwm.NewSubscriber(shmwm.SubscriberConfig{InFlight: -1}, nil)
	assert.ErrorIs(t, err, shmwm.ErrInvalidConfig)
	_, err = shmwm.NewPublisher(shmwm.PublisherConfig{Timeout: -1}, nil)
	assert.ErrorIs(t, err, shmwm.ErrInvalidConfig)
}

// Two members of a group in one process share the stream, each message once; when the
// member that pumps the group goes, the other takes over and gets the rest.
func TestGroupMembersShareAndTakeOver(t *testing.T) {
	c := shmwm.Config{Dir: testDir(t)}
	pub := newPublisher(t, c)
	gc := shmwm.SubscriberConfig{Config: c, ConsumerGroup: "billing"}
	subA := newSubscriber(t, gc)
	subB := newSubscriber(t, gc)
	chA, err := subA.Subscribe(context.Background(), "orders") // first: the pump
	require.NoError(t, err)
	chB, err := subB.Subscribe(context.Background(), "orders")
	require.NoError(t, err)

	msgs := publish(t, pub, "orders", "1", "2", "3", "4")
	a, b := receive(t, chA), receive(t, chB) // each holds one, unacked: the others wait
	assert.NotEqual(t, a.UUID, b.UUID)
	a.Ack()
	b.Ack()
	seen := map[string]bool{a.UUID: true, b.UUID: true}
	for len(seen) < 4 {
		select {
		case m := <-chA:
			assert.False(t, seen[m.UUID], "twice: %s", m.Payload)
			seen[m.UUID] = true
			m.Ack()
		case m := <-chB:
			assert.False(t, seen[m.UUID], "twice: %s", m.Payload)
			seen[m.UUID] = true
			m.Ack()
		case <-time.After(wait):
			t.Fatalf("%d of 4", len(seen))
		}
	}
	for _, m := range msgs {
		assert.True(t, seen[m.UUID])
	}

	require.NoError(t, subA.Close()) // the pump goes
	more := publish(t, pub, "orders", "5", "6")
	for _, want := range more {
		m := receive(t, chB)
		assert.Equal(t, want.UUID, m.UUID, "in order, through the new pump")
		m.Ack()
	}

	// The group keeps its place while no member runs.
	require.NoError(t, subB.Close())
	later := publish(t, pub, "orders", "7")
	subC := newSubscriber(t, gc)
	chC, err := subC.Subscribe(context.Background(), "orders")
	require.NoError(t, err)
	m := receive(t, chC)
	assert.Equal(t, later[0].UUID, m.UUID, "neither an old message again nor a lost one")
	m.Ack()
	assertNothing(t, chC, 50*time.Millisecond)
}

// A message a member had unacked when it closed goes to another member.
func TestGroupUnackedGoesToAnotherMember(t *testing.T) {
	c := shmwm.Config{Dir: testDir(t)}
	pub := newPublisher(t, c)
	gc := shmwm.SubscriberConfig{Config: c, ConsumerGroup: "g"}
	subA := newSubscriber(t, gc)
	chA, err := subA.Subscribe(context.Background(), "t")
	require.NoError(t, err)
	msgs := publish(t, pub, "t", "only")
	receive(t, chA) // never acked
	subB := newSubscriber(t, gc)
	chB, err := subB.Subscribe(context.Background(), "t")
	require.NoError(t, err)
	assertNothing(t, chB, 50*time.Millisecond)
	require.NoError(t, subA.Close())
	m := receive(t, chB)
	assert.Equal(t, msgs[0].UUID, m.UUID)
	m.Ack()
}

func TestSubscribeInitializeKeepsMessagesForTheGroup(t *testing.T) {
	c := shmwm.Config{Dir: testDir(t)}
	gc := shmwm.SubscriberConfig{Config: c, ConsumerGroup: "late", FromLatest: true}
	sub := newSubscriber(t, gc)
	require.NoError(t, sub.SubscribeInitialize("t"))
	pub := newPublisher(t, c)
	msgs := publish(t, pub, "t", "before the first member")
	ch, err := sub.Subscribe(context.Background(), "t")
	require.NoError(t, err)
	m := receive(t, ch)
	assert.Equal(t, msgs[0].UUID, m.UUID)
	m.Ack()
}

func TestErrClosedIsRingClosed(t *testing.T) {
	assert.True(t, errors.Is(shmwm.ErrClosed, ring.ErrClosed))
}

func TestDeleteGroupAndRemoveTopic(t *testing.T) {
	dir := testDir(t)
	c := shmwm.Config{Dir: dir}
	gc := shmwm.SubscriberConfig{Config: c, ConsumerGroup: "g"}
	sub := newSubscriber(t, gc)
	ch, err := sub.Subscribe(context.Background(), "t")
	require.NoError(t, err)
	assert.ErrorIs(t, shmwm.DeleteGroup(c, "t", "g"), ring.ErrBusy, "a member pumps it")
	require.NoError(t, sub.Close())
	for range ch {
	}
	names, err := shm.List(shm.Options{Dir: dir})
	require.NoError(t, err)
	assert.Equal(t, []string{"wm.t", "wm.t__g"}, names)

	require.NoError(t, shmwm.DeleteGroup(c, "t", "g"))
	assert.ErrorIs(t, shmwm.DeleteGroup(c, "t", "g"), ring.ErrNoSubscription)
	names, err = shm.List(shm.Options{Dir: dir})
	require.NoError(t, err)
	assert.Equal(t, []string{"wm.t"}, names)
	st, err := topic.List(shm.Options{Dir: dir})
	require.NoError(t, err)
	require.Len(t, st, 1)
	assert.Zero(t, st[0].Subscriptions, "the durable subscription is gone")

	// A new group of that name starts afresh.
	pub := newPublisher(t, c)
	publish(t, pub, "t", "1")
	require.NoError(t, pub.Close())
	_, err = newSubscriber(t, gc).Subscribe(context.Background(), "t")
	require.NoError(t, err)
	require.NoError(t, shmwm.RemoveTopic(c, "t"))
	names, err = shm.List(shm.Options{Dir: dir})
	require.NoError(t, err)
	assert.Empty(t, names)
	assert.ErrorIs(t, shmwm.RemoveTopic(c, "t"), shm.ErrNotExist)
	assert.ErrorIs(t, shmwm.DeleteGroup(c, "t", "g"), shm.ErrNotExist)
}
