package ring_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// Topics across processes: publishers and subscribers are children of the test binary
// (proctest), configured by a topicConfig in JSON. Messages carry their publisher's id in
// the top bits of the sequence number (mpmcSeq) and a checksum (fillMsg/checkMsg).

// topicChildTimeout bounds every child's waiting, so that a wedged child reports (or
// fails) rather than hangs; the parent's waits are bounded by the same.
const topicChildTimeout = 40 * time.Second

// topicConfig tells a topic child what to do; it travels as JSON in the first argument.
type topicConfig struct {
	Dir, Name string
	Wait      string // "" for the default (adaptive)

	// Publishers.
	PubID          uint64        // goes into the top bits of every sequence number
	Count          uint64        // messages to publish (counters From .. From+Count-1)
	From           uint64        // the first counter
	MinLen, MaxLen int           // message lengths
	Burst          int           // publish Burst messages, then sleep Pause (0: no pauses)
	Pause          time.Duration //
	HalfAt         uint64        // at this counter: reserve, write half, Point("half-written"), hang
	PauseAfter     uint64        // after this many: Point("paused"), then wait for AwaitSubs live subscriptions
	AwaitSubs      int           //
	Duration       time.Duration // topic-latest-pub: publish for at most this long
	Batch          int           // reserve up to Batch records at a time with ReserveBatch (type batchType)

	// Subscribers.
	Start     string        // "latest" (default) or "oldest"
	SubName   string        // durable subscription name
	Mode      string        // "read": Read (copy, validate); "next": Next, check in place, Validate, Release
	Sleep     time.Duration // per message, between Next and the check (a slow subscriber)
	Expect    uint64        // read until received + missed reaches it
	First     uint64        // the counter every publisher's first message must have (plus what was missed before it)
	KillIndex uint64        // next mode: with this message borrowed (0-based), send the report, then Point("borrowed")
	Stall     bool          // subscribe, Point("subscribed"), then read nothing
	Loads     int           // topic-loader: Load calls to make
}

func (c topicConfig) args() []string {
	b, _ := json.Marshal(c)
	return []string{string(b)}
}

// topicDefaults fills the fields whose zero value would mean something.
func topicDefaults(c topicConfig) topicConfig {
	c.HalfAt, c.KillIndex = math.MaxUint64, math.MaxUint64
	return c
}

func parseTopicConfig(c *proctest.Child) (topicConfig, ring.Wait, *shm.Segment, error) {
	var cfg topicConfig
	if err := json.Unmarshal([]byte(c.Args[0]), &cfg); err != nil {
		return cfg, ring.Wait{}, nil, err
	}
	var wait ring.Wait
	if cfg.Wait != "" {
		var err error
		if wait, err = ring.ParseWait(cfg.Wait); err != nil {
			return cfg, wait, nil, err
		}
	}
	seg, err := shm.Open(cfg.Name, shm.Options{Dir: cfg.Dir})
	return cfg, wait, seg, err
}

// topicPubReport is what a publisher child sends back.
type topicPubReport struct {
	Published    uint64
	FirstReserve time.Duration // how long the first Reserve took (taking the topic lock)
}

func runTopicPub(c *proctest.Child) error {
	cfg, wait, seg, err := parseTopicConfig(c)
	if err != nil {
		return err
	}
	p, err := ring.NewPublisher(seg, ring.Options{Wait: wait})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), topicChildTimeout)
	defer cancel()
	var rep topicPubReport
	if cfg.Batch > 0 {
		var recs [][]byte
		for i := uint64(0); i < cfg.Count; {
			n := cfg.From + i
			recs, err = p.ReserveBatch(ctx, batchType, msgLen(n, cfg.MinLen, cfg.MaxLen), int(min(uint64(cfg.Batch), cfg.Count-i)), recs[:0])
			if err != nil {
				return fmt.Errorf("reserve batch at %d: %w", n, err)
			}
			for _, buf := range recs {
				fillMsg(buf, mpmcSeq(cfg.PubID, cfg.From+i))
				i++
			}
			if err := p.Commit(); err != nil {
				return err
			}
			rep.Published += uint64(len(recs))
		}
		if err := c.Result(rep); err != nil {
			return err
		}
		return p.Close()
	}
	for i := uint64(0); i < cfg.Count; i++ {
		if cfg.PauseAfter != 0 && i == cfg.PauseAfter {
			c.Point("paused")
			if err := awaitLiveSubs(ctx, seg, cfg.AwaitSubs); err != nil {
				return err
			}
		}
		n := cfg.From + i
		seq := mpmcSeq(cfg.PubID, n)
		size := msgLen(n, cfg.MinLen, cfg.MaxLen)
		t0 := time.Now()
		buf, err := p.Reserve(ctx, uint32(seq), size)
		if err != nil {
			return fmt.Errorf("reserve %d: %w", n, err)
		}
		if i == 0 {
			rep.FirstReserve = time.Since(t0)
		}
		if n == cfg.HalfAt {
			// Die mid-record, holding the topic lock: half the message is written.
			full := make([]byte, size)
			fillMsg(full, seq)
			copy(buf, full[:size/2])
			c.Point("half-written")
			select {}
		}
		fillMsg(buf, seq)
		if err := p.Commit(); err != nil {
			return err
		}
		rep.Published++
		if cfg.Burst > 0 && (i+1)%uint64(cfg.Burst) == 0 {
			time.Sleep(cfg.Pause)
		}
	}
	if err := c.Result(rep); err != nil {
		return err
	}
	return p.Close()
}

