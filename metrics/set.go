package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// ReadyWait is how long Open, OpenOrCreate and Inspect wait for a set whose creator is
// still writing its schema (microseconds, normally) before they give up with ErrNotReady.
// They stop waiting at once if the creator is dead. WaitOpen waits as long as its context.
const ReadyWait = 2 * time.Second

// Set is a named set of series in a shared-memory segment: counters, gauges and histograms
// that any number of processes record into at once, and that any process (shmctl
// included) can read.
//
// Create, Open, OpenOrCreate and WaitOpen return a writable set, holding one of the
// segment's peer entries until Close; Inspect returns a read-only one that holds nothing
// and changes nothing. A Set's methods are safe for concurrent use by multiple goroutines.
type Set struct {
	seg    *shm.Segment
	schema []Desc // decoded once at open, normalized; never read from the segment again
	series []seriesLayout
	byID   map[string]int
	// region is this process's own mapping of the data region, which the recording handles
	// use; nil for an inspected set, which reads the segment's mapping under mu.
	region   *region
	readOnly bool

	mu       sync.Mutex // Snapshot holds it while it reads, Close while it closes
	closed   bool
	closeErr error
}

// Create makes a new set named name (a segment name, in opts.Dir) holding the series of
// schema, every value zero, and returns it open. The schema is checked (ErrInvalidDesc),
// stored in the segment, and is what every process that opens the set sees. opts.Kind is
// ignored. Errors are *fs.PathError wrapping ErrInvalidDesc, or those of shm.Create
// (shm.ErrExist when the name is taken, shm.ErrInvalidName, ...).
func Create(name string, schema []Desc, opts shm.Options) (*Set, error) {
	s, err := create(name, schema, opts)
	if err != nil {
		return nil, pathError("create", name, err)
	}
	return s, nil
}

// prepared is a checked schema with its encoding and layout.
type prepared struct {
	schema   []Desc
	geoms    []geometry
	encoded  []byte
	series   []seriesLayout
	dataSize uint64
}

func prepare(schema []Desc) (prepared, error) {
	p := prepared{schema: make([]Desc, len(schema))}
	for i, d := range schema {
		p.schema[i] = d.normalized()
	}
	var err error
	if p.geoms, err = checkSchema(p.schema); err != nil {
		return p, fmt.Errorf("%w: %w", ErrInvalidDesc, err)
	}
	p.encoded = encodeSchema(p.schema)
	var end uint64
	p.series, end = layoutOf(p.schema, p.geoms, len(p.encoded))
	if p.dataSize = dataSizeFor(end); p.dataSize == 0 {
		return p, fmt.Errorf("%w: the series need %d bytes, more than a segment holds", ErrInvalidDesc, end)
	}
	return p, nil
}

func create(name string, schema []Desc, opts shm.Options) (*Set, error) {
	p, err := prepare(schema)
	if err != nil {
		return nil, err
	}
	spec := shm.Spec{Kind: SegmentKind, DataSize: p.dataSize,
		Params: [2]uint64{paramVersion: formatVersion, paramSchema: schemaParam(p.encoded)}}
	opts.Kind = 0
	seg, err := shm.Create(name, spec, opts)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, pe.Err
		}
		return nil, err
	}
	// The name exists from here on; openers wait until the state word says the schema is
	// complete. Pairs with the load in waitReady: the schema's bytes are written before
	// the store, so an opener that loads stateReady reads all of them.
	copy(seg.Data(), p.encoded)
	atomic.StoreUint32(layout.Uint32(seg.Header(), layout.KindHeaderOffset+offState), stateReady)
	s, err := newSet(seg, p.schema, p.series)
	if err != nil {
		_ = seg.Remove()
		_ = seg.Close()
		return nil, err
	}
	return s, nil
}

// newSet builds the Set of an open segment whose schema is decoded and laid out.
func newSet(seg *shm.Segment, schema []Desc, series []seriesLayout) (*Set, error) {
	s := &Set{seg: seg, schema: schema, series: series, byID: make(map[string]int, len(schema)), readOnly: seg.ReadOnly()}
	for i, d := range schema {
		s.byID[d.ID()] = i
	}
	if !s.readOnly {
		r, err := duplicate(seg.Data())
		if err != nil {
			return nil, fmt.Errorf("mapping the values: %w", err)
		}
		s.region = r
	}
	return s, nil
}

