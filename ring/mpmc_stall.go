package ring

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/shmq/shmq/internal/deathwatch"
	"github.com/shmq/shmq/internal/layout"
)

// A reader blocked behind a slot that a writer claimed and has not published waits for that
// writer, and if the writer died, for repair, which its wait runs only every
// livenessInterval: a dead claim stalled every reader for about that long. stallWatch ends
// the wait at the death: once the stall has outlasted a live writer's publish, the processes
// of the writers whose claims reach the slot are watched (internal/deathwatch: a pidfd in
// the netpoller, no thread, no timer), and a death wakes the reader, which repairs at once.
type stallWatch struct {
	waitStart time.Time // when the reader's current wait began (awaitData)
	pos       uint64    // the stalled position + 1; 0 when not stalled
	rounds    int       // rounds of the wait spent stalled at pos
	armed     bool      // the claimers of pos are watched (or cannot be)
	off       bool      // deaths cannot be watched here: the periodic repair does it all
	died      atomic.Bool
	watches   map[int]claimerWatch // by peer-table index; the reader's goroutine only
}

// claimerWatch is the death watch on the process of one peer entry.
type claimerWatch struct {
	pid    int
	cancel func()
	fired  *atomic.Bool
}

// stallRounds is how many rounds a spinning wait stays stalled before the claimers are
// watched: a live writer publishes within a few, and watching costs system calls. A
// sleeping wait watches at once: it is about to sleep for up to livenessInterval. So does
// an adaptive wait with less than stallSpinLeft of its spinning left.
const (
	stallRounds   = 256
	stallSpinLeft = 20 * time.Microsecond
)

// checkStall is the cheap part of a blocked reader's check (see waiter.await), run on
// every round of its wait: loads only, but for one watch per stall and a repair when a
// watched claimer died.
func (r *MPMCReader) checkStall() {
	st := &r.stall
	if st.off {
		return
	}
	pos := atomic.LoadUint64(r.readPos)
	wp := atomic.LoadUint64(r.writePos)
	if r.adopted != 0 || r.pending != 0 || wp == pos || wp-pos > r.slots ||
		atomic.LoadUint64(slotSeq(r.slot(pos))) != r.base(pos) {
		st.pos = 0 // not stalled behind a claimed slot
		return
	}
	if st.died.Swap(false) {
		st.pos = 0
		atRepairPoint(repairOnDeath)
		r.repair()
		return
	}
	if st.pos != pos+1 {
		st.pos, st.rounds, st.armed = pos+1, 0, false
		if w := r.wait.strategy; w.mode == modeAdaptive && time.Since(st.waitStart) > w.duration-stallSpinLeft {
			st.rounds = stallRounds // the wait sleeps from now on
		}
	}
	if st.armed {
		return
	}
	if m := r.wait.strategy.mode; (m == modeSpin || m == modeAdaptive) && st.rounds < stallRounds {
		st.rounds++
		return
	}
	st.armed = true
	if r.watchClaimers(pos) { // a claimer is dead already
		atRepairPoint(repairOnDeath)
		r.repair()
		return
	}
	atRepairPoint(repairStallWatched)
}

// watchClaimers makes sure that the death of every process with a writer claim at or
// before pos wakes this reader, and reports whether a claimer is dead already (or its
// process could not be told apart from a newer one).
func (r *MPMCReader) watchClaimers(pos uint64) (dead bool) {
	st := &r.stall
	owners := map[int]bool{}
	for i := 0; i < numCells; i++ {
		c := r.cellAt(i)
		o := atomic.LoadUint32(c.owner)
		if isFree(o) {
			continue
		}
		claim := atomic.LoadUint64(c.claim)
		if atomic.LoadUint32(c.role)&cellRoleMask != cellWriter || claim == 0 || int64(pos-(claim-1)) < 0 {
			continue
		}
		if idx := ownerIndex(o); o&cellOrphan == 0 && idx >= 0 && idx < layout.PeerCount {
			owners[idx] = true
		} else {
			dead = true
		}
	}
	for idx, w := range st.watches {
		if w.fired.Load() {
			w.cancel()
			delete(st.watches, idx)
		}
	}
	var need []int
	for idx := range owners {
		if _, ok := st.watches[idx]; !ok {
			need = append(need, idx)
		}
	}
	if len(need) == 0 {
		return dead
	}
	pids := func() map[int]int { // pid by index of the live entries
		peers, err := r.seg.Peers()
		if err != nil {
			return nil
		}
		m := map[int]int{}
		for _, p := range peers {
			if p.Alive {
				m[p.Index] = p.PID
			}
		}
		return m
	}
	before := pids()
	if st.watches == nil {
		st.watches = map[int]claimerWatch{}
	}
	ev := r.dataEvent()
	for _, idx := range need {
		pid, ok := before[idx]
		if !ok {
			dead = true
			continue
		}
		fired := new(atomic.Bool)
		cancel, err := deathwatch.Watch(pid, func() {
			fired.Store(true)
			st.died.Store(true)
			ev.wakeAll()
		})
		if errors.Is(err, deathwatch.ErrNotSupported) {
			st.off = true
			return dead
		}
		if err != nil {
			dead = true // no such process: it has exited
			continue
		}
		st.watches[idx] = claimerWatch{pid: pid, cancel: cancel, fired: fired}
	}
	// A pid names the process only while it runs: listed again after the watches began,
	// an entry still held by the same pid means its watch is on the right process.
	after := pids()
	for _, idx := range need {
		if w, ok := st.watches[idx]; ok && after[idx] != w.pid {
			w.cancel()
			delete(st.watches, idx)
			dead = true
		}
	}
	return dead
}

// stopStallWatch cancels the death watches (Close): a callback running now is waited for,
// as it touches the mapping.
func (r *MPMCReader) stopStallWatch() {
	for idx, w := range r.stall.watches {
		w.cancel()
		delete(r.stall.watches, idx)
	}
}