// liveSubs counts the subscriptions held by a running process.
func liveSubs(seg *shm.Segment) (int, error) {
	st, err := ring.ReadTopicStats(seg)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range st.Subscriptions {
		if s.Held && s.Alive {
			n++
		}
	}
	return n, nil
}

func awaitLiveSubs(ctx context.Context, seg *shm.Segment, want int) error {
	for {
		n, err := liveSubs(seg)
		if err != nil || n >= want {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%d live subscriptions, waited for %d: %w", n, want, ctx.Err())
		}
		time.Sleep(time.Millisecond)
	}
}

// topicSubReport is what a subscriber child sends back.
type topicSubReport struct {
	Count    map[uint64]uint64 // per publisher: messages received intact
	First    map[uint64]uint64 // per publisher: the counter of the first one
	Last     map[uint64]uint64 // per publisher: the counter of the last one
	Received uint64
	Missed   uint64 // the sum of the LagError.Missed it saw
	Lags     int    // how many LagErrors
	Err      string // "" when it read until Expect
}

// runTopicSub subscribes and reads until received + missed reaches Expect, checking every
// message (checksum; per publisher, each counter is the one after the previous plus what a
// LagError said was missed in between).
func runTopicSub(c *proctest.Child) error {
	cfg, wait, seg, err := parseTopicConfig(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), topicChildTimeout)
	defer cancel()
	opts := ring.SubscribeOptions{Name: cfg.SubName, Wait: wait}
	if cfg.Start == "oldest" {
		opts.Start = ring.FromOldest
	}
	s, err := ring.Subscribe(ctx, seg, opts)
	if err != nil {
		return err
	}
	c.Point("subscribed")
	if cfg.Stall {
		select {}
	}
	rep := topicSubReport{Count: map[uint64]uint64{}, First: map[uint64]uint64{}, Last: map[uint64]uint64{}}
	next := map[uint64]uint64{}
	var pending uint64 // missed since the last message received
	accept := func(seq uint64) error {
		pub, n := seq>>40, seq&(1<<40-1)
		want, seen := next[pub]
		if !seen {
			want = cfg.First
			rep.First[pub] = n
		}
		if want += pending; n != want {
			return fmt.Errorf("publisher %d: message %d, expected %d (%d missed just before)", pub, n, want, pending)
		}
		pending = 0
		next[pub] = n + 1
		rep.Count[pub]++
		rep.Last[pub] = n
		rep.Received++
		return nil
	}
	lagged := func(err error) bool {
		var lag *ring.LagError
		if !errors.As(err, &lag) {
			return false
		}
		rep.Missed += lag.Missed
		pending += lag.Missed
		rep.Lags++
		return true
	}
	buf := make([]byte, 64<<10)
	fail := func(err error) error {
		rep.Err = err.Error()
		return c.Result(rep)
	}
	for rep.Received+rep.Missed < cfg.Expect {
		switch cfg.Mode {
		case "read":
			n, typ, err := s.Read(ctx, buf)
			if lagged(err) {
				continue
			}
			if err != nil {
				return fail(err)
			}
			seq, err := checkMsg(buf[:n], typ)
			if err == nil {
				err = accept(seq)
			}
			if err != nil {
				return fail(err)
			}
		case "next":
			rec, err := s.Next(ctx)
			if lagged(err) {
				continue
			}
			if err != nil {
				return fail(err)
			}
			if cfg.Sleep > 0 {
				time.Sleep(cfg.Sleep)
			}
			seq, cerr := checkMsg(rec.Data, rec.Type) // in place: may be torn until validated
			verr := s.Validate()
			if lagged(verr) {
				continue // overwritten while borrowed: missed, not received
			}
			if verr != nil {
				return fail(verr)
			}
			if cerr != nil {
				return fail(fmt.Errorf("validated record is torn: %w", cerr))
			}
			if err := accept(seq); err != nil {
				return fail(err)
			}
			if rep.Received-1 == cfg.KillIndex {
				if err := c.Result(rep); err != nil {
					return err
				}
				c.Point("borrowed")
			}
			s.Release()
		default:
			return fmt.Errorf("unknown mode %q", cfg.Mode)
		}
	}
	if rep.Received+rep.Missed != cfg.Expect {
		rep.Err = fmt.Sprintf("received %d + missed %d, expected %d in all", rep.Received, rep.Missed, cfg.Expect)
	}
	if err := c.Result(rep); err != nil {
		return err
	}
	return s.Close()
}

