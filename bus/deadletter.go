package bus

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/shmq/shmq/dlq"
	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// The dead-letter queue of a bus NAME is the segment NAME.dlq of package dlq (its format's
// home). An entry is an event that failed every attempt of a Reliable subscription:
//
//	Origin    the queue lane it came from, NAME.q.SUB.critical|normal|low
//	Type      its ring record type (envelope.TypeID of its type name)
//	Attempts  how many times it was tried (0: a record that was not a valid envelope)
//	Err       the last attempt's error
//	Data      the envelope, its attempt field set back to 1
//
// so that a replay, by ReplayDeadLetters or by any dlq replay to the entry's Origin (`shmctl
// dlq NAME.dlq replay`), puts it back in the queue of the subscription that failed it, to
// be tried again from the first attempt.

// openDeadLetters opens (creating if need be) the bus's dead-letter queue.
func openDeadLetters(bus string, cfg Config, opts shm.Options) (*dlq.Queue, error) {
	q, _, err := dlq.OpenOrCreate(dlqName(bus), dlqConfig(cfg), opts)
	if err != nil {
		return nil, fmt.Errorf("bus dead-letter queue: %w", err)
	}
	return q, nil
}

func dlqConfig(cfg Config) dlq.Config {
	return dlq.Config{Capacity: int(cfg.DeadLetterLimit), MaxEntry: cfg.MaxEvent + dlq.MaxOriginLen + dlq.MaxErrorLen}
}

// deadLetter puts the event rec, taken from lane p, into the dead-letter queue with its
// last error and attempt count. While the queue is full it keeps the event (this worker
// waits, counting bus_dead_letter_errors_total) and tries again every Retry.Cap (at least
// 10 ms), as after any other error of the dead-letter queue: it returns
// false if the subscription closed meanwhile (the event stays in its queue).
func (s *Subscription) deadLetter(rec ring.Record, p int, cause error, attempts uint32) bool {
	data := append([]byte(nil), rec.Data...) // rare: the copy is the entry's
	if attempts > 0 {
		_ = envelope.SetAttempt(data, 1)
	}
	e := dlq.Entry{Origin: queueName(s.b.name, s.name, envelope.Priority(p)), Type: rec.Type, Attempts: attempts, Data: data}
	if cause != nil {
		e.Err = cause.Error()
	}
	for {
		err := s.b.dlq.Put(e)
		if err == nil {
			s.count(&s.stats.deadLettered, s.m.deadLettered, 1)
			return true
		}
		// Full, or worse (closed under us, truncated): keep the event rather than lose it.
		s.count(&s.stats.dlqErrors, s.m.dlqErrors, 1)
		if !s.sleep(max(s.retry.Cap, 10*time.Millisecond)) {
			return false
		}
	}
}

// countDeadLetters is the number of events in the dead-letter queue of the bus name, and
// its capacity.
func countDeadLetters(name string, opts shm.Options) (n, capacity int, err error) {
	q, err := dlq.Inspect(dlqName(name), opts)
	if err != nil {
		return 0, 0, err
	}
	defer q.Close()
	n, err = q.Len()
	return n, q.Cap(), err
}

// DeadLetter is an entry of a bus's dead-letter queue.
type DeadLetter struct {
	dlq.Entry
	// Subscription is the Reliable subscription that failed the event, and Priority the
	// lane it came from (from Entry.Origin; empty and 0 for an origin of another bus).
	Subscription string
	Priority     envelope.Priority
}

// parseOrigin splits a queue lane's name, NAME.q.SUB.LANE, for the bus name.
func parseOrigin(bus, origin string) (sub string, p envelope.Priority, ok bool) {
	rest, found := strings.CutPrefix(origin, bus+".q.")
	if !found {
		return "", 0, false
	}
	dot := strings.LastIndexByte(rest, '.')
	if dot < 0 || !validSubName(rest[:dot]) {
		return "", 0, false
	}
	for p := range envelope.Priorities {
		if rest[dot+1:] == envelope.Priority(p).String() {
			return rest[:dot], envelope.Priority(p), true
		}
	}
	return "", 0, false
}

// DeadLetters lists the dead-letter queue of the bus name in opts.Dir, oldest first,
// without consuming anything (dlq.Queue.List on a read-only mapping). Errors: those of
// dlq.Inspect and List (the entries before a corrupt one are returned with its error).
func DeadLetters(name string, opts shm.Options) ([]DeadLetter, error) {
	q, err := dlq.Inspect(dlqName(name), opts)
	if err != nil {
		return nil, err
	}
	defer q.Close()
	entries, err := q.List()
	out := make([]DeadLetter, 0, len(entries))
	for _, e := range entries {
		d := DeadLetter{Entry: e}
		d.Subscription, d.Priority, _ = parseOrigin(name, e.Origin)
		out = append(out, d)
	}
	return out, err
}

// ReplayOptions say how ReplayDeadLetters puts the events back.
type ReplayOptions struct {
	// Republish publishes each event to the whole bus again (Bus.PublishEnvelope: every
	// subscription that wants it, best-effort ones included) instead of putting it back in
	// the queue of the subscription that failed it. Only Bus.ReplayDeadLetters can.
	Republish bool
	// Wait bounds the wait for room in a full queue lane, per event (0: until ctx ends).
	Wait time.Duration
}

