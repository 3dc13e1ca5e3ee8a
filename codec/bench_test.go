package codec_test

import (
	"context"
	"testing"
	"unsafe"

	"github.com/shmq/shmq/codec"
)

// Run: go test -run '^$' -bench . ./codec
// Each iteration sends one message and receives it, in one goroutine, so the numbers are
// the cost of the codec and the ring, not of waiting.

// BenchmarkRaw is the baseline: a raw ring record of the size of Order, copied in and
// borrowed out.
func BenchmarkRaw(b *testing.B) {
	w, r := newRing(b)
	msg := make([]byte, unsafe.Sizeof(Order{}))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		p, _ := w.TryReserve(1, len(msg))
		copy(p, msg)
		w.Commit()
		rec, _ := r.Next(ctx)
		if len(rec.Data) != len(msg) {
			b.Fatal("short record")
		}
		r.Release()
	}
}

// BenchmarkFixed sends an Order with Fixed[Order] and views it in place.
func BenchmarkFixed(b *testing.B) {
	w, r := newRing(b)
	fixed, _ := codec.NewFixed[Order]()
	s := codec.NewSender(w, 1, codec.Codec[Order](fixed))
	rc := codec.NewReceiver(r, 1, codec.Codec[Order](fixed))
	o := Order{ID: 1, Price: 2}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.TrySend(&o); err != nil {
			b.Fatal(err)
		}
		p, err := rc.Next(ctx)
		if err != nil || p.ID != 1 {
			b.Fatal(err)
		}
		rc.Release()
	}
}

// BenchmarkJSON sends a Note with encoding/json, for comparison.
func BenchmarkJSON(b *testing.B) {
	w, r := newRing(b)
	c := codec.JSON[Note]()
	s := codec.NewSender(w, 2, c)
	rc := codec.NewReceiver(r, 2, codec.JSON[Note]())
	n := Note{Text: "hello", Tags: []string{"a"}}
	var out Note
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.TrySend(&n); err != nil {
			b.Fatal(err)
		}
		if err := rc.Receive(ctx, &out); err != nil {
			b.Fatal(err)
		}
	}
}
