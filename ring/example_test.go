package ring_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// A writer and a reader of an SPSC ring. In real use they run in different processes: one
// calls shm.Create, the other shm.Open with the same name.
func Example() {
	dir, _ := os.MkdirTemp("", "shmq-example-")
	defer os.RemoveAll(dir)
	opts := shm.Options{Dir: dir}

	seg, err := shm.Create("orders", shm.Spec{Kind: shm.KindSPSC, DataSize: 1 << 16}, opts)
	if err != nil {
		panic(err)
	}
	defer seg.Close()
	w, _ := ring.NewSPSCWriter(seg, ring.Options{Wait: ring.Futex()})
	r, _ := ring.NewSPSCReader(seg, ring.Options{}) // Adaptive: spin briefly, then sleep
	ctx := context.Background()

	// Zero-copy: reserve room in the ring, fill it in place, publish.
	p, _ := w.Reserve(ctx, 1, 5)
	copy(p, "apple")
	w.Commit()
	// Copying form.
	w.Write(ctx, 2, []byte("pear"))
	w.Close() // readers drain, then get ErrClosed

	for {
		rec, err := r.Next(ctx) // borrowed in place until Release
		if errors.Is(err, ring.ErrClosed) {
			fmt.Println("closed")
			break
		}
		fmt.Printf("type %d: %s\n", rec.Type, rec.Data)
		r.Release()
	}
	r.Close()
	// Output:
	// type 1: apple
	// type 2: pear
	// closed
}

// Several records reserved before one Commit are published with one store and at most one
// wake-up; Drain hands the reader everything available and releases it once.
func Example_batch() {
	dir, _ := os.MkdirTemp("", "shmq-example-")
	defer os.RemoveAll(dir)
	seg, _ := shm.Create("batch", shm.Spec{Kind: shm.KindSPSC, DataSize: 1 << 16}, shm.Options{Dir: dir})
	defer seg.Close()
	w, _ := ring.NewSPSCWriter(seg, ring.Options{})
	r, _ := ring.NewSPSCReader(seg, ring.Options{})
	defer w.Close()
	defer r.Close()

	for i := range 3 {
		p, _ := w.TryReserve(0, 1)
		p[0] = byte('a' + i)
	}
	w.Commit()
	n, _ := r.Drain(context.Background(), func(rec ring.Record) error {
		fmt.Printf("%s ", rec.Data)
		return nil
	}, 0)
	fmt.Println(n)
	// Output: a b c 3
}

// An MPMC ring: any number of writers and readers, in any number of processes; each
// message goes to one reader.
func Example_mpmc() {
	dir, _ := os.MkdirTemp("", "shmq-example-")
	defer os.RemoveAll(dir)
	seg, _ := shm.Create("jobs", shm.Spec{Kind: shm.KindMPMC, DataSize: 1 << 16, SlotSize: 256}, shm.Options{Dir: dir})
	defer seg.Close()
	w1, _ := ring.NewMPMCWriter(seg, ring.Options{})
	w2, _ := ring.NewMPMCWriter(seg, ring.Options{})
	r, _ := ring.NewMPMCReader(seg, ring.Options{})
	defer r.Close()
	w1.TryWrite(0, []byte("job from w1"))
	w2.TryWrite(0, []byte("job from w2"))
	w1.Close()
	w2.CloseRing() // ends the stream for everyone
	buf := make([]byte, w2.MaxMessage())
	for {
		n, _, err := r.Read(context.Background(), buf)
		if err != nil {
			fmt.Println(errors.Is(err, ring.ErrClosed))
			break
		}
		fmt.Println(string(buf[:n]))
	}
	// Output:
	// job from w1
	// job from w2
	// true
}