// Open opens the existing set name for recording and reading, whatever its schema (see
// Check). It holds one of the segment's peer entries until Close. It validates as shm.Open
// does (each failure with its error: shm.ErrNotExist, shm.ErrUnsafe, shm.ErrNotSegment,
// shm.ErrTruncated, shm.ErrVersion, shm.ErrCorrupt, shm.ErrPeerTableFull; shm.ErrKind for a
// segment that is not a metrics set), then the set: its format version (ErrVersion), that
// its creator has finished (waiting up to ReadyWait, else ErrNotReady), the stored schema
// against the checksum in the descriptor and the rules of Desc, and that its values fit
// the segment (ErrCorrupt). Errors are *fs.PathError.
func Open(name string, opts shm.Options) (*Set, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ReadyWait)
	defer cancel()
	return openSet(ctx, "open", name, opts, true, false)
}

// WaitOpen is Open that waits, until ctx is done, for the set to be created (as
// shm.WaitOpen does) and for its creator to finish writing the schema. When ctx ends first
// the error wraps shm.ErrNotExist or ErrNotReady, and ctx.Err().
func WaitOpen(ctx context.Context, name string, opts shm.Options) (*Set, error) {
	opts.Kind = SegmentKind
	seg, err := shm.WaitOpen(ctx, name, opts)
	if err != nil {
		return nil, err
	}
	return finishOpen(ctx, "open", name, seg, false)
}

// Inspect opens the set name read-only, after the same validation as Open: it maps the
// segment with an O_RDONLY descriptor, takes no peer entry and no lock, and changes
// nothing. The set gives Snapshot, Schema and Check; asked for a recording handle it
// returns ErrReadOnly. This is what shmctl and exporters use.
func Inspect(name string, opts shm.Options) (*Set, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ReadyWait)
	defer cancel()
	return openSet(ctx, "inspect", name, opts, false, false)
}

// Read returns a snapshot of the set name: Inspect, Snapshot, Close.
func Read(name string, opts shm.Options) (Snapshot, error) {
	s, err := Inspect(name, opts)
	if err != nil {
		return Snapshot{}, err
	}
	defer s.Close()
	return s.Snapshot()
}

// openSet opens the set name; removeDead removes it if its creator died before it was ready
// (the error is then errCreatorDied all the same).
func openSet(ctx context.Context, op, name string, opts shm.Options, writable, removeDead bool) (*Set, error) {
	opts.Kind = SegmentKind
	open := shm.Inspect
	if writable {
		open = shm.Open
	}
	seg, err := open(name, opts)
	if err != nil {
		return nil, err
	}
	return finishOpen(ctx, op, name, seg, removeDead)
}

// finishOpen validates an open segment as a set and returns it, or closes it (and removes
// it, if removeDead, when its creator died before it was ready).
func finishOpen(ctx context.Context, op, name string, seg *shm.Segment, removeDead bool) (*Set, error) {
	s, err := parseSet(ctx, seg)
	if err != nil {
		if removeDead && errors.Is(err, errCreatorDied) {
			_ = seg.Remove() // only if the name still refers to this segment
		}
		_ = seg.Close()
		return nil, pathError(op, name, err)
	}
	return s, nil
}

// parseSet reads and checks what an opener needs from the segment: once, into Go memory.
func parseSet(ctx context.Context, seg *shm.Segment) (s *Set, err error) {
	d := seg.Descriptor()
	if d.Kind != SegmentKind { // shm checked; a second look costs nothing
		return nil, fmt.Errorf("%w: segment is %v, not metrics", shm.ErrKind, d.Kind)
	}
	if v := d.Params[paramVersion]; v != formatVersion {
		return nil, fmt.Errorf("%w: format %d, this code reads %d", ErrVersion, v, formatVersion)
	}
	schemaLen := d.Params[paramSchema] & 0xffffffff
	sum := uint32(d.Params[paramSchema] >> 32)
	if schemaLen > d.DataSize {
		return nil, fmt.Errorf("%w: schema of %d bytes in a data region of %d", ErrCorrupt, schemaLen, d.DataSize)
	}
	defer guardFaults(seg.Name(), &err)()
	if err := waitReady(ctx, seg); err != nil {
		return nil, err
	}
	raw := bytes.Clone(seg.Data()[:schemaLen]) // read once; everything below uses the copy
	if got := crc32.Checksum(raw, castagnoli); got != sum {
		return nil, fmt.Errorf("%w: schema checksum %08x, the descriptor says %08x", ErrCorrupt, got, sum)
	}
	schema, geoms, err := decodeSchema(raw)
	if err != nil {
		return nil, err
	}
	series, end := layoutOf(schema, geoms, len(raw))
	if end > d.DataSize {
		return nil, fmt.Errorf("%w: the series need %d bytes, the data region has %d", ErrCorrupt, end, d.DataSize)
	}
	return newSet(seg, schema, series)
}

