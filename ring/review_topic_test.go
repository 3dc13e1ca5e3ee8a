package ring

// Review of the topic kind (publisher.go, subscriber.go, topic.go): each test demonstrates
// one finding of the review and fails while the bug is there.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

func rvtSeg(t *testing.T, policy Policy, slots uint64, slotSize uint32) *shm.Segment {
	t.Helper()
	base := ""
	if st, err := os.Stat(shm.DefaultDir); err == nil && st.IsDir() {
		base = shm.DefaultDir
	}
	dir, err := os.MkdirTemp(base, "ring-review-topic-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	slotSize = max(slotSize, uint32(4096/slots))
	seg, err := Create("topic", Spec{Kind: Topic, Size: slots * uint64(slotSize), SlotSize: slotSize, Policy: policy}, shm.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seg.Close() })
	return seg
}

func rvtPub(t *testing.T, seg *shm.Segment, opts Options) *Publisher {
	t.Helper()
	p, err := NewPublisher(seg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func rvtSub(t *testing.T, seg *shm.Segment, opts SubscribeOptions) *Subscriber {
	t.Helper()
	s, err := Subscribe(context.Background(), seg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func rvtU64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// Finding 1: a Block publisher asleep for room is not woken when the subscriber holding it
// back closes (leaveSub frees the entry with a CAS and notifies nobody): it sleeps out the
// whole futex timeout (livenessInterval, 100 ms), which the library counts as a late wake.
func TestReviewTopicCloseWakesBlockPublisher(t *testing.T) {
	seg := rvtSeg(t, Block, 8, 64)
	slow, err := Subscribe(context.Background(), seg, SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := rvtPub(t, seg, Options{Wait: Futex()})
	for i := range 8 {
		if err := p.TryWrite(0, rvtU64(uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan time.Time, 1)
	go func() {
		if err := p.Write(context.Background(), 0, rvtU64(8)); err != nil {
			t.Error(err)
		}
		done <- time.Now()
	}()
	// Let the publisher go to sleep in the kernel.
	deadline := time.Now().Add(5 * time.Second)
	for bitsAsleep(seg) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(5 * time.Millisecond)
	closed := time.Now()
	if err := slow.Close(); err != nil {
		t.Fatal(err)
	}
	took := (<-done).Sub(closed)
	st, _ := ReadStats(seg)
	t.Logf("Write returned %v after the subscriber closed; writers' late wakes: %d", took, st.Writers.LateWakes)
	if took > 50*time.Millisecond {
		t.Errorf("lost wake-up: the Block publisher slept %v after the only gating subscriber closed", took)
	}
}

func bitsAsleep(seg *shm.Segment) uint64 {
	return atomic.LoadUint64(layout.Uint64(kindHeader(seg), offSpaceWaiter))
}

// Finding 2: a subscription held by a dead process keeps a Block topic full for the try
// forms (TryWrite, TryReserve) and for Ready/Arm for ever: only awaitRoom (a blocking Write
// or Reserve) and Subscribe ever reap. The doc promises "a subscriber whose process died
// stops holding publishers back within the liveness interval (about 100 ms)".
func TestReviewTopicDeadSubscriberBlocksTryWriteForever(t *testing.T) {
	seg := rvtSeg(t, Block, 8, 64)
	p := rvtPub(t, seg, Options{})
	// A subscription entry as a process that died would leave it: holder peer 62, a pid
	// nobody has, at position 0.
	hdr := kindHeader(seg)
	entry := subEntry(hdr, 3)
	atomic.StoreUint64(subU64(entry, subPos), 0)
	atomic.StoreUint64(subU64(entry, subState), subWord(0, false, 62, 0x7ffffff0))
	atomic.OrUint64(layout.Uint64(hdr, offSubsUsed), 1<<3)
	atomic.AddUint64(layout.Uint64(hdr, offSubsGen), 1)
	for i := range 8 {
		if err := p.TryWrite(0, rvtU64(uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(500 * time.Millisecond) // five liveness intervals
	var err error
	for time.Now().Before(deadline) {
		if err = p.TryWrite(0, rvtU64(8)); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("TryWrite still %v 500 ms after the only subscriber died (Ready: %v)", err, p.Ready(8))
	}
	// Control: a blocking Write reaps it.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := p.Write(ctx, 0, rvtU64(9)); err != nil {
		t.Errorf("control: Write: %v", err)
	}
}

// Finding 3: Publisher.Ready and Subscriber.Ready load shared memory without enter(), so
// after Close (and the segment's unmapping) they fault instead of returning (MPMC and SPSC
// enter and return true when closed).
func TestReviewTopicReadyAfterClose(t *testing.T) {
	for _, who := range []string{"publisher", "subscriber"} {
		t.Run(who, func(t *testing.T) {
			seg := rvtSeg(t, Block, 8, 64)
			p, err := NewPublisher(seg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			s, err := Subscribe(context.Background(), seg, SubscribeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := seg.Close(); err != nil { // closes both endpoints, then unmaps
				t.Fatal(err)
			}
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s.Ready after Close faulted: %v", who, r)
				}
			}()
			if who == "publisher" {
				_ = p.Ready(8)
			} else {
				_ = s.Ready()
			}
		})
	}
}

// Finding 4: Publisher.Write leaves the endpoint (busy = 0) between reserve and the copy of
// the payload, so a Close from another goroutine may release the topic lock while Write
// still copies into the slot; another publisher then takes the lock, writes the same
// sequence and commits it, and the late copy lands in its published record: subscribers
// read a mixed record that validation cannot catch (the mark is the second publisher's).
// MPMCWriter.Write and SPSCWriter.Write copy inside enter/leave.
func TestReviewTopicWriteCloseRace(t *testing.T) {
	const slotSize = 1 << 20
	payload := slotSize - slotHeader
	a := bytes.Repeat([]byte{'A'}, payload)
	b := bytes.Repeat([]byte{'B'}, payload)
	for round := 0; round < 200; round++ {
		seg := rvtSeg(t, Overwrite, 2, slotSize)
		s := rvtSub(t, seg, SubscribeOptions{Start: FromOldest})
		p1, err := NewPublisher(seg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		p2 := rvtPub(t, seg, Options{})
		var wg sync.WaitGroup
		var finished atomic.Bool
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p1.Write(context.Background(), 1, a) // ErrClosed from Commit when Close wins
			finished.Store(true)
		}()
		// Close p1 once it holds the lock (while Write copies, with luck), or once its
		// Write is over.
		lockW := layout.Uint64(kindHeader(seg), offTopicLock)
		for !finished.Load() {
			if _, _, held := lockHolder(atomic.LoadUint64(lockW)); held {
				break
			}
		}
		time.Sleep(time.Duration(round%20) * 5 * time.Microsecond)
		_ = p1.Close()
		wrote := false
		for !wrote {
			if err := p2.TryWrite(2, b); err == nil {
				wrote = true
			} else if !errors.Is(err, ErrFull) {
				t.Fatal(err)
			}
		}
		wg.Wait()
		buf := make([]byte, payload)
		for {
			n, typ, err := s.TryRead(buf)
			if errors.Is(err, ErrEmpty) {
				break
			}
			if err != nil {
				continue // lag
			}
			rec := buf[:n]
			if bytes.Count(rec, []byte{'A'}) != 0 && bytes.Count(rec, []byte{'B'}) != 0 {
				t.Fatalf("round %d: record of type %d mixes %d bytes of the closed publisher's Write with %d of another publisher's",
					round, typ, bytes.Count(rec, []byte{'A'}), bytes.Count(rec, []byte{'B'}))
			}
		}
		seg.Close()
	}
}

// Finding 5: under Overwrite and Latest nothing bounds a batch to the ring: ReserveBatch (or
// Reserve before Commit) hands out more than `slots` buffers, and buffer i and i+slots are
// the same memory. Filled out of order, a published record carries another record's
// payload, with a valid mark.
func TestReviewTopicOverwriteBatchAliases(t *testing.T) {
	seg := rvtSeg(t, Overwrite, 8, 64)
	s := rvtSub(t, seg, SubscribeOptions{})
	p := rvtPub(t, seg, Options{})
	bufs, err := p.ReserveBatch(context.Background(), 0, 8, 16, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ReserveBatch of 16 on an 8-slot ring returned %d buffers", len(bufs))
	for i := len(bufs) - 1; i >= 0; i-- { // any order is the caller's right
		binary.LittleEndian.PutUint64(bufs[i], uint64(i))
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	for {
		rec, err := s.TryNext()
		if errors.Is(err, ErrEmpty) {
			break
		}
		if errors.Is(err, ErrLagged) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		seq := s.Position() - 1
		got := binary.LittleEndian.Uint64(rec.Data)
		if err := s.Validate(); err != nil {
			continue
		}
		if got != seq {
			t.Errorf("record %d validated intact but carries record %d's payload", seq, got)
		}
		s.Release()
	}
}

// Finding 6: Validate (and Release) check only the records borrowed since the last check,
// and every Next checks the earlier ones: a record borrowed with Next and read after a
// further Next is never checked again. Validate's doc: "whether the records borrowed since
// the last Release are intact".
func TestReviewTopicValidateMissesEarlierBorrowed(t *testing.T) {
	seg := rvtSeg(t, Overwrite, 8, 64)
	s := rvtSub(t, seg, SubscribeOptions{})
	p := rvtPub(t, seg, Options{})
	for i := range 2 {
		if err := p.TryWrite(0, rvtU64(uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	r0, err := s.TryNext()
	if err != nil {
		t.Fatal(err)
	}
	r1, err := s.TryNext() // r0 stays borrowed until Release
	if err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 8; i++ { // record 8 overwrites record 0's slot; record 1's is intact
		if err := p.TryWrite(0, rvtU64(uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	v0, v1 := binary.LittleEndian.Uint64(r0.Data), binary.LittleEndian.Uint64(r1.Data)
	err = s.Validate()
	t.Logf("borrowed record 0 now reads %d, record 1 reads %d; Validate: %v", v0, v1, err)
	if err == nil && v0 != 0 {
		t.Errorf("Validate says the records borrowed since the last Release are intact, but record 0 reads %d", v0)
	}
}
