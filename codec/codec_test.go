package codec_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/codec"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// Order is a fixed-layout message.
type Order struct {
	ID       uint64
	Price    float64
	Qty      int32
	Side     uint8
	Urgent   bool
	Symbol   [8]byte
	Legs     [2]struct{ A, B uint16 }
	Reserved [2]uint32
}

// Point implements encoding.BinaryAppender and BinaryUnmarshaler.
type Point struct{ X, Y int32 }

func (p *Point) AppendBinary(b []byte) ([]byte, error) {
	b = binary.LittleEndian.AppendUint32(b, uint32(p.X))
	return binary.LittleEndian.AppendUint32(b, uint32(p.Y)), nil
}

func (p *Point) UnmarshalBinary(b []byte) error {
	if len(b) != 8 {
		return fmt.Errorf("point: %d bytes, want 8", len(b))
	}
	p.X, p.Y = int32(binary.LittleEndian.Uint32(b)), int32(binary.LittleEndian.Uint32(b[4:]))
	return nil
}

// Note is sent as JSON.
type Note struct {
	Text string   `json:"text"`
	Tags []string `json:"tags"`
}

func testDir(t testing.TB) string {
	t.Helper()
	base := ""
	if st, err := os.Stat(shm.DefaultDir); err == nil && st.IsDir() {
		base = shm.DefaultDir
	}
	d, err := os.MkdirTemp(base, "codec-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// newRing returns the two ends of a fresh SPSC ring.
func newRing(t testing.TB) (*ring.SPSCWriter, *ring.SPSCReader) {
	t.Helper()
	seg, err := ring.Create("r", ring.Spec{Kind: ring.SPSC, Size: 1 << 16}, shm.Options{Dir: testDir(t)})
	require.NoError(t, err)
	w, err := ring.NewSPSCWriter(seg, ring.Options{})
	require.NoError(t, err)
	r, err := ring.NewSPSCReader(seg, ring.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { w.Close(); r.Close(); seg.Close() })
	return w, r
}

func roundTrip[T any](t *testing.T, c codec.Codec[T], in T) T {
	t.Helper()
	w, r := newRing(t)
	s := codec.NewSender(w, 7, c)
	rc := codec.NewReceiver(r, 7, c)
	require.NoError(t, s.Send(context.Background(), &in))
	var out T
	require.NoError(t, rc.Receive(context.Background(), &out))
	return out
}

func TestRoundTrips(t *testing.T) {
	fixed, err := codec.NewFixed[Order]()
	require.NoError(t, err)
	o := Order{ID: 1, Price: 9.5, Qty: -3, Side: 2, Urgent: true, Symbol: [8]byte{'S', 'H', 'M', 'Q'}}
	o.Legs[1].B = 77
	assert.Equal(t, o, roundTrip[Order](t, fixed, o))
	assert.Equal(t, []byte("raw bytes"), roundTrip[[]byte](t, codec.Bytes{}, []byte("raw bytes")))
	assert.Empty(t, roundTrip[[]byte](t, codec.Bytes{}, []byte{}))
	assert.Equal(t, "héllo", roundTrip[string](t, codec.String{}, "héllo"))
	assert.Equal(t, Point{-1, 2}, roundTrip(t, codec.Binary[Point](), Point{-1, 2}))
	assert.Equal(t, Note{"hi", []string{"a", "b"}}, roundTrip(t, codec.JSON[Note](), Note{"hi", []string{"a", "b"}}))
	sized := &codec.Appender[Point]{
		SizeOf:    func(*Point) int { return 8 },
		Append:    func(b []byte, p *Point) ([]byte, error) { return p.AppendBinary(b) },
		Unmarshal: func(b []byte, p *Point) error { return p.UnmarshalBinary(b) },
	}
	assert.Equal(t, Point{3, 4}, roundTrip(t, codec.Codec[Point](sized), Point{3, 4}))
}

// TestAppenderInPlace: with a size function the encoding is appended straight into the
// reserved record; a size function that lies is an error, not a torn record.
func TestAppenderInPlace(t *testing.T) {
	var appendedInto []byte
	c := &codec.Appender[Point]{
		SizeOf: func(*Point) int { return 8 },
		Append: func(b []byte, p *Point) ([]byte, error) {
			appendedInto = b
			return p.AppendBinary(b)
		},
		Unmarshal: func(b []byte, p *Point) error { return p.UnmarshalBinary(b) },
	}
	dst := make([]byte, 8)
	require.NoError(t, c.Encode(dst, &Point{1, 2}))
	assert.Equal(t, unsafe.SliceData(dst), unsafe.SliceData(appendedInto), "appended in place")

	liar := &codec.Appender[Point]{SizeOf: func(*Point) int { return 4 }, Append: c.Append, Unmarshal: c.Unmarshal}
	w, r := newRing(t)
	s := codec.NewSender(w, 1, codec.Codec[Point](liar))
	assert.ErrorIs(t, s.Send(context.Background(), &Point{1, 2}), codec.ErrSize)
	assert.ErrorIs(t, s.TrySend(&Point{1, 2}), codec.ErrSize)
	_, err := r.TryNext()
	assert.ErrorIs(t, err, ring.ErrEmpty, "a failed encoding publishes nothing")
}

func TestFixedRejects(t *testing.T) {
	type inner struct{ Name string }
	check := func(name string, err error, field string) {
		t.Helper()
		require.ErrorIs(t, err, codec.ErrBadType, name)
		assert.Contains(t, err.Error(), field, name)
	}
	_, err := codec.NewFixed[struct{ P *int }]()
	check("pointer", err, ".P is a pointer")
	_, err = codec.NewFixed[struct{ S []int }]()
	check("slice", err, ".S is a slice")
	_, err = codec.NewFixed[struct{ S string }]()
	check("string", err, ".S is a string")
	_, err = codec.NewFixed[struct{ M map[int]int }]()
	check("map", err, ".M is a map")
	_, err = codec.NewFixed[struct{ I any }]()
	check("interface", err, ".I is an interface")
	_, err = codec.NewFixed[struct{ C chan int }]()
	check("chan", err, ".C is a channel")
	_, err = codec.NewFixed[struct{ F func() }]()
	check("func", err, ".F is a func")
	_, err = codec.NewFixed[struct{ U uintptr }]()
	check("uintptr", err, ".U is a uintptr")
	_, err = codec.NewFixed[struct{ U unsafe.Pointer }]()
	check("unsafe.Pointer", err, ".U is a pointer")
	_, err = codec.NewFixed[struct {
		OK  [4]uint64
		Bad [2]inner
	}]()
	check("nested", err, ".Bad[].Name is a string")
	_, err = codec.NewFixed[string]()
	check("top level", err, "string is a string")

	_, err = codec.NewFixed[Order]()
	assert.NoError(t, err)
	_, err = codec.NewFixed[[16]complex128]()
	assert.NoError(t, err)
}

func TestFixedViewChecks(t *testing.T) {
	f, err := codec.NewFixed[Order]()
	require.NoError(t, err)
	size, _ := f.Size(nil)
	buf := make([]uint64, size/8+1) // 8-byte aligned memory
	b := unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), size+8)

	_, err = f.View(b[:size-1])
	assert.ErrorIs(t, err, codec.ErrLength)
	_, err = f.View(b[:size+1])
	assert.ErrorIs(t, err, codec.ErrLength)
	_, err = f.View(b[1 : size+1])
	assert.ErrorIs(t, err, codec.ErrMisaligned)
	p, err := f.View(b[:size])
	require.NoError(t, err)
	p.ID = 5
	assert.EqualValues(t, 5, binary.LittleEndian.Uint64(b), "a view is the memory itself")

	b[unsafe.Offsetof(Order{}.Urgent)] = 2
	_, err = f.View(b[:size])
	assert.ErrorIs(t, err, codec.ErrInvalid)
}