// errCreatorDied is ErrNotReady for a set whose creator died before it was ready: a set no
// process can open, which OpenOrCreate replaces.
var errCreatorDied = fmt.Errorf("%w: its creator died", ErrNotReady)

// waitReady waits until the creator has stored stateReady (see create), while the creator
// may be alive and ctx is not done.
func waitReady(ctx context.Context, seg *shm.Segment) error {
	state := layout.Uint32(seg.Header(), layout.KindHeaderOffset+offState)
	pause := 20 * time.Microsecond
	for {
		switch st := atomic.LoadUint32(state); st { // pairs with create's store
		case stateReady:
			return nil
		case 0:
		default:
			return fmt.Errorf("%w: state word %d", ErrCorrupt, st)
		}
		if !creatorMayLive(seg) {
			if atomic.LoadUint32(state) == stateReady { // it finished, then went
				return nil
			}
			return errCreatorDied
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNotReady, ctx.Err())
		case <-time.After(pause):
		}
		pause = min(2*pause, 10*time.Millisecond)
	}
}

// creatorMayLive reports whether the creator of seg may still be writing the schema: the
// creator holds peer entry 0 from before the segment has its name (shm.Create), so a free
// entry 0, or this handle's own, means it is gone. A live entry 0 may belong to a later
// opener; then the wait ends by the deadline.
func creatorMayLive(seg *shm.Segment) bool {
	if p := seg.Peer(); p != nil && p.Index() == 0 {
		return false
	}
	alive, err := seg.Alive(0)
	return err == nil && alive
}

// openOrCreateTries bounds how often OpenOrCreate starts over when the set it failed to
// create is removed before it could open it.
const openOrCreateTries = 8

// OpenOrCreate creates the set name with schema, or opens it if it exists; created says
// whether this call created it. An existing set with another schema is refused with
// ErrMismatch (see Check). Losing the creation to another process opens the winner's set
// (waiting up to ReadyWait for it to be ready); if that is removed before it is opened,
// or its creator died before it was ready (it is removed then: no process can open it),
// OpenOrCreate starts over a few times. Errors are those of Create and Open, as
// *fs.PathError.
func OpenOrCreate(name string, schema []Desc, opts shm.Options) (s *Set, created bool, err error) {
	if _, err := prepare(schema); err != nil {
		return nil, false, pathError("create", name, err)
	}
	for range openOrCreateTries {
		s, err := Create(name, schema, opts)
		if err == nil {
			return s, true, nil
		}
		if !errors.Is(err, shm.ErrExist) {
			return nil, false, err
		}
		s, err = openOrCreateOpen(name, opts)
		if errors.Is(err, shm.ErrNotExist) || errors.Is(err, errCreatorDied) {
			continue // removed before we could open it, or half-made by a dead creator
		}
		if err != nil {
			return nil, false, err
		}
		if err := s.Check(schema); err != nil {
			_ = s.Close()
			return nil, false, pathError("open", name, err)
		}
		return s, false, nil
	}
	return nil, false, pathError("open", name,
		fmt.Errorf("%w: removed and re-created %d times while opening", shm.ErrNotExist, openOrCreateTries))
}

// openOrCreateOpen is Open that removes a set whose creator died before it was ready: no
// process can have it open, and OpenOrCreate can then create it.
func openOrCreateOpen(name string, opts shm.Options) (*Set, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ReadyWait)
	defer cancel()
	return openSet(ctx, "open", name, opts, true, true)
}

