package ring

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// Counters are the statistics of one side of a ring, summed over its peers, live, dead and
// detached.
type Counters struct {
	Messages   uint64 `json:"messages"`    // written (writers) or read (readers)
	Bytes      uint64 `json:"bytes"`       // payload bytes
	Full       uint64 `json:"full"`        // times a writer found the ring full
	Empty      uint64 `json:"empty"`       // times a reader found the ring empty
	FutexWaits uint64 `json:"futex_waits"` // sleeps in the kernel
	FutexWakes uint64 `json:"futex_wakes"` // wake-up system calls made for the other side
	Drops      uint64 `json:"drops"`       // MPMC slots skipped for a writer that died
	LateWakes  uint64 `json:"late_wakes"`  // sleeps that timed out with the condition already true
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
}

// Stats is a snapshot of a ring's shared state, read without changing anything (it works on
// a segment from shm.Inspect). Values are loaded one at a time while the ring runs, so they
// are each exact but not mutually consistent.
type Stats struct {
	Kind          string   `json:"kind"`
	WritePos      uint64   `json:"write_pos"`
	ReadPos       uint64   `json:"read_pos"`
	Capacity      uint64   `json:"capacity"` // data region bytes (SPSC) or slots (MPMC)
	Used          uint64   `json:"used"`     // bytes (SPSC) or slots (MPMC) written and not yet released
	WriterState   string   `json:"writer_state"`
	ReadersAsleep int      `json:"readers_asleep"`
	WritersAsleep int      `json:"writers_asleep"`
	Writers       Counters `json:"writers"`
	Readers       Counters `json:"readers"`
}

// ReadStats reads the ring statistics of seg. It returns ErrCorrupt if the positions are
// impossible, with the snapshot filled as far as it could be.
func ReadStats(seg *shm.Segment) (Stats, error) {
	hdr := seg.Header()
	d := seg.Descriptor()
	st := Stats{Kind: d.Kind.String()}
	st.WritePos = atomic.LoadUint64(layout.Uint64(hdr, offWritePos))
	st.ReadPos = atomic.LoadUint64(layout.Uint64(hdr, offReadPos))
	st.Capacity = d.DataSize
	if d.Kind == shm.KindMPMC {
		st.Capacity = d.SlotCount
	}
	st.WriterState = map[uint32]string{writerNone: "none", writerAttached: "attached", writerClosed: "closed"}[atomic.LoadUint32(layout.Uint32(hdr, offWriterState))]
	if st.WriterState == "" {
		st.WriterState = "invalid"
	}
	if st.WriterState == "attached" && d.Kind == shm.KindSPSC {
		if held, err := seg.RoleHeld(shm.RoleWriter); err == nil && !held {
			st.WriterState = "dead"
		}
	}
	if st.WriterState == "attached" && d.Kind == shm.KindMPMC {
		if n, err := livePeers(seg, shm.RoleWriter); err == nil && n == 0 {
			st.WriterState = "dead" // writers attached once and none is alive now
		}
	}
	st.ReadersAsleep = event{waiters: layout.Uint64(hdr, offDataWaiters)}.sleepers()
	st.WritersAsleep = event{waiters: layout.Uint64(hdr, offSpaceWaiters)}.sleepers()

	st.Writers.addFrom(func(i int) uint64 { return atomic.LoadUint64(layout.Uint64(hdr, offRetiredWriter+8*i)) })
	st.Readers.addFrom(func(i int) uint64 { return atomic.LoadUint64(layout.Uint64(hdr, offRetiredReader+8*i)) })
	peers, err := seg.Peers()
	if err != nil {
		return st, err
	}
	for _, p := range peers {
		entry := hdr[layout.PeerOffset(p.Index)+layout.PeerUserOffset:]
		load := func(i int) uint64 { return atomic.LoadUint64(layout.Uint64(entry, pwCounters+8*i)) }
		switch p.Role {
		case shm.RoleWriter:
			st.Writers.addFrom(load)
		case shm.RoleReader:
			st.Readers.addFrom(load)
		}
	}
	used := st.WritePos - st.ReadPos
	if used > st.Capacity && d.Kind == shm.KindSPSC {
		return st, fmt.Errorf("%w: write position %d and read position %d are more than a ring apart", ErrCorrupt, st.WritePos, st.ReadPos)
	}
	st.Used = min(used, st.Capacity)
	return st, nil
}

