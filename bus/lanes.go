package bus

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/futex"
	"github.com/shmq/shmq/ring"
)

// lanes reads one reader per priority lane, by weight: while every lane has events, a run
// of w0+w1+w2 takes w0 from Critical, w1 from Normal and w2 from Low; a lane with nothing
// waiting gives its turn away. Critical is looked at first on every take, so a critical
// event overtakes the normal ones queued with it, and no lane can starve another: a lane
// with events and credit left is served before credits are renewed. A lanes value is for
// one goroutine, except wake, which any goroutine may call.
type lanes struct {
	rs      [envelope.Priorities]ring.Reader
	weights [envelope.Priorities]int
	credit  [envelope.Priorities]int
	stop    uint32 // futex word in this process's memory: wake adds 1 and wakes it
	spin    time.Duration
	lastMnt time.Time

	words [envelope.Priorities + 1]*uint32
	vals  [envelope.Priorities + 1]uint32
}

func newLanes(rs [envelope.Priorities]ring.Reader, weights [envelope.Priorities]int) *lanes {
	l := &lanes{rs: rs, weights: weights, credit: weights, spin: 20 * time.Microsecond}
	return l
}

// errIdle is next's signal that no lane had an event.
var errIdle = errors.New("idle")

// next borrows the next record by weight: the lane it came from, or errIdle. A lane whose
// reader reports the end of its stream or dead writers counts as empty (queues outlive
// their publishers). A *ring.LagError is returned with its lane.
func (l *lanes) next() (ring.Record, int, error) {
	for round := 0; round < 2; round++ {
		for p := range l.rs {
			if l.credit[p] == 0 {
				continue
			}
			rec, err := l.rs[p].TryNext()
			if err == nil {
				l.credit[p]--
				return rec, p, nil
			}
			if isEmpty(err) {
				continue
			}
			return rec, p, err
		}
		l.credit = l.weights // every lane with credit was empty, or all spent: renew
	}
	return ring.Record{}, -1, errIdle
}

func isEmpty(err error) bool {
	return errors.Is(err, ring.ErrEmpty) || errors.Is(err, ring.ErrEndOfStream) || errors.Is(err, ring.ErrPeerDead)
}

// wait sleeps until a lane may have an event, wake is called, or timeout passes. It spins
// for a short while first (an event that follows soon costs no system call), then sleeps
// on every lane's futex word and the stop word at once (futex_waitv).
// stop is the stop word's value loaded (stopValue) before the caller last looked whether to
// stop.
func (l *lanes) wait(stop uint32, timeout time.Duration) {
	if l.spin > 0 {
		deadline := time.Now().Add(l.spin)
		for time.Now().Before(deadline) {
			for _, r := range l.rs {
				if r.Ready() {
					return
				}
			}
			if atomic.LoadUint32(&l.stop) != stop {
				return
			}
		}
	}
	n := 0
	armed := 0
	defer func() {
		for _, r := range l.rs[:armed] {
			r.Disarm()
		}
	}()
	for _, r := range l.rs {
		w, ok, err := r.Arm()
		armed++
		if err != nil || !ok {
			return // ready (or broken: the next take reports it)
		}
		l.words[n], l.vals[n] = w.Word, w.Value
		n++
	}
	l.words[n], l.vals[n] = &l.stop, stop
	n++
	if _, err := futex.WaitV(l.words[:n], l.vals[:n], timeout); errors.Is(err, futex.ErrNotSupported) {
		time.Sleep(time.Millisecond)
	}
}

// pause sleeps d, or until wake is called (stop as for wait), whether or not a lane has
// an event.
func (l *lanes) pause(stop uint32, d time.Duration) {
	_ = futex.Wait(&l.stop, stop, d)
}

// wake makes a wait return (and every later one until the caller waits with a new stop
// value). Safe from any goroutine.
func (l *lanes) wake() {
	atomic.AddUint32(&l.stop, 1)
	_, _ = futex.Wake(&l.stop, 1<<30)
}

// stopValue loads the stop word, for wait.
func (l *lanes) stopValue() uint32 { return atomic.LoadUint32(&l.stop) }

// maintain runs each reader's Maintain about every 100 ms while idle: an MPMC reader then
// takes over a record that a dead worker held, to deliver it again.
func (l *lanes) maintain() {
	if now := time.Now(); now.Sub(l.lastMnt) >= 100*time.Millisecond {
		l.lastMnt = now
		for _, r := range l.rs {
			_ = r.Maintain()
		}
	}
}

func (l *lanes) close() {
	for _, r := range l.rs {
		if r != nil {
			r.Close()
		}
	}
}