// fillLatest writes a 64-byte value every byte of which follows from seq.
func fillLatest(p []byte, seq uint64) {
	binary.LittleEndian.PutUint64(p, seq)
	h := seq * 0x9E3779B97F4A7C15
	for i := 8; i < len(p); i++ {
		p[i] = byte(h>>(8*(i%8))) + byte(i)
	}
}

// checkLatest reports whether p is the whole value fillLatest wrote for seq.
func checkLatest(p []byte, seq uint64) bool {
	if len(p) != 64 || binary.LittleEndian.Uint64(p) != seq {
		return false
	}
	h := seq * 0x9E3779B97F4A7C15
	for i := 8; i < len(p); i++ {
		if p[i] != byte(h>>(8*(i%8)))+byte(i) {
			return false
		}
	}
	return true
}

// runTopicLatestPub publishes 64-byte values at full speed, for Duration or Count values.
func runTopicLatestPub(c *proctest.Child) error {
	cfg, wait, seg, err := parseTopicConfig(c)
	if err != nil {
		return err
	}
	p, err := ring.NewPublisher(seg, ring.Options{Wait: wait})
	if err != nil {
		return err
	}
	ctx := context.Background()
	deadline := time.Now().Add(cfg.Duration)
	for seq := uint64(0); seq < cfg.Count; seq++ {
		if seq%1024 == 0 && time.Now().After(deadline) {
			break
		}
		buf, err := p.Reserve(ctx, uint32(seq), 64)
		if err != nil {
			return err
		}
		fillLatest(buf, seq)
		if err := p.Commit(); err != nil {
			return err
		}
	}
	return p.Close()
}

// topicLoadReport is what a loader child sends back.
type topicLoadReport struct {
	Loads     int    // successful Loads checked
	Torn      int    // values not as fillLatest wrote them for the sequence Load returned
	Backwards int    // sequence numbers lower than the one before
	Changes   int    // sequence numbers different from the one before
	FirstSeq  uint64 // the first and last sequence numbers seen
	LastSeq   uint64
	Err       string
}

// runTopicLoader makes Loads calls of Load, once the first value is there.
func runTopicLoader(c *proctest.Child) error {
	cfg, wait, seg, err := parseTopicConfig(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), topicChildTimeout)
	defer cancel()
	s, err := ring.Subscribe(ctx, seg, ring.SubscribeOptions{Wait: wait})
	if err != nil {
		return err
	}
	c.Point("subscribed")
	var rep topicLoadReport
	buf := make([]byte, 256)
	for rep.Loads < cfg.Loads {
		n, typ, seq, err := s.Load(buf)
		if errors.Is(err, ring.ErrEmpty) {
			if ctx.Err() != nil {
				rep.Err = "nothing published"
				break
			}
			continue
		}
		if err != nil {
			rep.Err = err.Error()
			break
		}
		if !checkLatest(buf[:n], seq) || typ != uint32(seq) {
			rep.Torn++
		}
		if rep.Loads == 0 {
			rep.FirstSeq = seq
		} else {
			if seq < rep.LastSeq {
				rep.Backwards++
			}
			if seq != rep.LastSeq {
				rep.Changes++
			}
		}
		rep.LastSeq = seq
		rep.Loads++
	}
	if err := c.Result(rep); err != nil {
		return err
	}
	return s.Close()
}

