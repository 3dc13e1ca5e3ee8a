package envelope

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
)

// Version is the layout version this package writes.
const Version = 1

// HeaderSize is the fixed part of an envelope, before the strings.
const HeaderSize = 56

// maxTotal bounds an envelope so that every length fits an int on any platform and in a u32.
const maxTotal = 1 << 31

// Priority orders events: Critical before Normal before Low. The zero value is Critical, so
// an unset Header.Priority must be set explicitly; NewHeader sets Normal.
type Priority uint8

// The priorities, most urgent first.
const (
	Critical Priority = 0
	Normal   Priority = 1
	Low      Priority = 2
)

// Priorities is the number of priorities.
const Priorities = 3

// String is the priority's name in lower case.
func (p Priority) String() string {
	switch p {
	case Critical:
		return "critical"
	case Normal:
		return "normal"
	case Low:
		return "low"
	}
	return fmt.Sprintf("priority(%d)", uint8(p))
}

// KV is one metadata entry.
type KV struct {
	Key, Value string
}

// Header is everything an envelope carries but the payload, as Go values. The zero value is
// not a valid event (no ID); NewHeader fills ID, Time, Priority and Attempt.
type Header struct {
	ID          uuid.UUID
	Time        time.Time
	Type        string
	Source      string
	Correlation string
	Priority    Priority
	Attempt     uint32
	Meta        []KV
}

// NewHeader returns a header for a new event of typeName from source: a fresh UUIDv7, the
// current time, Normal priority, attempt 1. The error is the random source's (uuid.NewV7).
func NewHeader(typeName, source string) (Header, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return Header{}, fmt.Errorf("envelope: new id: %w", err)
	}
	return Header{ID: id, Time: time.Now(), Type: typeName, Source: source, Priority: Normal, Attempt: 1}, nil
}

// TypeID is the 32-bit id of a type name: FNV-1a. Rings carry it in their record type field
// so that a reader can skip types it does not want without parsing the envelope; equal ids
// say nothing for certain (compare View.Type).
func TypeID(name string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	return h
}

// payloadOffset is where the payload starts for these string and metadata lengths.
func payloadOffset(strs, meta int) int {
	return (HeaderSize + strs + meta + 7) &^ 7
}

// sizes checks h's lengths and returns the bytes of its strings and of its metadata.
func (h *Header) sizes() (strs, meta int, err error) {
	for _, s := range [...]string{h.Type, h.Source, h.Correlation} {
		if len(s) > math.MaxUint16 {
			return 0, 0, fmt.Errorf("%w: string of %d bytes", ErrTooLarge, len(s))
		}
		strs += len(s)
	}
	if len(h.Meta) > math.MaxUint16 {
		return 0, 0, fmt.Errorf("%w: %d metadata entries", ErrTooLarge, len(h.Meta))
	}
	for _, kv := range h.Meta {
		if len(kv.Key) > math.MaxUint16 || len(kv.Value) > math.MaxUint16 {
			return 0, 0, fmt.Errorf("%w: metadata %q of %d bytes", ErrTooLarge, kv.Key, len(kv.Value))
		}
		meta += 4 + len(kv.Key) + len(kv.Value)
	}
	if payloadOffset(strs, meta) > math.MaxUint16 {
		return 0, 0, fmt.Errorf("%w: header of %d bytes", ErrTooLarge, HeaderSize+strs+meta)
	}
	return strs, meta, nil
}

// Size is the length of h's envelope around a payload of payload bytes. ErrTooLarge when a
// field does not fit its length.
func (h *Header) Size(payload int) (int, error) {
	strs, meta, err := h.sizes()
	if err != nil {
		return 0, err
	}
	n := payloadOffset(strs, meta) + payload
	if payload < 0 || n >= maxTotal {
		return 0, fmt.Errorf("%w: payload of %d bytes", ErrTooLarge, payload)
	}
	return n, nil
}