func TestReceiverWrongType(t *testing.T) {
	w, r := newRing(t)
	require.NoError(t, codec.NewSender(w, 1, codec.String{}).Send(context.Background(), ptr("one")))
	require.NoError(t, codec.NewSender(w, 2, codec.String{}).Send(context.Background(), ptr("two")))
	rc := codec.NewReceiver(r, 2, codec.String{})
	var s string
	assert.ErrorIs(t, rc.Receive(context.Background(), &s), codec.ErrWrongType)
	require.NoError(t, rc.Receive(context.Background(), &s))
	assert.Equal(t, "two", s)
	assert.ErrorIs(t, rc.TryReceive(&s), ring.ErrEmpty)
}

func ptr[T any](v T) *T { return &v }

func TestMux(t *testing.T) {
	w, r := newRing(t)
	fixed, err := codec.NewFixed[Order]()
	require.NoError(t, err)
	ctx := context.Background()
	orders := codec.NewSender(w, 1, codec.Codec[Order](fixed))
	notes := codec.NewSender(w, 2, codec.JSON[Note]())
	require.NoError(t, orders.Send(ctx, &Order{ID: 10}))
	require.NoError(t, notes.Send(ctx, &Note{Text: "hello"}))
	require.NoError(t, codec.NewSender(w, 99, codec.String{}).Send(ctx, ptr("nobody handles me")))
	require.NoError(t, orders.Send(ctx, &Order{ID: 11}))

	var got []string
	m := codec.NewMux()
	codec.Handle(m, 1, codec.Codec[Order](fixed), func(o *Order) error { got = append(got, fmt.Sprint("order ", o.ID)); return nil })
	codec.Handle(m, 2, codec.JSON[Note](), func(n *Note) error { got = append(got, "note "+n.Text); return nil })

	// The record of type 99 is rejected (released, counted) and the rest go on.
	n, err := r.Drain(ctx, m.Dispatch, 0)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	assert.Equal(t, []string{"order 10", "note hello", "order 11"}, got)
	err = m.Dispatch(ring.Record{Type: 99})
	assert.ErrorIs(t, err, codec.ErrUnknownType)
	assert.ErrorIs(t, err, ring.ErrRejected)

	skipped := 0
	m.Unknown = func(rec ring.Record) error { skipped++; return nil }
	require.NoError(t, codec.NewSender(w, 99, codec.String{}).Send(ctx, ptr("now someone does")))
	_, err = r.Drain(ctx, m.Dispatch, 0)
	require.NoError(t, err)
	assert.Equal(t, 1, skipped)
}

