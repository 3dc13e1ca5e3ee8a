package ring

import (
	"sync/atomic"

	"github.com/shmq/shmq/internal/layout"
)

// The stream word (offStream) says whether the ring's stream is open: epoch<<2 | state.
// Every writer that attaches bumps the epoch and opens the stream; the writer that closes
// when no other live writer is attached ends it. Bumping the epoch on every attach is what
// makes the end safe against a writer attaching meanwhile: the closer ends the stream with a
// CAS from the word it loaded before it looked for live writers, so an attach in between
// (which counted itself first, then bumped) makes the CAS fail and the closer look again.
const (
	streamNone  = 0 // no writer has attached yet
	streamOpen  = 1 // a writer attached; if every writer that did is dead, its process died
	streamEnded = 2 // the last writer closed: end of stream until a writer attaches again
)

func streamState(w uint64) uint64 { return w & 3 }

// openStream starts a new stream (or joins the open one): called by a writer once it is
// counted in its peer words.
func (e *endpoint) openStream() {
	e.opened = true
	p := e.u64(offStream)
	for {
		w := atomic.LoadUint64(p)
		if atomic.CompareAndSwapUint64(p, w, (w>>2+1)<<2|streamOpen) {
			return
		}
	}
}

// endStream ends the stream if no other live writer is attached: this writer counted
// (self, before it uncounts itself) or not. It wakes the readers so they see the end.
func (e *endpoint) endStream(self bool) {
	p := e.u64(offStream)
	for {
		w := atomic.LoadUint64(p)
		if streamState(w) != streamOpen {
			return
		}
		if others, err := e.otherLiveWriters(self); err != nil || others {
			return
		}
		if atomic.CompareAndSwapUint64(p, w, w&^3|streamEnded) {
			e.dataEvent().wakeAll()
			return
		}
	}
}

// streamEnded reports whether the stream has ended (the last writer closed).
func (e *endpoint) streamEnded() bool {
	return streamState(atomic.LoadUint64(e.u64(offStream))) == streamEnded
}

// sideCounts lists the peer table (slow path only) and hands fn, for every attached entry,
// whether its process is alive, the word that counts its endpoints of side s, and its peer
// words.
func (e *endpoint) sideCounts(s side, fn func(alive bool, index int, count *uint32, words []byte)) error {
	peers, err := e.seg.Peers()
	if err != nil {
		return err
	}
	for _, p := range peers {
		words, err := e.seg.PeerWords(p.Index)
		if err != nil {
			return err
		}
		fn(p.Alive, p.Index, layout.Uint32(words, s.countWord()), words)
	}
	return nil
}

// sidePeers reports whether a live process has an endpoint of side s attached, and whether
// a dead one had (its process died without closing it). A live process with a writer
// closing counts as live on the writers' side: between that Close uncounting itself and
// ending the stream, the stream is open with no writer counted, which is no death.
func (e *endpoint) sidePeers(s side) (live, dead bool, err error) {
	err = e.sideCounts(s, func(alive bool, _ int, count *uint32, words []byte) {
		if atomic.LoadUint32(count) != 0 {
			live, dead = live || alive, dead || !alive
		}
		if s == writerSide && alive && atomic.LoadUint32(layout.Uint32(words, pwClosing)) != 0 {
			live = true
		}
	})
	return live, dead, err
}

// otherLiveWriters reports whether a live writer other than this endpoint is attached: a
// live process counts writers (beyond this one, if self: its own count less one).
func (e *endpoint) otherLiveWriters(self bool) (others bool, err error) {
	err = e.sideCounts(writerSide, func(alive bool, index int, count *uint32, _ []byte) {
		n := atomic.LoadUint32(count)
		if self && index == e.loc.peer.Index() {
			n-- // this writer
		}
		others = others || alive && n > 0
	})
	return others, err
}

// forgetDeadPeers clears the count of this endpoint's side in the peer words of processes
// that died with endpoints of that side attached: an endpoint that attaches takes over from
// them, so ErrPeerDead speaks of deaths since the last attach, not of any death ever. Their
// counters stay (statistics); their claim cells are the repairers' business.
func (e *endpoint) forgetDeadPeers() {
	_ = e.sideCounts(e.side, func(alive bool, _ int, count *uint32, _ []byte) {
		if n := atomic.LoadUint32(count); !alive && n != 0 {
			atomic.CompareAndSwapUint32(count, n, 0)
		}
	})
}

// otherSideDead reports ErrPeerDead's condition for the side this endpoint waits on: no
// live process has an endpoint of that side attached, and one that had died. It must hold
// on two checks in a row (the second recheckInterval after the first: a waiter repeats a
// check that found the side dead that soon). The moment in which the last writers close at
// once, uncounted and not yet ending the stream, is covered by their closing marks
// (pwClosing, see sidePeers); the second check covers a process of an older build.
func (e *endpoint) otherSideDead() (bool, error) {
	other := readerSide
	if e.side == readerSide {
		other = writerSide
	}
	live, dead, err := e.sidePeers(other)
	if err != nil {
		return false, err
	}
	now := !live && dead
	was := e.suspect
	e.suspect = now
	return now && was, nil
}