// Put writes h into dst for a payload of payload bytes and returns the payload's slice of
// dst, to be filled by the caller. dst must hold Size(payload) bytes (ErrShort otherwise);
// ErrTooLarge as Size. Put writes every byte before the payload, padding included.
func (h *Header) Put(dst []byte, payload int) ([]byte, error) {
	strs, meta, err := h.sizes()
	if err != nil {
		return nil, err
	}
	off := payloadOffset(strs, meta)
	if payload < 0 || off+payload >= maxTotal {
		return nil, fmt.Errorf("%w: payload of %d bytes", ErrTooLarge, payload)
	}
	if len(dst) < off+payload {
		return nil, fmt.Errorf("%w: %d bytes for an envelope of %d", ErrShort, len(dst), off+payload)
	}
	le := binary.LittleEndian
	dst[0] = Version
	dst[1] = byte(h.Priority)
	le.PutUint16(dst[2:], uint16(off))
	le.PutUint32(dst[4:], h.Attempt)
	copy(dst[8:24], h.ID[:])
	le.PutUint64(dst[24:], uint64(h.Time.UnixNano()))
	le.PutUint32(dst[32:], TypeID(h.Type))
	le.PutUint16(dst[36:], uint16(len(h.Type)))
	le.PutUint16(dst[38:], uint16(len(h.Source)))
	le.PutUint16(dst[40:], uint16(len(h.Correlation)))
	le.PutUint16(dst[42:], uint16(len(h.Meta)))
	le.PutUint32(dst[44:], uint32(meta))
	le.PutUint32(dst[48:], uint32(payload))
	le.PutUint32(dst[52:], 0)
	p := HeaderSize
	p += copy(dst[p:], h.Type)
	p += copy(dst[p:], h.Source)
	p += copy(dst[p:], h.Correlation)
	for _, kv := range h.Meta {
		le.PutUint16(dst[p:], uint16(len(kv.Key)))
		le.PutUint16(dst[p+2:], uint16(len(kv.Value)))
		p += 4
		p += copy(dst[p:], kv.Key)
		p += copy(dst[p:], kv.Value)
	}
	clear(dst[p:off])
	return dst[off : off+payload], nil
}

// Append appends h's envelope with payload to dst and returns the extended slice: the
// copying form of Size and Put, for transports that build a message in memory.
func (h *Header) Append(dst, payload []byte) ([]byte, error) {
	n, err := h.Size(len(payload))
	if err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, make([]byte, n)...)
	p, err := h.Put(dst[start:], len(payload))
	if err != nil {
		return dst[:start], err
	}
	copy(p, payload)
	return dst, nil
}

// IDs makes event ids for one publisher: UUIDv7s, increasing in the order they are made,
// without an allocation per id. uuid.NewV7 allocates its 16 bytes on every call (its random
// source is an io.Reader); IDs calls it at most once per millisecond or per 4,096 ids and
// counts the ids in between up in the low bits of the random part. Ids from two IDs values
// differ in the 62 random bits uuid.NewV7 drew for each. Not safe for concurrent use; the
// zero value is ready.
type IDs struct {
	base uuid.UUID
	ms   int64
	n    uint16
}

// idsPerBase is how many ids IDs counts from one uuid.NewV7 before drawing again.
const idsPerBase = 4096

// New returns the next id for an event made at now. The error is the random source's.
func (g *IDs) New(now time.Time) (uuid.UUID, error) {
	ms := now.UnixMilli()
	if g.n == 0 || g.n >= idsPerBase || ms > g.ms {
		id, err := uuid.NewV7()
		if err != nil {
			return uuid.UUID{}, fmt.Errorf("envelope: new id: %w", err)
		}
		// Clear the low 12 bits that the count goes into, so that counting never carries
		// into the bits above (the base's own order among NewV7s is in its time and rand_a).
		id[14] &^= 0x0f
		id[15] = 0
		g.base, g.ms, g.n = id, ms, 0
	}
	id := g.base
	c := binary.BigEndian.Uint16(id[14:]) | g.n
	binary.BigEndian.PutUint16(id[14:], c)
	g.n++
	return id, nil
}

// SetAttempt rewrites the attempt number of the envelope at the start of b in place: the bus
// does so in a record it holds exclusively, before each delivery, so that the record, if
// its reader dies, is delivered again as the next attempt. ErrVersion or ErrMalformed when b
// does not start with a version-1 header.
func SetAttempt(b []byte, attempt uint32) error {
	if len(b) < HeaderSize {
		return fmt.Errorf("%w: %d bytes, the header alone is %d", ErrMalformed, len(b), HeaderSize)
	}
	if b[0] != Version {
		return fmt.Errorf("%w: version %d, this build reads %d", ErrVersion, b[0], Version)
	}
	binary.LittleEndian.PutUint32(b[4:], attempt)
	return nil
}
