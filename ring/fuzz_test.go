package ring_test

import (
	"context"
	"encoding/binary"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// fuzzRings are rings of every kind with live endpoints, shared by the iterations of
// FuzzHostileBytes: a peer scribbling on shared memory under running endpoints is exactly
// what the fuzz target plays.
type fuzzRings struct {
	segs []*shm.Segment
	// by kind index: 0 SPSC, 1 MPMC, 2 topic (Block), 3 topic (Overwrite)
	w    []ring.Writer
	r    []ring.Reader
	subs []*ring.Subscriber
}

var (
	fuzzOnce sync.Once
	fuzzSet  *fuzzRings
	fuzzErr  error
)

func openFuzzRings() (*fuzzRings, error) {
	fuzzOnce.Do(func() {
		base := ""
		if st, err := os.Stat(shm.DefaultDir); err == nil && st.IsDir() {
			base = shm.DefaultDir
		}
		dir, err := os.MkdirTemp(base, "ring-fuzz-")
		if err != nil {
			fuzzErr = err
			return
		}
		specs := []ring.Spec{
			{Kind: ring.SPSC, Size: 4096},
			{Kind: ring.MPMC, Size: 4096, SlotSize: 64},
			{Kind: ring.Topic, Size: 4096, SlotSize: 64, Policy: ring.Block},
			{Kind: ring.Topic, Size: 4096, SlotSize: 64, Policy: ring.Overwrite},
		}
		set := &fuzzRings{}
		for i, spec := range specs {
			seg, err := ring.Create(string(rune('a'+i)), spec, shm.Options{Dir: dir, RemoveOnClose: true})
			if err != nil {
				fuzzErr = err
				return
			}
			set.segs = append(set.segs, seg)
			var r ring.Reader
			if spec.Kind == ring.Topic {
				s, err := ring.Subscribe(context.Background(), seg, ring.SubscribeOptions{Start: ring.FromOldest})
				if err != nil {
					fuzzErr = err
					return
				}
				set.subs = append(set.subs, s)
				r = s
			} else if r, err = ring.NewReader(seg, ring.Options{}); err != nil {
				fuzzErr = err
				return
			}
			w, err := ring.NewWriter(seg, ring.Options{})
			if err != nil {
				fuzzErr = err
				return
			}
			set.w, set.r = append(set.w, w), append(set.r, r)
		}
		_ = os.Remove(dir) // the segments are unlinked on close; the directory may go now
		fuzzSet = set
	})
	return fuzzSet, fuzzErr
}

// FuzzHostileBytes plays a peer that stores arbitrary values into a ring's shared memory
// (positions, record headers, slot sequence words, the stream word, claim cells, the topic
// lock and subscription table, payloads) while this process's endpoints keep working. Every
// call must return (a typed error, or a record that fits the ring), never panic or hang.
//
// The input is a kind selector, then chunks of (offset uint16, length uint8, bytes) written
// into the kind header (offsets below 0x6000) or the data region (from 0x6000 on).
func FuzzHostileBytes(f *testing.F) {
	f.Add([]byte{0, 0, 0, 8, 0xf8, 0x0f, 0, 0, 0, 0, 0, 0, 0x80, 0, 8, 0xfd, 0x0f, 0, 0, 0, 0, 0, 0}) // SPSC positions near the end, misaligned
	f.Add([]byte{1, 0, 0x60, 16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 0, 0, 0})
	f.Add([]byte{2, 0x00, 0x04, 8, 1, 0x2a, 0, 0, 0, 0, 0, 0, 0, 0x10, 8, 0xff, 0xff, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{3, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x08, 0x10, 8, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 0x00, 0x60, 8, 0xff, 0xff, 0, 0, 7, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		set, err := openFuzzRings()
		if err != nil {
			t.Fatal(err)
		}
		if len(in) == 0 {
			return
		}
		k := int(in[0]) % len(set.segs)
		seg := set.segs[k]
		d := seg.Descriptor()
		hdr := seg.Header()[d.KindHeaderOffset : d.KindHeaderOffset+d.KindHeaderSize]
		data := seg.Data()
		for rest := in[1:]; len(rest) >= 3; {
			off, n := int(binary.LittleEndian.Uint16(rest)), int(rest[2])
			rest = rest[3:]
			n = min(n, len(rest))
			if off < 0x6000 {
				if off < len(hdr) {
					copy(hdr[off:], rest[:n])
				}
			} else if off-0x6000 < len(data) {
				copy(data[off-0x6000:], rest[:n])
			}
			rest = rest[n:]
		}
		start := time.Now()
		exercise(t, set, k)
		if d := time.Since(start); d > 10*time.Second { // a stall; every call here is bounded
			t.Fatalf("kind %d: the calls took %v (input %x)", k, d, in)
		}
	})
}

// exercise calls every non-blocking operation of ring k's endpoints and views once.
func exercise(t *testing.T, set *fuzzRings, k int) {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	w, r, seg := set.w[k], set.r[k], set.segs[k]
	buf := make([]byte, 8192)
	checkRec := func(rec ring.Record) {
		if len(rec.Data) > len(seg.Data()) {
			t.Fatalf("record of %d bytes from a ring of %d", len(rec.Data), len(seg.Data()))
		}
	}
	_ = w.TryWrite(1, []byte("hostile"))
	if p, err := w.TryReserve(2, 16); err == nil {
		copy(p, "reserved")
		w.Abort()
	}
	if ps, err := w.ReserveBatch(done, 3, 8, 4, nil); err == nil && len(ps) > 0 {
		_ = w.Commit()
	}
	_ = w.Ready(8)
	for range 4 {
		rec, err := r.TryNext()
		if err != nil {
			break
		}
		checkRec(rec)
	}
	r.Release()
	_, _, _ = r.TryRead(buf)
	_, _ = r.Drain(done, func(rec ring.Record) error { checkRec(rec); return nil }, 8)
	_ = r.Ready()
	_ = r.Maintain()
	if s, ok := r.(*ring.Subscriber); ok {
		_ = s.Validate()
		_, _, _, _ = s.Load(buf)
		_, _ = ring.ReadTopicStats(seg)
		_, _ = ring.PeekTopic(seg, 0, 4, 16)
	} else {
		_, _ = ring.Peek(seg, 4, 16)
	}
	_, _ = ring.ReadStats(seg)
}