// ReplayDeadLetters takes the entries in the dead-letter queue of the bus name when it
// starts, oldest first, and puts each back in the queue of the Reliable subscription that
// failed it (the lane it came from), to be tried again from attempt 1; an entry is removed
// once its event is queued. It counts the event in the queue's bytes (Config.QueueBytes
// is not applied: the bytes were queued once already), and waits for room in a full lane
// up to o.Wait and ctx. It stops at the first entry it cannot put back, which stays in the
// queue (oldest): ErrSubscriberUnavailable when its subscription no longer exists,
// ErrConfig for an entry of another bus or for o.Republish (which needs a Bus),
// context.DeadlineExceeded after o.Wait, ctx's error. It returns how many it put back. It
// needs no open Bus (shmctl uses it), and is safe to run in several processes at once
// (each entry goes to one of them).
func ReplayDeadLetters(ctx context.Context, name string, opts shm.Options, o ReplayOptions) (int, error) {
	if o.Republish {
		return 0, fmt.Errorf("%w: ReplayOptions.Republish needs Bus.ReplayDeadLetters", ErrConfig)
	}
	q, err := dlq.Open(dlqName(name), opts)
	if err != nil {
		return 0, err
	}
	defer q.Close()
	r := &requeuer{bus: name, opts: opts, wait: o.Wait, queues: map[string]*pubQueue{}}
	defer r.close()
	return q.Replay(ctx, func(e dlq.Entry) error { return r.put(ctx, e) })
}

// ReplayDeadLetters replays b's dead-letter queue: as the package's ReplayDeadLetters, or
// with o.Republish through PublishEnvelope (where a full queue of another subscription
// stops the replay with ErrQueueFull, the entry staying: the event may then have reached
// some subscriptions twice). Errors also ErrShuttingDown.
func (b *Bus) ReplayDeadLetters(ctx context.Context, o ReplayOptions) (int, error) {
	if b.closing.Load() {
		return 0, ErrShuttingDown
	}
	if !o.Republish {
		return ReplayDeadLetters(ctx, b.name, b.opts, o)
	}
	return b.dlq.Replay(ctx, func(e dlq.Entry) error {
		ctx := ctx
		if o.Wait > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, o.Wait)
			defer cancel()
		}
		_, err := b.PublishEnvelope(ctx, e.Data)
		return err
	})
}

// requeuer writes dead letters back to their subscriptions' queues.
type requeuer struct {
	bus    string
	opts   shm.Options
	wait   time.Duration
	reg    []subEntry
	queues map[string]*pubQueue // by origin
}

func (r *requeuer) put(ctx context.Context, e dlq.Entry) error {
	sub, p, ok := parseOrigin(r.bus, e.Origin)
	if !ok {
		return fmt.Errorf("%w: dead letter %d comes from %q, not a queue of bus %s", ErrConfig, e.Seq, e.Origin, r.bus)
	}
	q, ok := r.queues[e.Origin]
	if !ok {
		// Only to a registered subscription: a queue segment alone may be left over.
		if err := r.registered(sub); err != nil {
			return fmt.Errorf("dead letter %d: %w", e.Seq, err)
		}
		var err error
		if q, err = openPubQueue(r.bus, sub, r.opts, p); err != nil {
			return fmt.Errorf("dead letter %d: %w", e.Seq, err)
		}
		r.queues[e.Origin] = q
	}
	if r.wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.wait)
		defer cancel()
	}
	if err := q.ws[p].Write(ctx, e.Type, e.Data); err != nil {
		return fmt.Errorf("dead letter %d to %s: %w", e.Seq, e.Origin, err)
	}
	q.qm.bytes.Add(int64(len(e.Data)))
	return nil
}

func (r *requeuer) registered(sub string) error {
	if r.reg == nil {
		var err error
		if r.reg, err = readEntries(r.bus, r.opts); err != nil {
			return err
		}
	}
	for _, e := range r.reg {
		if e.name == sub {
			return nil
		}
	}
	return fmt.Errorf("%w: subscription %q is not registered on bus %s", ErrSubscriberUnavailable, sub, r.bus)
}

func (r *requeuer) close() {
	for _, q := range r.queues {
		q.close()
	}
}

// openPubQueue opens lane p of the existing queue of sub, with a writer, and the
// subscription's metrics set.
func openPubQueue(bus, sub string, opts shm.Options, p envelope.Priority) (*pubQueue, error) {
	q := &pubQueue{entry: subEntry{name: sub}}
	seg, err := shm.Open(queueName(bus, sub, p), opts)
	if err != nil {
		return nil, err
	}
	q.segs[p] = seg
	if q.ws[p], err = ring.NewMPMCWriter(seg, ring.Options{}); err != nil {
		q.close()
		return nil, err
	}
	if q.qm, err = openSubMetrics(bus, sub, opts); err != nil {
		q.close()
		return nil, err
	}
	return q, nil
}
