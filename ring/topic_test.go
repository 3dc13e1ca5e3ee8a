package ring_test

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// newTopicSeg makes a topic of the given number of slots, at least slotSize bytes each (the
// data region is at least 4 KiB).
func newTopicSeg(t testing.TB, policy ring.Policy, slots uint64, slotSize uint32) *shm.Segment {
	t.Helper()
	slotSize = max(slotSize, uint32(4096/slots))
	return newSegment(t, testDir(t), "topic", ring.Spec{Kind: ring.Topic, Size: slots * uint64(slotSize), SlotSize: slotSize, Policy: policy})
}

func subscribe(t testing.TB, seg *shm.Segment, opts ring.SubscribeOptions) *ring.Subscriber {
	t.Helper()
	s, err := ring.Subscribe(context.Background(), seg, opts)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func publisher(t testing.TB, seg *shm.Segment) *ring.Publisher {
	t.Helper()
	p, err := ring.NewPublisher(seg, ring.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func TestTopicSpec(t *testing.T) {
	dir := testDir(t)
	_, err := ring.Create("t", ring.Spec{Kind: ring.Topic, Size: 4096, SlotSize: 64}, shm.Options{Dir: dir})
	assert.ErrorIs(t, err, shm.ErrInvalidSpec, "a topic needs a policy")
	_, err = ring.Create("t", ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 64, Policy: ring.Block}, shm.Options{Dir: dir})
	assert.ErrorIs(t, err, shm.ErrInvalidSpec, "only topics have a policy")
	spec := ring.Spec{Kind: ring.Topic, Size: 4096, SlotSize: 64, Policy: ring.Overwrite}
	seg, created, err := ring.OpenOrCreate("t", spec, shm.Options{Dir: dir})
	require.NoError(t, err)
	assert.True(t, created)
	defer seg.Close()
	got, err := ring.SpecOf(seg.Descriptor())
	require.NoError(t, err)
	assert.Equal(t, spec, got)
	spec.Policy = ring.Block
	_, _, err = ring.OpenOrCreate("t", spec, shm.Options{Dir: dir})
	assert.ErrorIs(t, err, shm.ErrMismatch, "a second creator with another policy is refused")
	for _, p := range []ring.Policy{ring.Block, ring.Overwrite, ring.Latest} {
		q, err := ring.ParsePolicy(p.String())
		require.NoError(t, err)
		assert.Equal(t, p, q)
	}
	_, err = ring.ParsePolicy("drop")
	assert.Error(t, err)
	_, err = ring.NewMPMCWriter(seg, ring.Options{})
	assert.ErrorIs(t, err, ring.ErrKind)
}

// TestTopicFanOut: every subscriber reads every record in order, in place, under Block with
// a ring much smaller than the stream.
func TestTopicFanOut(t *testing.T) {
	seg := newTopicSeg(t, ring.Block, 16, 64)
	const subs, total = 3, 5000
	var ss []*ring.Subscriber
	for range subs {
		ss = append(ss, subscribe(t, seg, ring.SubscribeOptions{}))
	}
	p := publisher(t, seg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, subs)
	for i, s := range ss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := uint64(0)
			for next < total {
				_, err := s.Drain(ctx, func(rec ring.Record) error {
					if v := binary.LittleEndian.Uint64(rec.Data); v != next || rec.Type != uint32(v%7) {
						return errors.New("out of order")
					}
					next++
					return nil
				}, 0)
				if err != nil {
					errs[i] = err
					return
				}
			}
		}()
	}
	for i := uint64(0); i < total; i++ {
		if i%3 == 0 {
			bufs, err := p.ReserveBatch(ctx, uint32(i%7), 8, 1, nil)
			require.NoError(t, err)
			binary.LittleEndian.PutUint64(bufs[0], i)
			require.NoError(t, p.Commit())
			continue
		}
		require.NoError(t, p.Write(ctx, uint32(i%7), u64(i)))
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	st, err := ring.ReadTopicStats(seg)
	require.NoError(t, err)
	assert.EqualValues(t, total, st.Published)
	require.Len(t, st.Subscriptions, subs)
	for _, s := range st.Subscriptions {
		assert.EqualValues(t, total, s.Position)
		assert.Zero(t, s.Lag)
		assert.Zero(t, s.Missed)
		assert.True(t, s.Alive)
	}
	rs, err := ring.ReadStats(seg)
	require.NoError(t, err)
	assert.EqualValues(t, total, rs.Writers.Messages)
	assert.EqualValues(t, subs*total, rs.Readers.Messages)
	assert.Equal(t, 1, rs.WritersOpen)
	assert.Equal(t, subs, rs.ReadersOpen)
}

// TestTopicBlockWaitsForSlowest: a Block publisher cannot pass the slowest subscriber, and
// goes on once it releases or leaves.
func TestTopicBlockWaitsForSlowest(t *testing.T) {
	seg := newTopicSeg(t, ring.Block, 8, 64)
	fast := subscribe(t, seg, ring.SubscribeOptions{})
	slow, err := ring.Subscribe(context.Background(), seg, ring.SubscribeOptions{})
	require.NoError(t, err)
	p := publisher(t, seg)
	for i := range 8 {
		require.NoError(t, p.TryWrite(0, u64(uint64(i))))
	}
	assert.ErrorIs(t, p.TryWrite(0, nil), ring.ErrFull)
	assert.False(t, p.Ready(8))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, p.Write(ctx, 0, nil), context.DeadlineExceeded)
	n, err := fast.Drain(context.Background(), func(ring.Record) error { return nil }, 0)
	require.NoError(t, err)
	assert.Equal(t, 8, n)
	assert.ErrorIs(t, p.TryWrite(0, nil), ring.ErrFull, "the slow subscriber still holds record 0")
	rec, err := slow.Next(context.Background())
	require.NoError(t, err)
	assert.EqualValues(t, 0, binary.LittleEndian.Uint64(rec.Data))
	slow.Release()
	require.NoError(t, p.TryWrite(0, u64(8)))
	assert.ErrorIs(t, p.TryWrite(0, nil), ring.ErrFull)

	// A blocked Write returns once the slow subscriber leaves.
	done := make(chan error, 1)
	go func() { done <- p.Write(context.Background(), 0, u64(9)) }()
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Write returned %v while the ring was full", err)
	default:
	}
	require.NoError(t, slow.Close())
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Write still blocked after the slow subscriber closed")
	}
}

