package ring_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shmq/shmq/ring"
)

// BenchmarkTopicLatestLoad: Load of a 64-byte value while another goroutine publishes new
// values as fast as it can (issue goal: no torn read, <= 50 ns a read).
func BenchmarkTopicLatestLoad(b *testing.B) {
	seg := newTopicSeg(b, ring.Latest, 64, 128)
	p := publisher(b, seg)
	s := subscribe(b, seg, ring.SubscribeOptions{})
	val := func(buf []byte, v uint64) {
		for i := 0; i < 64; i += 8 {
			binary.LittleEndian.PutUint64(buf[i:], v)
		}
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var writes atomic.Uint64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for v := uint64(1); !stop.Load(); v++ {
			buf, err := p.TryReserve(0, 64)
			if err != nil {
				panic(err)
			}
			val(buf, v)
			if err := p.Commit(); err != nil {
				panic(err)
			}
			writes.Add(1)
		}
	}()
	for writes.Load() == 0 {
	}
	dst := make([]byte, 64)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, _, err := s.Load(dst); err != nil {
			b.Fatal(err)
		}
		v := binary.LittleEndian.Uint64(dst)
		for j := 8; j < 64; j += 8 {
			if binary.LittleEndian.Uint64(dst[j:]) != v {
				b.Fatalf("torn value: %x", dst)
			}
		}
	}
	b.StopTimer()
	stop.Store(true)
	wg.Wait()
	b.ReportMetric(float64(writes.Load())/b.Elapsed().Seconds()/1e6, "Mwrites/s")
}

// BenchmarkTopicFanOut: one publisher goroutine, N subscriber goroutines draining, 64 B
// records in batches of 32, Block, the default (adaptive) wait: with more goroutines than
// cores a spinning wait would starve one of them for a scheduler quantum. ns/op is per
// record published (each read N times).
func BenchmarkTopicFanOut(b *testing.B) {
	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			seg := newTopicSeg(b, ring.Block, 4096, 128)
			ctx := context.Background()
			var wg sync.WaitGroup
			for range n {
				s := subscribe(b, seg, ring.SubscribeOptions{})
				wg.Add(1)
				go func() {
					defer wg.Done()
					for got := 0; got < b.N; {
						k, err := s.Drain(ctx, func(ring.Record) error { return nil }, 0)
						if err != nil {
							panic(err)
						}
						got += k
					}
				}()
			}
			p, err := ring.NewPublisher(seg, ring.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			var bufs [][]byte
			b.SetBytes(64)
			b.ResetTimer()
			for sent := 0; sent < b.N; {
				bufs, err = p.ReserveBatch(ctx, 0, 64, min(32, b.N-sent), bufs[:0])
				if err != nil {
					b.Fatal(err)
				}
				if err := p.Commit(); err != nil {
					b.Fatal(err)
				}
				sent += len(bufs)
			}
			wg.Wait()
		})
	}
}