// TestServeRejectsBadRecords: an unknown type, bytes the codec cannot decode and a record
// the handler rejects are each released, counted and reported, and Serve goes on to the
// end of the stream; a handler's other error stops it.
func TestServeRejectsBadRecords(t *testing.T) {
	w, r := newRing(t)
	ctx := context.Background()
	notes := codec.NewSender(w, 2, codec.JSON[Note]())
	require.NoError(t, notes.Send(ctx, &Note{Text: "one"}))
	require.NoError(t, codec.NewSender(w, 2, codec.String{}).Send(ctx, ptr("{not json")))
	require.NoError(t, codec.NewSender(w, 7, codec.String{}).Send(ctx, ptr("unknown")))
	require.NoError(t, notes.Send(ctx, &Note{Text: "refuse me"}))
	require.NoError(t, notes.Send(ctx, &Note{Text: "two"}))
	require.NoError(t, notes.Send(ctx, &Note{Text: "stop"}))
	require.NoError(t, notes.Send(ctx, &Note{Text: "after stop"}))

	var got []string
	var rejected []string
	stop := errors.New("stop here")
	m := codec.NewMux()
	m.Rejected = func(rec ring.Record, err error) { rejected = append(rejected, string(rec.Data)) }
	codec.Handle(m, 2, codec.JSON[Note](), func(n *Note) error {
		switch n.Text {
		case "refuse me":
			return ring.Reject(errors.New("business rule"))
		case "stop":
			return stop
		}
		got = append(got, n.Text)
		return nil
	})
	assert.ErrorIs(t, m.Serve(ctx, r), stop)
	assert.Equal(t, []string{"one", "two"}, got)
	assert.Equal(t, []string{"{not json", "unknown", `{"text":"refuse me","tags":null}`}, rejected)

	// The record the handler failed on stays in the ring.
	got = nil
	codec.Handle(m, 2, codec.JSON[Note](), func(n *Note) error { got = append(got, n.Text); return nil })
	w.Close()
	require.NoError(t, m.Serve(ctx, r))
	assert.Equal(t, []string{"stop", "after stop"}, got)
}

