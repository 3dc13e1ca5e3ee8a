package envelope

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// View is a parsed envelope: the fixed fields copied out of the bytes, the variable ones as
// slices of them (see the package Caveats). The zero View is empty; Parse makes valid ones.
type View struct {
	// Priority, Attempt, ID, TypeID and Time are copies, fixed when Parse returned.
	Priority Priority
	Attempt  uint32
	ID       uuid.UUID
	TypeID   uint32
	Time     int64 // Unix nanoseconds

	typ, source, correlation []byte
	meta                     []byte // the metadata entries, checked by Parse
	metaCount                int
	payload                  []byte
}

// Parse reads the envelope at the start of b. Every length is read once and checked against
// b before any slice is made: ErrVersion for a version other than 1, ErrMalformed for a
// length, offset, priority or flag that does not fit. Bytes after the payload are ignored.
func Parse(b []byte) (View, error) {
	if len(b) < HeaderSize {
		return View{}, fmt.Errorf("%w: %d bytes, the header alone is %d", ErrMalformed, len(b), HeaderSize)
	}
	le := binary.LittleEndian
	if b[0] != Version {
		return View{}, fmt.Errorf("%w: version %d, this build reads %d", ErrVersion, b[0], Version)
	}
	v := View{Priority: Priority(b[1]), Attempt: le.Uint32(b[4:]), TypeID: le.Uint32(b[32:]), Time: int64(le.Uint64(b[24:]))}
	copy(v.ID[:], b[8:24])
	off := int(le.Uint16(b[2:]))
	nType, nSource, nCorr := int(le.Uint16(b[36:])), int(le.Uint16(b[38:])), int(le.Uint16(b[40:]))
	v.metaCount = int(le.Uint16(b[42:]))
	nMeta := int(le.Uint32(b[44:]))
	nPayload := int(le.Uint32(b[48:]))
	flags := le.Uint32(b[52:])
	switch {
	case v.Priority >= Priorities:
		return View{}, fmt.Errorf("%w: priority %d", ErrMalformed, b[1])
	case flags != 0:
		return View{}, fmt.Errorf("%w: flags %#x", ErrMalformed, flags)
	case nMeta >= maxTotal || nPayload >= maxTotal:
		return View{}, fmt.Errorf("%w: metadata of %d or payload of %d bytes", ErrMalformed, nMeta, nPayload)
	case off != payloadOffset(nType+nSource+nCorr, nMeta):
		return View{}, fmt.Errorf("%w: payload offset %d for %d bytes of header", ErrMalformed, off, HeaderSize+nType+nSource+nCorr+nMeta)
	case off+nPayload > len(b):
		return View{}, fmt.Errorf("%w: envelope of %d bytes in %d", ErrMalformed, off+nPayload, len(b))
	}
	p := HeaderSize
	v.typ, p = b[p:p+nType], p+nType
	v.source, p = b[p:p+nSource], p+nSource
	v.correlation, p = b[p:p+nCorr], p+nCorr
	v.meta = b[p : p+nMeta]
	v.payload = b[off : off+nPayload]
	if err := checkMeta(v.meta, v.metaCount); err != nil {
		return View{}, err
	}
	return v, nil
}

// checkMeta checks that meta is exactly count entries.
func checkMeta(meta []byte, count int) error {
	for i := 0; i < count; i++ {
		if len(meta) < 4 {
			return fmt.Errorf("%w: metadata entry %d of %d cut short", ErrMalformed, i, count)
		}
		n := 4 + int(binary.LittleEndian.Uint16(meta)) + int(binary.LittleEndian.Uint16(meta[2:]))
		if n > len(meta) {
			return fmt.Errorf("%w: metadata entry %d of %d bytes, %d left", ErrMalformed, i, n, len(meta))
		}
		meta = meta[n:]
	}
	if len(meta) != 0 {
		return fmt.Errorf("%w: %d bytes after %d metadata entries", ErrMalformed, len(meta), count)
	}
	return nil
}

// Type is the event's type name.
func (v *View) Type() []byte { return v.typ }

// Source is the name of the module that published the event.
func (v *View) Source() []byte { return v.source }

// Correlation is the correlation id, empty when there is none.
func (v *View) Correlation() []byte { return v.correlation }

// Payload is the codec-encoded event.
func (v *View) Payload() []byte { return v.payload }

// Timestamp is Time as a time.Time.
func (v *View) Timestamp() time.Time { return time.Unix(0, v.Time) }

// IsType reports whether the event's type name is name, without allocating.
func (v *View) IsType(name string) bool {
	return v.TypeID == TypeID(name) && string(v.typ) == name
}

// MetaLen is the number of metadata entries.
func (v *View) MetaLen() int { return v.metaCount }

// EachMeta calls fn with each metadata entry in order until fn returns false. The slices
// point into the envelope.
func (v *View) EachMeta(fn func(key, value []byte) bool) {
	m := v.meta
	for i := 0; i < v.metaCount && len(m) >= 4; i++ {
		kl, vl := int(binary.LittleEndian.Uint16(m)), int(binary.LittleEndian.Uint16(m[2:]))
		if 4+kl+vl > len(m) { // Parse checked the lengths, but a scribbling peer may have changed them since
			return
		}
		if !fn(m[4:4+kl], m[4+kl:4+kl+vl]) {
			return
		}
		m = m[4+kl+vl:]
	}
}

// Meta is the value of the first metadata entry whose key is key.
func (v *View) Meta(key string) (value []byte, ok bool) {
	v.EachMeta(func(k, val []byte) bool {
		if string(k) == key {
			value, ok = val, true
			return false
		}
		return true
	})
	return value, ok
}

// Header copies the view's fields into a Header that outlives the record.
func (v *View) Header() Header {
	h := Header{
		ID: v.ID, Time: time.Unix(0, v.Time), Type: string(v.typ), Source: string(v.source),
		Correlation: string(v.correlation), Priority: v.Priority, Attempt: v.Attempt,
	}
	if v.metaCount > 0 {
		h.Meta = make([]KV, 0, v.metaCount)
		v.EachMeta(func(k, val []byte) bool {
			h.Meta = append(h.Meta, KV{Key: string(k), Value: string(val)})
			return true
		})
	}
	return h
}