// Parent-side helpers.

// newTopic makes a topic of slots slots of slotSize bytes in a fresh directory.
func newTopic(t *testing.T, policy ring.Policy, slots uint64, slotSize uint32) (dir string, seg *shm.Segment) {
	t.Helper()
	dir = testDir(t)
	seg = newSegment(t, dir, "topic", ring.Spec{Kind: ring.Topic, Size: slots * uint64(slotSize), SlotSize: slotSize, Policy: policy})
	return dir, seg
}

// waitLiveSubs waits until n subscriptions are held by running processes.
func waitLiveSubs(t *testing.T, seg *shm.Segment, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), topicChildTimeout)
	defer cancel()
	require.NoError(t, awaitLiveSubs(ctx, seg, n))
}

func subReport(t *testing.T, p *proctest.Proc) topicSubReport {
	t.Helper()
	var rep topicSubReport
	require.NoError(t, p.Result(0, &rep, topicChildTimeout))
	require.NoError(t, p.Wait(topicChildTimeout))
	return rep
}

func pubReport(t *testing.T, p *proctest.Proc) topicPubReport {
	t.Helper()
	var rep topicPubReport
	require.NoError(t, p.Result(0, &rep, topicChildTimeout))
	require.NoError(t, p.Wait(topicChildTimeout))
	return rep
}

// TestTopicProcFanOut: one publisher process and eight subscriber processes under Block:
// each subscriber receives every message, in order, intact (checked in place, then
// validated), and nothing is missed.
func TestTopicProcFanOut(t *testing.T) {
	count := uint64(20_000)
	if testing.Short() {
		count = 3_000
	}
	const subs = 8
	dir, seg := newTopic(t, ring.Block, 256, 256)
	sub := topicDefaults(topicConfig{Dir: dir, Name: "topic", Mode: "next", Expect: count})
	var ss []*proctest.Proc
	for range subs {
		ss = append(ss, proctest.Start(t, "topic-sub", proctest.Options{Args: sub.args()}))
	}
	waitLiveSubs(t, seg, subs)
	pub := topicDefaults(topicConfig{Dir: dir, Name: "topic", PubID: 1, Count: count, MinLen: msgHeader, MaxLen: 240})
	p := proctest.Start(t, "topic-pub", proctest.Options{Args: pub.args()})
	assert.Equal(t, count, pubReport(t, p).Published)
	for i, s := range ss {
		rep := subReport(t, s)
		assert.Empty(t, rep.Err, "subscriber %d", i)
		assert.Equal(t, count, rep.Count[1], "subscriber %d: every message", i)
		assert.Equal(t, count, rep.Received, "subscriber %d: nothing else", i)
		assert.Zero(t, rep.First[1], "subscriber %d: from the first", i)
		assert.Zero(t, rep.Missed, "subscriber %d: nothing missed under Block", i)
	}
	st, err := ring.ReadTopicStats(seg)
	require.NoError(t, err)
	assert.Equal(t, count, st.Published)
}

// TestTopicProcPublishers: three publisher processes and four subscriber processes under
// Block: each subscriber gets every message of every publisher exactly once, in each
// publisher's order, intact. The third publisher reserves up to 7 records at a time
// (ReserveBatch), holding the topic lock for the batch.
func TestTopicProcPublishers(t *testing.T) {
	per := uint64(10_000)
	if testing.Short() {
		per = 2_000
	}
	const pubs, subs = 3, 4
	dir, seg := newTopic(t, ring.Block, 256, 256)
	sub := topicDefaults(topicConfig{Dir: dir, Name: "topic", Mode: "read", Expect: pubs * per})
	var ss []*proctest.Proc
	for range subs {
		ss = append(ss, proctest.Start(t, "topic-sub", proctest.Options{Args: sub.args()}))
	}
	waitLiveSubs(t, seg, subs) // every subscriber attached before anything is published
	var ps []*proctest.Proc
	for i := range pubs {
		cfg := topicDefaults(topicConfig{Dir: dir, Name: "topic", PubID: uint64(i + 1), Count: per, MinLen: msgHeader, MaxLen: 240})
		if i == 2 {
			cfg.Batch = 7
		}
		ps = append(ps, proctest.Start(t, "topic-pub", proctest.Options{Args: cfg.args()}))
	}
	for _, p := range ps {
		assert.Equal(t, per, pubReport(t, p).Published)
	}
	for i, s := range ss {
		rep := subReport(t, s)
		assert.Empty(t, rep.Err, "subscriber %d", i)
		assert.Zero(t, rep.Missed, "subscriber %d", i)
		assert.Equal(t, pubs*per, rep.Received, "subscriber %d", i)
		for id := uint64(1); id <= pubs; id++ {
			// With the counters checked consecutive from 0, the count says: each exactly once.
			assert.Equal(t, per, rep.Count[id], "subscriber %d, publisher %d", i, id)
			assert.Zero(t, rep.First[id], "subscriber %d, publisher %d", i, id)
			assert.Equal(t, per-1, rep.Last[id], "subscriber %d, publisher %d", i, id)
		}
	}
	st, err := ring.ReadTopicStats(seg)
	require.NoError(t, err)
	assert.Equal(t, pubs*per, st.Published)
}