// TestTopicOverwriteLag: a lapped subscriber learns exactly how much it missed and goes on
// from the oldest record held; received + missed = published.
func TestTopicOverwriteLag(t *testing.T) {
	seg := newTopicSeg(t, ring.Overwrite, 8, 64)
	s := subscribe(t, seg, ring.SubscribeOptions{})
	p := publisher(t, seg)
	for i := range 20 {
		require.NoError(t, p.TryWrite(0, u64(uint64(i))), "Overwrite never waits")
	}
	_, err := s.TryNext()
	var lag *ring.LagError
	require.ErrorAs(t, err, &lag)
	assert.ErrorIs(t, err, ring.ErrLagged)
	assert.EqualValues(t, 12, lag.Missed, "20 published, the ring holds the last 8")
	buf := make([]byte, 8)
	for want := uint64(12); want < 20; want++ {
		n, _, err := s.TryRead(buf)
		require.NoError(t, err)
		assert.Equal(t, 8, n)
		assert.Equal(t, want, binary.LittleEndian.Uint64(buf))
	}
	_, _, err = s.TryRead(buf)
	assert.ErrorIs(t, err, ring.ErrEmpty)

	// A record overwritten while borrowed in place fails validation and counts as missed.
	require.NoError(t, p.TryWrite(0, u64(20)))
	rec, err := s.TryNext()
	require.NoError(t, err)
	assert.EqualValues(t, 20, binary.LittleEndian.Uint64(rec.Data))
	require.NoError(t, s.Validate())
	rec, err = s.TryNext() // empty
	assert.ErrorIs(t, err, ring.ErrEmpty)
	require.NoError(t, p.TryWrite(0, u64(21)))
	_, err = s.TryNext()
	require.NoError(t, err)
	for i := 22; i < 40; i++ {
		require.NoError(t, p.TryWrite(0, u64(uint64(i))))
	}
	err = s.Validate()
	require.ErrorAs(t, err, &lag)
	// 21 was borrowed and overwritten; 22..31 were overwritten too; 32..39 are held.
	assert.EqualValues(t, 11, lag.Missed)
	rec, err = s.TryNext()
	require.NoError(t, err)
	assert.EqualValues(t, 32, binary.LittleEndian.Uint64(rec.Data))
	s.Release()
	st, err := ring.ReadTopicStats(seg)
	require.NoError(t, err)
	assert.EqualValues(t, 23, st.Subscriptions[0].Missed)
	assert.EqualValues(t, 33, st.Subscriptions[0].Position)
	assert.EqualValues(t, 7, st.Subscriptions[0].Lag)
}

