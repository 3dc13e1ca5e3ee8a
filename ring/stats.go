package ring

import (
	"fmt"
	"math/bits"
	"sync/atomic"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// Counters are the statistics of one side of a ring, summed over its processes, live, dead
// and detached.
type Counters struct {
	Messages   uint64 `json:"messages"`    // written (writers) or read (readers)
	Bytes      uint64 `json:"bytes"`       // payload bytes
	Full       uint64 `json:"full"`        // times a writer found the ring full
	Empty      uint64 `json:"empty"`       // times a reader found the ring empty
	FutexWaits uint64 `json:"futex_waits"` // sleeps in the kernel
	FutexWakes uint64 `json:"futex_wakes"` // wake-up system calls made for the other side
	Drops      uint64 `json:"drops"`       // MPMC slots skipped for a writer that died or aborted
	LateWakes  uint64 `json:"late_wakes"`  // sleeps that timed out with the condition already true
	Rejected   uint64 `json:"rejected"`    // records readers rejected (Reject, ErrRejected)
}

func (c *Counters) addFrom(words func(i int) uint64) {
	c.Messages += words(ctrMessages)
	c.Bytes += words(ctrBytes)
	c.Full += words(ctrFull)
	c.Empty += words(ctrEmpty)
	c.FutexWaits += words(ctrFutexWaits)
	c.FutexWakes += words(ctrFutexWakes)
	c.Drops += words(ctrDrops)
	c.LateWakes += words(ctrLateWakes)
	c.Rejected += words(ctrRejected)
}

// Stats is a snapshot of a ring's shared state, read without changing anything (it works on
// a segment from shm.Inspect). Values are loaded one at a time while the ring runs, so they
// are each exact but not mutually consistent.
type Stats struct {
	Kind          string   `json:"kind"`
	WritePos      uint64   `json:"write_pos"`
	ReadPos       uint64   `json:"read_pos"`
	Capacity      uint64   `json:"capacity"`            // data region bytes (SPSC) or slots (MPMC, topic)
	SlotSize      uint64   `json:"slot_size,omitempty"` // MPMC or topic slot bytes
	RolesHeld     []string `json:"roles_held"`          // SPSC: exclusive roles held by live endpoints, "writer", "reader"
	Used          uint64   `json:"used"`                // bytes (SPSC) or slots (MPMC) written and not yet released
	WriterState   string   `json:"writer_state"`
	WritersOpen   int      `json:"writers_open"`   // writer endpoints held by live processes
	ReadersOpen   int      `json:"readers_open"`   // reader endpoints held by live processes
	ReadersAsleep int      `json:"readers_asleep"` // live processes with a reader asleep
	WritersAsleep int      `json:"writers_asleep"` // live processes with a writer asleep
	// DeadSleepers counts waiting marks left by processes that died asleep, not yet cleared
	// by a live peer: until one is, writers (or readers) pay a wake-up system call per
	// commit (release) for a sleeper that is gone. Never counted as asleep.
	DeadSleepers int      `json:"dead_sleepers"`
	Writers      Counters `json:"writers"`
	Readers      Counters `json:"readers"`
}

// Writer states in Stats.WriterState.
const (
	WriterNone     = "none"     // no writer has attached yet
	WriterAttached = "attached" // a live writer is attached: the stream is open
	WriterDead     = "dead"     // the stream is open, and every writer that attached died
	WriterEnded    = "ended"    // the last writer closed: end of stream
)

// view is a read-only look at a ring segment for ReadStats and Peek.
type view struct {
	geo  geometry
	hdr  []byte
	data []byte
}

// newView also checks the file's size: a view of a truncated segment is an error wrapping
// shm.ErrTruncated, whether or not the part it reads is gone.
func newView(seg *shm.Segment) (view, error) {
	if err := seg.Intact(); isTruncated(err) {
		return view{}, err
	}
	d := seg.Descriptor()
	geo, err := parseGeometry(d)
	if err != nil {
		return view{}, err
	}
	return view{geo: geo, hdr: seg.Header()[d.KindHeaderOffset : d.KindHeaderOffset+d.KindHeaderSize], data: seg.Data()}, nil
}

func (v view) load(off int) uint64 { return atomic.LoadUint64(layout.Uint64(v.hdr, off)) }

// ReadStats reads the ring statistics of seg. It returns ErrKind or ErrVersion for a segment
// that is not a ring this code reads, and ErrCorrupt if the positions are impossible, with
// the snapshot filled as far as it could be.
func ReadStats(seg *shm.Segment) (_ Stats, err error) {
	defer viewFaults(seg, &err)()
	v, err := newView(seg)
	if err != nil {
		return Stats{}, err
	}
	st := Stats{Kind: v.geo.kind.String()}
	st.WritePos = v.load(offWritePos)
	st.ReadPos = v.load(offReadPos)
	st.Capacity = v.geo.size
	st.RolesHeld = []string{}
	if v.geo.kind == MPMC || v.geo.kind == Topic {
		st.Capacity, st.SlotSize = v.geo.slots, v.geo.slotSize
	} else {
		for _, role := range []shm.Role{roleSPSCWriter, roleSPSCReader} {
			held, err := seg.RoleHeld(role)
			if err != nil {
				return st, err
			}
			if held {
				st.RolesHeld = append(st.RolesHeld, map[shm.Role]string{roleSPSCWriter: "writer", roleSPSCReader: "reader"}[role])
			}
		}
	}
	// The waiter masks have one bit per peer entry; a bit whose entry is not held by a
	// running process is a dead sleeper's, counted apart below.
	dataWaiters, spaceWaiters := v.load(offDataWaiters), v.load(offSpaceWaiter)
	st.Writers.addFrom(func(i int) uint64 { return v.load(offRetiredW + 8*i) })
	st.Readers.addFrom(func(i int) uint64 { return v.load(offRetiredR + 8*i) })
	peers, err := seg.Peers()
	if err != nil {
		return st, err
	}
	deadWriters := false
	var live uint64 // mask of the entries held by running processes
	for _, p := range peers {
		if p.Alive && p.Index < 64 {
			live |= 1 << p.Index
		}
		words, err := seg.PeerWords(p.Index)
		if err != nil {
			return st, err
		}
		w := int(atomic.LoadUint32(layout.Uint32(words, pwWriters)))
		r := int(atomic.LoadUint32(layout.Uint32(words, pwReaders)))
		if p.Alive {
			st.WritersOpen += w
			st.ReadersOpen += r
		} else if w > 0 {
			deadWriters = true
		}
		st.Writers.addFrom(func(i int) uint64 { return atomic.LoadUint64(layout.Uint64(words, pwWriterCtrs+8*i)) })
		st.Readers.addFrom(func(i int) uint64 { return atomic.LoadUint64(layout.Uint64(words, pwReaderCtrs+8*i)) })
	}
	st.ReadersAsleep = bits.OnesCount64(dataWaiters & live)
	st.WritersAsleep = bits.OnesCount64(spaceWaiters & live)
	st.DeadSleepers = bits.OnesCount64(dataWaiters&^live) + bits.OnesCount64(spaceWaiters&^live)
	if v.geo.kind == Topic {
		// A topic has no stream and no shared read position: ReadTopicStats has each
		// subscription's.
		st.WriterState = WriterNone
		if st.WritersOpen > 0 {
			st.WriterState = WriterAttached
		}
		return st, nil
	}
	switch streamState(v.load(offStream)) {
	case streamNone:
		st.WriterState = WriterNone
	case streamEnded:
		st.WriterState = WriterEnded
	default:
		st.WriterState = WriterAttached
		if st.WritersOpen == 0 && deadWriters {
			st.WriterState = WriterDead
		}
	}
	used := st.WritePos - st.ReadPos
	if used > st.Capacity {
		return st, fmt.Errorf("%w: write position %d and read position %d are more than a ring apart", ErrCorrupt, st.WritePos, st.ReadPos)
	}
	st.Used = used
	return st, nil
}

// PeerEndpoints reports how many writer and reader endpoints the process of peer entry i
// has attached to the ring of seg (as its peer words say: a dead process's last counts).
func PeerEndpoints(seg *shm.Segment, i int) (writers, readers int, err error) {
	defer viewFaults(seg, &err)()
	if err := seg.Intact(); isTruncated(err) {
		return 0, 0, err
	}
	words, err := seg.PeerWords(i)
	if err != nil {
		return 0, 0, err
	}
	return int(atomic.LoadUint32(layout.Uint32(words, pwWriters))), int(atomic.LoadUint32(layout.Uint32(words, pwReaders))), nil
}

// PeekedRecord is a record seen by Peek: a copy, never a view of shared memory.
type PeekedRecord struct {
	Position uint64 `json:"position"`
	Type     uint32 `json:"type"`
	Length   int    `json:"length"`
	Data     []byte `json:"data"` // at most the preview length asked for
	// Next is the position of the record after it (SPSC: a byte position; MPMC and
	// topics: Position+1), where PeekFrom goes on.
	Next uint64 `json:"-"`
}

// Peek copies up to n records, starting at the reader's released position (SPSC) or the
// next slot to be claimed for reading (MPMC; unpublished slots and skips are passed over),
// with at most preview payload bytes each, without consuming anything or changing any byte
// (it works on a segment from shm.Inspect). Records the writer overwrites while Peek copies
// them may come out torn; Peek stops at the first header that does not make sense
// (ErrCorrupt), with the records before it.
func Peek(seg *shm.Segment, n, preview int) (_ []PeekedRecord, err error) {
	recs, _, err := peek(seg, 0, false, n, preview)
	return recs, err
}

// PeekFrom is Peek for following a ring as it runs (shmctl tail): it copies up to n
// records from position from, which is a PeekedRecord.Next that an earlier Peek or PeekFrom
// returned or a ReadPos or WritePos of ReadStats. If the readers have moved past from, it
// starts at their position instead, and skipped says by how much (bytes for SPSC, slots for
// MPMC): what they consumed before PeekFrom could see it. On an MPMC ring it stops at the
// first slot a writer has claimed and not yet published, so that a later call sees it once
// it is. ErrCorrupt for a from past the write position or not on a record of an SPSC ring;
// ErrKind for a topic (PeekTopic follows topics by sequence); otherwise as Peek.
func PeekFrom(seg *shm.Segment, from uint64, n, preview int) (_ []PeekedRecord, skipped uint64, err error) {
	return peek(seg, from, true, n, preview)
}

func peek(seg *shm.Segment, from uint64, follow bool, n, preview int) (_ []PeekedRecord, skipped uint64, err error) {
	defer viewFaults(seg, &err)()
	v, err := newView(seg)
	if err != nil {
		return nil, 0, err
	}
	if follow && v.geo.kind == Topic {
		return nil, 0, fmt.Errorf("%w: segment %s is a topic: PeekTopic follows it", ErrKind, seg.Name())
	}
	preview = max(preview, 0)
	// The read position first: the write position loaded after it is never behind it.
	pos := v.load(offReadPos)
	wp := v.load(offWritePos)
	if follow && from > pos {
		if from > wp {
			return nil, 0, fmt.Errorf("%w: position %d is past the write position %d", ErrCorrupt, from, wp)
		}
		pos = from
	} else if follow {
		skipped = pos - from
	}
	var out []PeekedRecord
	if v.geo.kind == MPMC {
		if wp-pos > v.geo.slots {
			return nil, skipped, fmt.Errorf("%w: write position %d and read position %d are more than a ring apart", ErrCorrupt, wp, pos)
		}
		m := mpmcSlots{mem: v.data, slots: v.geo.slots, slotSize: v.geo.slotSize}
		for ; len(out) < n && pos != wp; pos++ {
			slot := m.slot(pos)
			if atomic.LoadUint64(slotSeq(slot)) != m.base(pos)+1 {
				if follow {
					break // claimed by a writer, not yet published: look again later
				}
				continue
			}
			rec, err := parseSlot(slot, pos)
			if err != nil {
				return out, skipped, err
			}
			if rec.skip {
				continue
			}
			k := min(int(rec.n), preview)
			out = append(out, PeekedRecord{Position: pos, Type: rec.typ, Length: int(rec.n), Next: pos + 1,
				Data: append([]byte(nil), slot[slotHeader:slotHeader+k]...)})
		}
		return out, skipped, nil
	}
	for len(out) < n {
		rec, ok, err := parseSPSC(v.data, pos, wp)
		if err != nil || !ok {
			return out, skipped, err
		}
		k := uint64(min(int(rec.n), preview))
		out = append(out, PeekedRecord{Position: rec.pos, Type: rec.typ, Length: int(rec.n), Next: rec.next,
			Data: append([]byte(nil), v.data[rec.start:rec.start+k]...)})
		pos = rec.next
	}
	return out, skipped, nil
}