// TestTopicProcOverwriteSlowSubscriber: under Overwrite a subscriber that sleeps on every
// message is lapped: what it received plus what its LagErrors said it missed is exactly what
// was published, each message it counts was validated after it was checked in place, and
// every counter it sees is the previous one plus the records reported missed in between.
// Two fast subscribers, with a modest publishing rate and a large ring, miss nothing.
func TestTopicProcOverwriteSlowSubscriber(t *testing.T) {
	count := uint64(20_000)
	if testing.Short() {
		count = 5_000
	}
	dir, seg := newTopic(t, ring.Overwrite, 1024, 128)
	fast := topicDefaults(topicConfig{Dir: dir, Name: "topic", Mode: "read", Expect: count})
	slow := topicDefaults(topicConfig{Dir: dir, Name: "topic", Mode: "next", Expect: count, Sleep: 200 * time.Microsecond})
	f1 := proctest.Start(t, "topic-sub", proctest.Options{Args: fast.args()})
	f2 := proctest.Start(t, "topic-sub", proctest.Options{Args: fast.args()})
	s := proctest.Start(t, "topic-sub", proctest.Options{Args: slow.args()})
	waitLiveSubs(t, seg, 3)
	// 64 messages every 2 ms at most (about 32 000 a second): the fast ones have 16 bursts
	// of slack in the ring; the slow one reads fewer than 5 000 a second.
	pub := topicDefaults(topicConfig{Dir: dir, Name: "topic", PubID: 1, Count: count, MinLen: msgHeader, MaxLen: 100,
		Burst: 64, Pause: 2 * time.Millisecond})
	p := proctest.Start(t, "topic-pub", proctest.Options{Args: pub.args()})
	assert.Equal(t, count, pubReport(t, p).Published)
	for i, f := range []*proctest.Proc{f1, f2} {
		rep := subReport(t, f)
		assert.Empty(t, rep.Err, "fast subscriber %d", i)
		assert.Zero(t, rep.Missed, "fast subscriber %d kept up", i)
		assert.Zero(t, rep.Lags, "fast subscriber %d kept up", i)
		assert.Equal(t, count, rep.Count[1], "fast subscriber %d", i)
	}
	rep := subReport(t, s)
	assert.Empty(t, rep.Err, "slow subscriber")
	assert.Equal(t, count, rep.Received+rep.Missed, "slow subscriber: received + missed = published")
	assert.Equal(t, rep.Received, rep.Count[1])
	assert.NotZero(t, rep.Missed, "the slow subscriber was lapped (else the test proves nothing)")
	assert.NotZero(t, rep.Received)
	t.Logf("slow subscriber: %d received, %d missed in %d lags", rep.Received, rep.Missed, rep.Lags)
}

// TestTopicProcLatestLoad: Load against a publisher process writing 64-byte values at full
// speed never returns a torn value, and the sequence numbers it returns never go backwards.
func TestTopicProcLatestLoad(t *testing.T) {
	loads := 1_000_000
	if testing.Short() {
		loads = 100_000
	}
	dir, seg := newTopic(t, ring.Latest, 64, 128)
	loader := proctest.Start(t, "topic-loader", proctest.Options{Args: topicDefaults(topicConfig{Dir: dir, Name: "topic", Loads: loads}).args()})
	loader.WaitPoint("subscribed", topicChildTimeout)
	pub := topicDefaults(topicConfig{Dir: dir, Name: "topic", Count: math.MaxUint64, Duration: topicChildTimeout})
	p := proctest.Start(t, "topic-latest-pub", proctest.Options{Args: pub.args()})
	var rep topicLoadReport
	require.NoError(t, loader.Result(0, &rep, topicChildTimeout))
	require.NoError(t, loader.Wait(topicChildTimeout))
	p.Kill()
	_ = p.Wait(topicChildTimeout)
	assert.Empty(t, rep.Err)
	assert.Equal(t, loads, rep.Loads)
	assert.Zero(t, rep.Torn, "torn values")
	assert.Zero(t, rep.Backwards, "sequence numbers going backwards")
	assert.NotZero(t, rep.Changes, "the publisher wrote while the loads ran (else the test proves nothing)")
	t.Logf("%d loads saw %d changes, sequences %d to %d", rep.Loads, rep.Changes, rep.FirstSeq, rep.LastSeq)
	st, err := ring.ReadTopicStats(seg)
	require.NoError(t, err)
	assert.Greater(t, st.Published, rep.LastSeq)
}