// TestTopicLatest: Next skips to the newest record; Load reads the newest value.
func TestTopicLatest(t *testing.T) {
	seg := newTopicSeg(t, ring.Latest, 8, 64)
	s := subscribe(t, seg, ring.SubscribeOptions{})
	buf := make([]byte, 8)
	_, _, _, err := s.Load(buf)
	assert.ErrorIs(t, err, ring.ErrEmpty)
	p := publisher(t, seg)
	for i := range 100 {
		require.NoError(t, p.TryWrite(uint32(i), u64(uint64(i))))
	}
	rec, err := s.TryNext()
	require.NoError(t, err)
	assert.EqualValues(t, 99, binary.LittleEndian.Uint64(rec.Data), "Next conflates to the newest")
	s.Release()
	_, err = s.TryNext()
	assert.ErrorIs(t, err, ring.ErrEmpty)
	n, typ, seq, err := s.Load(buf)
	require.NoError(t, err)
	assert.Equal(t, 8, n)
	assert.EqualValues(t, 99, typ)
	assert.EqualValues(t, 99, seq)
	_, _, _, err = s.Load(make([]byte, 4))
	assert.ErrorIs(t, err, ring.ErrShortBuffer)
	st, err := ring.ReadTopicStats(seg)
	require.NoError(t, err)
	assert.EqualValues(t, 99, st.Subscriptions[0].Missed, "what Latest skipped is counted")
}

// TestTopicStart: FromLatest sees only what comes next, FromOldest the history the ring
// holds, FromSequence a given record (or the oldest held, reporting the difference).
func TestTopicStart(t *testing.T) {
	seg := newTopicSeg(t, ring.Overwrite, 8, 64)
	p := publisher(t, seg)
	for i := range 12 {
		require.NoError(t, p.TryWrite(0, u64(uint64(i))))
	}
	first := func(s *ring.Subscriber) uint64 {
		t.Helper()
		rec, err := s.TryNext()
		require.NoError(t, err)
		defer s.Release()
		return binary.LittleEndian.Uint64(rec.Data)
	}
	latest := subscribe(t, seg, ring.SubscribeOptions{Start: ring.FromLatest})
	_, err := latest.TryNext()
	assert.ErrorIs(t, err, ring.ErrEmpty)
	oldest := subscribe(t, seg, ring.SubscribeOptions{Start: ring.FromOldest})
	assert.EqualValues(t, 4, first(oldest))
	at := subscribe(t, seg, ring.SubscribeOptions{Start: ring.FromSequence(10)})
	assert.EqualValues(t, 10, first(at))
	gone := subscribe(t, seg, ring.SubscribeOptions{Start: ring.FromSequence(1)})
	_, err = gone.TryNext()
	var lag *ring.LagError
	require.ErrorAs(t, err, &lag)
	assert.EqualValues(t, 3, lag.Missed)
	assert.EqualValues(t, 4, first(gone))
	future := subscribe(t, seg, ring.SubscribeOptions{Start: ring.FromSequence(14)})
	require.NoError(t, p.TryWrite(0, u64(12)))
	require.NoError(t, p.TryWrite(0, u64(13)))
	_, err = future.TryNext()
	assert.ErrorIs(t, err, ring.ErrEmpty)
	require.NoError(t, p.TryWrite(0, u64(14)))
	assert.EqualValues(t, 14, first(future))
	assert.EqualValues(t, 12, first(latest))
}

