package ring_test

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// A writer and a reader of an SPSC ring. In real use they run in different processes, each
// calling ring.OpenOrCreate with the same name and spec (or one creates and the other waits
// for it with shm.WaitOpen). The one that should remove the file says so: here the writer,
// with RemoveOnClose.
func Example() {
	dir, _ := os.MkdirTemp("", "shmq-example-")
	defer os.RemoveAll(dir)
	spec := ring.Spec{Kind: ring.SPSC, Size: 1 << 16}

	wseg, _, err := ring.OpenOrCreate("orders", spec, shm.Options{Dir: dir, RemoveOnClose: true})
	if err != nil {
		panic(err)
	}
	defer wseg.Close()
	rseg, _, err := ring.OpenOrCreate("orders", spec, shm.Options{Dir: dir})
	if err != nil {
		panic(err)
	}
	defer rseg.Close()
	w, _ := ring.NewWriter(wseg, ring.Options{Wait: ring.Futex()}) // the segment's kind decides
	r, _ := ring.NewReader(rseg, ring.Options{})                   // Adaptive: spin briefly, then sleep
	ctx := context.Background()

	// Zero-copy: reserve room in the ring, fill it in place, publish.
	p, _ := w.Reserve(ctx, 1, 5)
	copy(p, "apple")
	w.Commit()
	// Copying form.
	w.Write(ctx, 2, []byte("pear"))
	w.Close() // the last writer's Close ends the stream: readers drain, then get io.EOF

	for {
		rec, err := r.Next(ctx) // borrowed in place until Release
		if err == io.EOF {
			fmt.Println("end of stream")
			break
		}
		fmt.Printf("type %d: %s\n", rec.Type, rec.Data)
		r.Release()
	}
	r.Close()
	// Output:
	// type 1: apple
	// type 2: pear
	// end of stream
}

// Several records reserved before one Commit are published with one store and at most one
// wake-up; Drain hands the reader everything available and releases it once.
func Example_batch() {
	dir, _ := os.MkdirTemp("", "shmq-example-")
	defer os.RemoveAll(dir)
	seg, _ := ring.Create("batch", ring.Spec{Kind: ring.SPSC, Size: 1 << 16}, shm.Options{Dir: dir})
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
// message goes to one reader. The stream ends when the last writer closes.
func Example_mpmc() {
	dir, _ := os.MkdirTemp("", "shmq-example-")
	defer os.RemoveAll(dir)
	seg, _ := ring.Create("jobs", ring.Spec{Kind: ring.MPMC, Size: 1 << 16, SlotSize: 256}, shm.Options{Dir: dir})
	defer seg.Close()
	w1, _ := ring.NewMPMCWriter(seg, ring.Options{})
	w2, _ := ring.NewMPMCWriter(seg, ring.Options{})
	r, _ := ring.NewMPMCReader(seg, ring.Options{})
	defer r.Close()
	w1.TryWrite(0, []byte("job from w1"))
	w2.TryWrite(0, []byte("job from w2"))
	w1.Close() // w2 is still open: the stream goes on
	w2.Close() // the last writer: the stream ends
	buf := make([]byte, w2.MaxMessage())
	for {
		n, _, err := r.Read(context.Background(), buf)
		if err != nil {
			fmt.Println(err == io.EOF)
			break
		}
		fmt.Println(string(buf[:n]))
	}
	// Output:
	// job from w1
	// job from w2
	// true
}

// A consumer that refuses a record rejects it: the record is released and counted, and
// Drain goes on with the next one, so one bad record does not stop the consumer.
func Example_reject() {
	dir, _ := os.MkdirTemp("", "shmq-example-")
	defer os.RemoveAll(dir)
	seg, _ := ring.Create("in", ring.Spec{Kind: ring.SPSC, Size: 1 << 16}, shm.Options{Dir: dir})
	defer seg.Close()
	w, _ := ring.NewWriter(seg, ring.Options{})
	r, _ := ring.NewReader(seg, ring.Options{})
	defer r.Close()
	for _, s := range []string{"ok 1", "garbage", "ok 2"} {
		w.TryWrite(0, []byte(s))
	}
	w.Close()
	n, _ := r.Drain(context.Background(), func(rec ring.Record) error {
		if string(rec.Data) == "garbage" {
			return ring.Reject(fmt.Errorf("cannot parse %q", rec.Data)) // e.g. to a dead-letter queue
		}
		fmt.Println(string(rec.Data))
		return nil
	}, 0)
	st, _ := ring.ReadStats(seg)
	fmt.Println(n, "accepted,", st.Readers.Rejected, "rejected")
	// Output:
	// ok 1
	// ok 2
	// 2 accepted, 1 rejected
}