// TestReceiveBatchRejects: ReceiveBatch passes over records of another type or that do not
// decode, reporting them, instead of stopping for good on the first.
func TestReceiveBatchRejects(t *testing.T) {
	w, r := newRing(t)
	ctx := context.Background()
	fixed, _ := codec.NewFixed[Order]()
	orders := codec.NewSender(w, 1, codec.Codec[Order](fixed))
	require.NoError(t, orders.Send(ctx, &Order{ID: 1}))
	require.NoError(t, codec.NewSender(w, 1, codec.String{}).Send(ctx, ptr("short")))
	require.NoError(t, codec.NewSender(w, 5, codec.String{}).Send(ctx, ptr("other type")))
	require.NoError(t, orders.Send(ctx, &Order{ID: 2}))
	rc := codec.NewReceiver(r, 1, codec.Codec[Order](fixed))
	var errs []error
	rc.Rejected = func(rec ring.Record, err error) { errs = append(errs, err) }
	var ids []uint64
	n, err := rc.ReceiveBatch(ctx, func(o *Order) error { ids = append(ids, o.ID); return nil }, 0)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Equal(t, []uint64{1, 2}, ids)
	require.Len(t, errs, 2)
	assert.ErrorIs(t, errs[0], codec.ErrLength)
	assert.ErrorIs(t, errs[1], codec.ErrWrongType)
}

func TestReceiverNextViewsInPlace(t *testing.T) {
	w, r := newRing(t)
	fixed, _ := codec.NewFixed[Order]()
	s := codec.NewSender(w, 1, codec.Codec[Order](fixed))
	rc := codec.NewReceiver(r, 1, codec.Codec[Order](fixed))
	ctx := context.Background()
	for i := range 3 {
		require.NoError(t, s.Stage(ctx, &Order{ID: uint64(i)}))
	}
	require.NoError(t, s.Flush())
	o, err := rc.Next(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 0, o.ID)
	rc.Release()
	var ids []uint64
	n, err := rc.ReceiveBatch(ctx, func(o *Order) error { ids = append(ids, o.ID); return nil }, 0)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Equal(t, []uint64{1, 2}, ids)

	// A JSON receiver's Next decodes into its own value.
	jw := codec.NewSender(w, 3, codec.JSON[Note]())
	require.NoError(t, jw.Send(ctx, &Note{Text: "x"}))
	jr := codec.NewReceiver(r, 3, codec.JSON[Note]())
	note, err := jr.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, "x", note.Text)
	jr.Release()
}

func TestDecodeGarbage(t *testing.T) {
	var p Point
	assert.Error(t, codec.Binary[Point]().Decode([]byte{1, 2, 3}, &p))
	var n Note
	assert.Error(t, codec.JSON[Note]().Decode([]byte("{not json"), &n))
	fixed, _ := codec.NewFixed[Order]()
	var o Order
	assert.True(t, errors.Is(fixed.Decode(make([]byte, 3), &o), codec.ErrLength))
}