// TestTopicProcSubscriberKilledUnderBlock: a Block publisher (the test) waits for a
// subscriber process that reads nothing; SIGKILLed, it stops holding the publisher back
// within about the liveness interval, and the other subscriber process gets everything.
func TestTopicProcSubscriberKilledUnderBlock(t *testing.T) {
	const slots, count = 64, 300
	dir, seg := newTopic(t, ring.Block, slots, 64)
	victim := proctest.Start(t, "topic-sub", proctest.Options{Args: topicDefaults(topicConfig{Dir: dir, Name: "topic", Stall: true}).args()})
	other := proctest.Start(t, "topic-sub", proctest.Options{Args: topicDefaults(topicConfig{Dir: dir, Name: "topic", Mode: "read", Expect: count}).args()})
	waitLiveSubs(t, seg, 2)

	p, err := ring.NewPublisher(seg, ring.Options{})
	require.NoError(t, err)
	defer p.Close()
	buf := make([]byte, 40)
	for seq := uint64(0); seq < slots; seq++ {
		require.NoError(t, p.TryWrite(uint32(mpmcSeq(1, seq)), fillAndReturn(buf, mpmcSeq(1, seq))))
	}
	assert.ErrorIs(t, p.TryWrite(uint32(mpmcSeq(1, slots)), fillAndReturn(buf, mpmcSeq(1, slots))), ring.ErrFull)
	// The other subscriber reads all it can: it is the victim that holds the publisher back.
	require.Eventually(t, func() bool {
		st, err := ring.ReadTopicStats(seg)
		if err != nil {
			return false
		}
		for _, s := range st.Subscriptions {
			if s.PID == other.Pid() {
				return s.Position == slots
			}
		}
		return false
	}, topicChildTimeout, time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), topicChildTimeout)
	defer cancel()
	resumed := make(chan error, 1)
	go func() {
		resumed <- p.Write(ctx, uint32(mpmcSeq(1, slots)), fillAndReturn(make([]byte, 40), mpmcSeq(1, slots)))
	}()
	select {
	case err := <-resumed:
		t.Fatalf("Write returned %v while a live subscriber held the ring full", err)
	case <-time.After(300 * time.Millisecond):
	}
	victim.Kill()
	killed := time.Now()
	select {
	case err := <-resumed:
		require.NoError(t, err)
	case <-time.After(3 * time.Second):
		t.Fatal("the publisher did not resume within 3 s of the subscriber's death")
	}
	took := time.Since(killed)
	t.Logf("the publisher resumed %v after the kill", took)
	_ = victim.Wait(topicChildTimeout)
	require.True(t, victim.Killed())

	for seq := uint64(slots + 1); seq < count; seq++ {
		require.NoError(t, p.Write(ctx, uint32(mpmcSeq(1, seq)), fillAndReturn(buf, mpmcSeq(1, seq))))
	}
	rep := subReport(t, other)
	assert.Empty(t, rep.Err)
	assert.EqualValues(t, count, rep.Count[1], "the other subscriber got everything")
	assert.Zero(t, rep.First[1])
	assert.Zero(t, rep.Missed)
	st, err := ring.ReadTopicStats(seg)
	require.NoError(t, err)
	assert.Empty(t, st.Subscriptions, "the dead subscriber's entry was freed; the other closed")
}