// TestTopicDurable: a durable subscription resumes where it left off, delivers again only
// what was borrowed and not released, and has one live holder at a time.
func TestTopicDurable(t *testing.T) {
	seg := newTopicSeg(t, ring.Block, 16, 64)
	p := publisher(t, seg)
	opts := ring.SubscribeOptions{Name: "audit", Start: ring.FromOldest}
	s, err := ring.Subscribe(context.Background(), seg, opts)
	require.NoError(t, err)
	_, err = ring.Subscribe(context.Background(), seg, opts)
	assert.ErrorIs(t, err, ring.ErrBusy)
	for i := range 6 {
		require.NoError(t, p.TryWrite(0, u64(uint64(i))))
	}
	for want := range uint64(3) {
		rec, err := s.TryNext()
		require.NoError(t, err)
		assert.Equal(t, want, binary.LittleEndian.Uint64(rec.Data))
		s.Release()
	}
	_, err = s.TryNext() // record 3 borrowed, never released
	require.NoError(t, err)
	require.NoError(t, s.Close())
	// Detached durable subscriptions do not hold a Block publisher back.
	for i := 6; i < 19; i++ {
		require.NoError(t, p.TryWrite(0, u64(uint64(i))))
	}
	s, err = ring.Subscribe(context.Background(), seg, ring.SubscribeOptions{Name: "audit", Start: ring.FromLatest})
	require.NoError(t, err)
	defer s.Close()
	assert.Equal(t, "audit", s.Name())
	assert.EqualValues(t, 3, s.Position(), "resumes at the record it had borrowed; Start is ignored")
	for want := uint64(3); want < 19; want++ {
		rec, err := s.TryNext()
		require.NoError(t, err)
		assert.Equal(t, want, binary.LittleEndian.Uint64(rec.Data))
		s.Release()
	}
	st, err := ring.ReadTopicStats(seg)
	require.NoError(t, err)
	require.Len(t, st.Subscriptions, 1)
	assert.Equal(t, "audit", st.Subscriptions[0].Name)
	assert.True(t, st.Subscriptions[0].Durable)
	_, err = ring.Subscribe(context.Background(), seg, ring.SubscribeOptions{Name: string(make([]byte, 64))})
	assert.ErrorIs(t, err, shm.ErrInvalidName)
}

// TestTopicSubscriptionsFull: 64 subscriptions per topic; a closed anonymous one frees its
// entry.
func TestTopicSubscriptionsFull(t *testing.T) {
	seg := newTopicSeg(t, ring.Overwrite, 8, 64)
	var ss []*ring.Subscriber
	for range 64 {
		ss = append(ss, subscribe(t, seg, ring.SubscribeOptions{}))
	}
	_, err := ring.Subscribe(context.Background(), seg, ring.SubscribeOptions{})
	assert.ErrorIs(t, err, ring.ErrSubscriptionsFull)
	require.NoError(t, ss[10].Close())
	subscribe(t, seg, ring.SubscribeOptions{})
}

// TestTopicLockWaitsForHolder: a publisher holding the lock between Reserve and Commit
// makes another wait (TryReserve: ErrFull), and a subscriber joining waits for it too.
func TestTopicLockWaitsForHolder(t *testing.T) {
	seg := newTopicSeg(t, ring.Overwrite, 8, 64)
	p1, p2 := publisher(t, seg), publisher(t, seg)
	buf, err := p1.Reserve(context.Background(), 1, 8)
	require.NoError(t, err)
	copy(buf, u64(7))
	_, err = p2.TryReserve(2, 8)
	assert.ErrorIs(t, err, ring.ErrFull)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err = ring.Subscribe(ctx, seg, ring.SubscribeOptions{})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, p1.Commit())
	s := subscribe(t, seg, ring.SubscribeOptions{Start: ring.FromOldest})
	require.NoError(t, p2.Write(context.Background(), 2, u64(8)))
	rec, err := s.TryNext()
	require.NoError(t, err)
	assert.EqualValues(t, 1, rec.Type)
	rec, err = s.TryNext()
	require.NoError(t, err)
	assert.EqualValues(t, 2, rec.Type)
}