// Check reports whether the set was created with schema (labels in any order): nil if so,
// ErrMismatch naming the first series that differs if not, ErrInvalidDesc if schema itself
// is invalid.
func (s *Set) Check(schema []Desc) error {
	p, err := prepare(schema)
	if err != nil {
		return err
	}
	if bytes.Equal(p.encoded, encodeSchema(s.schema)) {
		return nil
	}
	for i := range max(len(p.schema), len(s.schema)) {
		switch {
		case i >= len(s.schema):
			return fmt.Errorf("%w: it has %d series, wanted %d (first missing: %s)", ErrMismatch, len(s.schema), len(p.schema), p.schema[i].ID())
		case i >= len(p.schema):
			return fmt.Errorf("%w: it has %d series, wanted %d (first extra: %s)", ErrMismatch, len(s.schema), len(p.schema), s.schema[i].ID())
		case !bytes.Equal(encodeSchema(s.schema[i:i+1]), encodeSchema(p.schema[i:i+1])):
			return fmt.Errorf("%w: series %d is %s, wanted %s", ErrMismatch, i, describe(s.schema[i]), describe(p.schema[i]))
		}
	}
	return ErrMismatch // unreachable: equal series encode equally
}

// describe names a description in full, for mismatch messages.
func describe(d Desc) string {
	s := fmt.Sprintf("%s %v", d.ID(), d.Type)
	if d.Type == TypeHistogram {
		s += fmt.Sprintf(" [%d, %d] %d digits", d.Lowest, d.Highest, d.Digits)
	}
	if d.Unit != "" {
		s += " in " + d.Unit
	}
	return s + fmt.Sprintf(" (help %q)", d.Help)
}

// Name is the set's segment name.
func (s *Set) Name() string { return s.seg.Name() }

// Schema returns a copy of the set's descriptions, in their stored order (labels sorted by
// key).
func (s *Set) Schema() []Desc {
	out := slices.Clone(s.schema)
	for i := range out {
		out[i].Labels = slices.Clone(out[i].Labels)
	}
	return out
}

// ReadOnly reports whether the set came from Inspect.
func (s *Set) ReadOnly() bool { return s.readOnly }

// Counter returns the handle of the counter name with labels (in any order). Look it up
// once and keep it: recording through it costs no lookup. Errors: ErrNoSeries (no counter
// with that identity), ErrReadOnly, ErrClosed.
func (s *Set) Counter(name string, labels ...Label) (*Counter, error) {
	i, err := s.lookup(TypeCounter, name, labels)
	if err != nil {
		return nil, err
	}
	return &Counter{v: layout.Uint64(s.region.data, s.series[i].off+offValue), r: s.region}, nil
}

// Gauge returns the handle of the gauge name with labels, as Counter does for counters.
func (s *Set) Gauge(name string, labels ...Label) (*Gauge, error) {
	i, err := s.lookup(TypeGauge, name, labels)
	if err != nil {
		return nil, err
	}
	return &Gauge{v: layout.Int64(s.region.data, s.series[i].off+offValue), r: s.region}, nil
}

// Histogram returns the handle of the histogram name with labels, as Counter does for
// counters.
func (s *Set) Histogram(name string, labels ...Label) (*Histogram, error) {
	i, err := s.lookup(TypeHistogram, name, labels)
	if err != nil {
		return nil, err
	}
	l := &s.series[i]
	return &Histogram{counts: int64s(s.region.data, l.countsOff, l.geom.countsLen),
		oor: layout.Uint64(s.region.data, l.off+offOutOfRange), g: &l.geom, r: s.region}, nil
}

func (s *Set) lookup(typ Type, name string, labels []Label) (int, error) {
	if s.readOnly {
		return 0, ErrReadOnly
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	id := seriesID(name, labels)
	i, ok := s.byID[id]
	switch {
	case !ok:
		return 0, fmt.Errorf("%w: %s has no %v %s", ErrNoSeries, s.Name(), typ, id)
	case s.schema[i].Type != typ:
		return 0, fmt.Errorf("%w: %s is a %v in %s, not a %v", ErrNoSeries, id, s.schema[i].Type, s.Name(), typ)
	}
	return i, nil
}

// Remove deletes the set's name if it still refers to this set's segment (shm.Segment.Remove);
// processes that have it open keep using it.
func (s *Set) Remove() error { return s.seg.Remove() }

// Close gives the segment back: its peer entry, its file, its name if the set was opened
// with shm.Options.RemoveOnClose. It is safe from any goroutine, any number of times (every
// call returns the first one's result), and waits for a Snapshot in progress. Recording
// handles stay safe to use afterwards (see Counter); every other method returns ErrClosed.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.closeErr = s.seg.Close()
	}
	return s.closeErr
}

// pathError wraps err as shm does, unless it is one already.
func pathError(op, name string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}