// TestTopicProcPublisherKilledHoldingLock: a publisher process SIGKILLed with a record half
// written, holding the topic lock: the subscriber processes get every committed message and
// nothing of the half record, they do not wedge, and a second publisher process takes the
// lock over and its messages arrive.
func TestTopicProcPublisherKilledHoldingLock(t *testing.T) {
	const committed, second = 1000, 500
	dir, seg := newTopic(t, ring.Block, 64, 128)
	sub := topicDefaults(topicConfig{Dir: dir, Name: "topic", Mode: "read", Expect: committed + second})
	s1 := proctest.Start(t, "topic-sub", proctest.Options{Args: sub.args()})
	s2 := proctest.Start(t, "topic-sub", proctest.Options{Args: sub.args()})
	waitLiveSubs(t, seg, 2)

	cfg := topicDefaults(topicConfig{Dir: dir, Name: "topic", PubID: 1, Count: 2 * committed, MinLen: msgHeader, MaxLen: 100})
	cfg.HalfAt = committed
	p1 := proctest.Start(t, "topic-pub", proctest.Options{Args: cfg.args(), KillAt: "half-written"})
	_ = p1.Wait(topicChildTimeout)
	require.True(t, p1.Killed())
	st, err := ring.ReadTopicStats(seg)
	require.NoError(t, err)
	assert.EqualValues(t, committed, st.Published)
	assert.Equal(t, p1.Pid(), st.LockHolderPID, "it died holding the topic lock")
	// The subscribers are not wedged: they read everything committed.
	require.Eventually(t, func() bool {
		st, err := ring.ReadTopicStats(seg)
		if err != nil {
			return false
		}
		n := 0
		for _, s := range st.Subscriptions {
			if s.Position == committed {
				n++
			}
		}
		return n == 2
	}, topicChildTimeout, time.Millisecond)

	cfg = topicDefaults(topicConfig{Dir: dir, Name: "topic", PubID: 2, Count: second, MinLen: msgHeader, MaxLen: 100})
	p2 := proctest.Start(t, "topic-pub", proctest.Options{Args: cfg.args()})
	rep := pubReport(t, p2)
	assert.EqualValues(t, second, rep.Published)
	assert.Less(t, rep.FirstReserve, time.Second, "the dead holder's lock is taken over within about the liveness interval")
	t.Logf("the second publisher took the lock in %v", rep.FirstReserve)
	for i, s := range []*proctest.Proc{s1, s2} {
		rep := subReport(t, s)
		assert.Empty(t, rep.Err, "subscriber %d", i)
		assert.EqualValues(t, committed, rep.Count[1], "subscriber %d: the dead publisher's committed messages, nothing more", i)
		assert.EqualValues(t, committed-1, rep.Last[1], "subscriber %d", i)
		assert.EqualValues(t, second, rep.Count[2], "subscriber %d: the second publisher's", i)
		assert.Zero(t, rep.Missed, "subscriber %d", i)
	}
	st, err = ring.ReadTopicStats(seg)
	require.NoError(t, err)
	assert.EqualValues(t, committed+second, st.Published)
	assert.Zero(t, st.LockHolderPID)
}

// TestTopicProcLateJoiner: a subscriber process joining with FromOldest after K < slots
// messages were published gets exactly those, then what comes next.
func TestTopicProcLateJoiner(t *testing.T) {
	const slots, history, count = 64, 40, 300
	dir, seg := newTopic(t, ring.Block, slots, 128)
	cfg := topicDefaults(topicConfig{Dir: dir, Name: "topic", PubID: 1, Count: count, MinLen: msgHeader, MaxLen: 100,
		PauseAfter: history, AwaitSubs: 1})
	p := proctest.Start(t, "topic-pub", proctest.Options{Args: cfg.args()})
	p.WaitPoint("paused", topicChildTimeout)
	st, err := ring.ReadTopicStats(seg)
	require.NoError(t, err)
	require.EqualValues(t, history, st.Published)
	require.Empty(t, st.Subscriptions)

	joiner := proctest.Start(t, "topic-sub", proctest.Options{Args: topicDefaults(topicConfig{Dir: dir, Name: "topic",
		Start: "oldest", Mode: "read", Expect: count}).args()})
	assert.EqualValues(t, count, pubReport(t, p).Published)
	rep := subReport(t, joiner)
	assert.Empty(t, rep.Err)
	assert.Zero(t, rep.First[1], "the history from its first message")
	assert.EqualValues(t, count, rep.Count[1], "the history, then everything after it")
	assert.EqualValues(t, count-1, rep.Last[1])
	assert.Zero(t, rep.Missed)
}

