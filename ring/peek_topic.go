package ring

import (
	"fmt"
	"sync/atomic"

	"github.com/shmq/shmq/internal/fence"
	"github.com/shmq/shmq/shm"
)

// PeekTopic copies up to n records of the topic segment seg, from sequence from (or the
// oldest record the ring still holds, if that is later) up to the published count, with at
// most preview payload bytes each, without subscribing or changing any byte (it works on a
// segment from shm.Inspect). Each copy is validated as a subscriber validates a record read
// in place: after copying, the slot's sequence word must still say the same record, so a
// record a publisher overwrites while PeekTopic copies it is passed over, never returned
// torn. ErrKind for a segment that is not a topic; ErrCorrupt, with the records before it,
// for a published slot whose sequence word or header no publisher writes.
func PeekTopic(seg *shm.Segment, from uint64, n, preview int) (_ []PeekedRecord, err error) {
	defer viewFaults(seg, &err)()
	v, err := newView(seg)
	if err != nil {
		return nil, err
	}
	if v.geo.kind != Topic {
		return nil, fmt.Errorf("%w: segment %s is %v, not a topic", ErrKind, seg.Name(), v.geo.kind)
	}
	m := mpmcSlots{mem: v.data, slots: v.geo.slots, slotSize: v.geo.slotSize}
	preview = max(preview, 0)
	var out []PeekedRecord
	tail := v.load(offWritePos)
	for pos := max(from, tail-min(tail, m.slots)); len(out) < n && pos < tail; pos++ {
		slot := m.slot(pos)
		mark := atomic.LoadUint64(slotSeq(slot))
		switch {
		case mark > topicMark(pos):
			continue // overwritten by a later lap since tail was loaded
		case mark < topicMark(pos):
			return out, fmt.Errorf("%w: topic record %d is published but its slot says %d", ErrCorrupt, pos, mark)
		}
		rec, perr := parseSlot(slot, pos)
		var data []byte
		if perr == nil && !rec.skip {
			data = append([]byte(nil), slot[slotHeader:slotHeader+min(int(rec.n), preview)]...)
		}
		fence.LoadLoad() // the copy comes before the check
		if atomic.LoadUint64(slotSeq(slot)) != mark {
			continue // a publisher began overwriting it: the header or the copy may be torn
		}
		if perr != nil {
			return out, perr
		}
		if rec.skip {
			return out, fmt.Errorf("%w: topic record %d is marked as a skip", ErrCorrupt, pos)
		}
		out = append(out, PeekedRecord{Position: pos, Type: rec.typ, Length: int(rec.n), Next: pos + 1, Data: data})
	}
	return out, nil
}