// PeekedRecord is a record seen by Peek: a copy, never a view of shared memory.
type PeekedRecord struct {
	Position uint64 `json:"position"`
	Type     uint32 `json:"type"`
	Length   int    `json:"length"`
	Data     []byte `json:"data"` // at most the preview length asked for
}

// Peek copies up to n records, starting at the reader's released position (SPSC) or the
// next slot to be claimed for reading (MPMC; unpublished slots are passed over),
// with at most preview payload bytes each, without consuming anything or changing any byte
// (it works on a segment from shm.Inspect). Records the writer overwrites while Peek copies
// them may come out torn; Peek stops at the first header that does not make sense.
func Peek(seg *shm.Segment, n, preview int) ([]PeekedRecord, error) {
	d := seg.Descriptor()
	if d.Kind == shm.KindMPMC {
		return peekMPMC(seg, n, preview)
	}
	hdr, data := seg.Header(), seg.Data()
	size := uint64(len(data))
	wp := atomic.LoadUint64(layout.Uint64(hdr, offWritePos))
	pos := atomic.LoadUint64(layout.Uint64(hdr, offReadPos))
	if wp-pos > size {
		return nil, fmt.Errorf("%w: write position %d and read position %d are more than a ring apart", ErrCorrupt, wp, pos)
	}
	maxMsg := uint64(SPSCMaxMessage(size))
	var out []PeekedRecord
	for len(out) < n && pos != wp {
		idx := pos & (size - 1)
		length := binary.LittleEndian.Uint32(data[idx:])
		if length == padLength {
			if skip := size - idx; skip < wp-pos {
				pos += skip
				continue
			}
			return out, fmt.Errorf("%w: padding at position %d runs past the write position", ErrCorrupt, pos)
		}
		typ := binary.LittleEndian.Uint32(data[idx+4:])
		rec := align8(recordHeader + uint64(length))
		if uint64(length) > maxMsg || rec > size-idx || rec > wp-pos {
			return out, fmt.Errorf("%w: record of %d bytes at position %d does not fit", ErrCorrupt, length, pos)
		}
		k := min(int(length), preview)
		start := idx + recordHeader
		out = append(out, PeekedRecord{Position: pos, Type: typ, Length: int(length), Data: append([]byte(nil), data[start:start+uint64(k)]...)})
		pos += rec
	}
	return out, nil
}

func peekMPMC(seg *shm.Segment, n, preview int) ([]PeekedRecord, error) {
	d := seg.Descriptor()
	hdr, data := seg.Header(), seg.Data()
	slots, slotSize := d.SlotCount, uint64(d.SlotSize)
	wp := atomic.LoadUint64(layout.Uint64(hdr, offWritePos))
	pos := atomic.LoadUint64(layout.Uint64(hdr, offReadPos))
	if wp-pos > slots {
		return nil, fmt.Errorf("%w: write position %d and read position %d are more than a ring apart", ErrCorrupt, wp, pos)
	}
	var out []PeekedRecord
	for ; len(out) < n && pos != wp; pos++ {
		idx := pos & (slots - 1)
		slot := data[idx*slotSize : (idx+1)*slotSize]
		if atomic.LoadUint64(layout.Uint64(slot, 0)) != pos-idx+1 {
			continue // claimed by a writer, not yet published
		}
		length := binary.LittleEndian.Uint32(slot[8:])
		if length == skipLength {
			continue
		}
		if uint64(length) > slotSize-slotHeader {
			return out, fmt.Errorf("%w: slot at position %d says %d bytes", ErrCorrupt, pos, length)
		}
		k := min(int(length), preview)
		out = append(out, PeekedRecord{Position: pos, Type: binary.LittleEndian.Uint32(slot[12:]), Length: int(length),
			Data: append([]byte(nil), slot[slotHeader:slotHeader+k]...)})
	}
	return out, nil
}