// TestTopicProcDurableResubscribe: a durable subscriber process reads and releases one
// message at a time and is SIGKILLed with one borrowed; a new process subscribing with the
// same name continues.
//
// "kept": the ring holds everything published before the resubscribe, so nothing is
// overwritten while the name has no live holder: across both, no message is lost, and the
// one borrowed and not released is the only duplicate.
//
// "overwritten": a dead durable subscriber stops holding a Block publisher back, so the
// publisher (blocked on it when it died) goes on and overwrites what it had not read; the
// resumed subscriber's LagError says exactly how many, and it continues with the oldest held.
func TestTopicProcDurableResubscribe(t *testing.T) {
	const slots, killIndex, phase2 = 64, 150, 200
	for _, tc := range []struct {
		name   string
		phase1 uint64
	}{{"kept", 200}, {"overwritten", 300}} {
		t.Run(tc.name, func(t *testing.T) { testDurableResubscribe(t, slots, killIndex, tc.phase1, phase2) })
	}
}

func testDurableResubscribe(t *testing.T, slots, killIndex, phase1, phase2 uint64) {
	// After the first subscriber died, the publisher can publish up to killIndex+slots-1
	// without overwriting the message it had borrowed; past that, the oldest are lost.
	lost := uint64(0)
	if phase1 > killIndex+slots {
		lost = phase1 - slots - killIndex
	}
	dir, seg := newTopic(t, ring.Block, slots, 128)
	sub := topicDefaults(topicConfig{Dir: dir, Name: "topic", SubName: "d", Start: "oldest", Mode: "next", Expect: phase1 + phase2})
	sub.KillIndex = killIndex
	s1 := proctest.Start(t, "topic-sub", proctest.Options{Args: sub.args(), KillAt: "borrowed"})
	waitLiveSubs(t, seg, 1)
	pub := topicDefaults(topicConfig{Dir: dir, Name: "topic", PubID: 1, Count: phase1, MinLen: msgHeader, MaxLen: 100})
	p1 := proctest.Start(t, "topic-pub", proctest.Options{Args: pub.args()})
	var first topicSubReport
	require.NoError(t, s1.Result(0, &first, topicChildTimeout))
	_ = s1.Wait(topicChildTimeout)
	require.True(t, s1.Killed())
	assert.EqualValues(t, phase1, pubReport(t, p1).Published, "the dead subscriber does not hold the publisher back")
	require.Empty(t, first.Err)
	require.EqualValues(t, 0, first.First[1])
	require.EqualValues(t, killIndex+1, first.Count[1], "the first subscriber got 0..%d", killIndex)
	require.EqualValues(t, killIndex, first.Last[1])

	st, err := ring.ReadTopicStats(seg)
	require.NoError(t, err)
	require.Len(t, st.Subscriptions, 1)
	assert.Equal(t, "d", st.Subscriptions[0].Name)
	assert.True(t, st.Subscriptions[0].Durable)
	assert.False(t, st.Subscriptions[0].Alive)
	assert.EqualValues(t, killIndex, st.Subscriptions[0].Position, "everything before the borrowed message released")

	sub2 := topicDefaults(topicConfig{Dir: dir, Name: "topic", SubName: "d", Start: "latest", Mode: "next",
		Expect: phase1 + phase2 - killIndex, First: killIndex})
	s2 := proctest.Start(t, "topic-sub", proctest.Options{Args: sub2.args()})
	waitLiveSubs(t, seg, 1)
	pub = topicDefaults(topicConfig{Dir: dir, Name: "topic", PubID: 1, From: phase1, Count: phase2, MinLen: msgHeader, MaxLen: 100})
	assert.EqualValues(t, phase2, pubReport(t, proctest.Start(t, "topic-pub", proctest.Options{Args: pub.args()})).Published)
	second := subReport(t, s2)
	assert.Empty(t, second.Err)
	assert.Equal(t, lost, second.Missed, "exactly the messages overwritten while the name had no live holder")
	assert.EqualValues(t, killIndex+lost, second.First[1], "resumes at the borrowed message (or the oldest held); Start is ignored")
	assert.EqualValues(t, phase1+phase2-1, second.Last[1])
	if lost == 0 {
		// Both ran consecutive counters: together they cover 0..phase1+phase2-1.
		dups := first.Last[1] + 1 - second.First[1]
		assert.EqualValues(t, 1, dups, "the one message borrowed and not released is delivered again")
		assert.EqualValues(t, phase1+phase2+dups, first.Count[1]+second.Count[1])
	} else {
		assert.EqualValues(t, phase1+phase2-killIndex-lost, second.Count[1])
	}
}