// TestTopicCloseWithReservation: closing a publisher that holds the lock releases it, and
// closing a subscriber blocked in Next wakes it.
func TestTopicCloseWithReservation(t *testing.T) {
	seg := newTopicSeg(t, ring.Block, 8, 64)
	p1, err := ring.NewPublisher(seg, ring.Options{})
	require.NoError(t, err)
	buf, err := p1.Reserve(context.Background(), 0, 8)
	require.NoError(t, err)
	require.NoError(t, p1.Close())
	assert.ErrorIs(t, p1.Commit(), ring.ErrClosed)
	_ = buf
	p2 := publisher(t, seg)
	require.NoError(t, p2.TryWrite(0, nil), "the closed publisher's lock was released")

	s, err := ring.Subscribe(context.Background(), seg, ring.SubscribeOptions{})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { _, err := s.Next(context.Background()); done <- err }()
	time.Sleep(10 * time.Millisecond)
	require.NoError(t, s.Close())
	select {
	case err := <-done:
		assert.ErrorIs(t, err, ring.ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("Next still blocked after Close")
	}
	require.NoError(t, s.Close())
}

// TestTopicOneWakeForAllSleepers: a Commit wakes every sleeping subscriber with one system
// call, and makes none when nobody sleeps.
func TestTopicOneWakeForAllSleepers(t *testing.T) {
	seg := newTopicSeg(t, ring.Overwrite, 64, 64)
	const subs = 4
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan uint64, subs)
	var ss []*ring.Subscriber
	for range subs {
		s := subscribe(t, seg, ring.SubscribeOptions{Wait: ring.Futex()})
		ss = append(ss, s)
		go func() {
			rec, err := s.Next(ctx)
			if err != nil {
				got <- ^uint64(0)
				return
			}
			got <- binary.LittleEndian.Uint64(rec.Data)
		}()
	}
	// Wait until all four are asleep in the kernel.
	require.Eventually(t, func() bool {
		st, err := ring.ReadStats(seg)
		return err == nil && st.Readers.FutexWaits >= subs
	}, 5*time.Second, time.Millisecond)
	p := publisher(t, seg)
	require.NoError(t, p.TryWrite(0, u64(42)))
	for range subs {
		select {
		case v := <-got:
			assert.EqualValues(t, 42, v)
		case <-ctx.Done():
			t.Fatal("a subscriber was not woken")
		}
	}
	st, err := ring.ReadStats(seg)
	require.NoError(t, err)
	assert.EqualValues(t, 1, st.Writers.FutexWakes, "one wake-up call for all sleepers")
	for _, s := range ss {
		s.Release()
	}
	for i := range 100 {
		require.NoError(t, p.TryWrite(0, u64(uint64(i))))
	}
	st, err = ring.ReadStats(seg)
	require.NoError(t, err)
	assert.EqualValues(t, 1, st.Writers.FutexWakes, "no system call while nobody sleeps")
	assert.Zero(t, st.Readers.LateWakes)
}

func TestTopicUnsubscribe(t *testing.T) {
	seg := newTopicSeg(t, ring.Block, 8, 64)
	s, err := ring.Subscribe(context.Background(), seg, ring.SubscribeOptions{Name: "gone"})
	require.NoError(t, err)
	assert.ErrorIs(t, ring.Unsubscribe(seg, "gone"), ring.ErrBusy, "held by a live subscriber")
	require.NoError(t, s.Close())
	assert.ErrorIs(t, ring.Unsubscribe(seg, "other"), ring.ErrNoSubscription)
	require.NoError(t, ring.Unsubscribe(seg, "gone"))
	assert.ErrorIs(t, ring.Unsubscribe(seg, "gone"), ring.ErrNoSubscription)
	st, err := ring.ReadTopicStats(seg)
	require.NoError(t, err)
	assert.Empty(t, st.Subscriptions)
	rs, err := ring.ReadStats(seg)
	require.NoError(t, err)
	assert.Zero(t, rs.ReadersOpen, "Unsubscribe leaves no endpoint behind")
}
