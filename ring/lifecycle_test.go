package ring_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// Tests for what a new user hit in the first hour (issue "Ring core, second pass"), one per
// finding, each failing on the code before it. The cross-process findings are in
// lifecycle_proc_test.go.

// smallRings is one small ring of each kind, for tests that hold for every kind.
var smallRings = []ring.Spec{{Kind: ring.SPSC, Size: 4096}, {Kind: ring.MPMC, Size: 4096, SlotSize: 64}}

var waitsUnderTest = []ring.Wait{ring.Futex(), ring.Adaptive(0), ring.Spin(), ring.Sleep(time.Millisecond)}

// Finding: Segment.Close while another goroutine is blocked in Next faulted (SIGSEGV in
// SPSCReader.available). Now the segment closes its endpoints first: a blocked call (a
// reader on an empty ring, a writer on a full one) is woken and returns ErrClosed, and
// nothing touches the mapping after it is unmapped.
func TestSegmentCloseWakesBlockedCalls(t *testing.T) {
	for _, spec := range smallRings {
		for _, wait := range waitsUnderTest {
			t.Run(spec.Kind.String()+"/"+wait.Name(), func(t *testing.T) {
				dir := testDir(t)
				empty, err := ring.Create("empty", spec, shm.Options{Dir: dir})
				require.NoError(t, err)
				r, err := ring.NewReader(empty, ring.Options{Wait: wait})
				require.NoError(t, err)
				full, err := ring.Create("full", spec, shm.Options{Dir: dir})
				require.NoError(t, err)
				idle, err := ring.NewReader(full, ring.Options{}) // attached, never reads
				require.NoError(t, err)
				w, err := ring.NewWriter(full, ring.Options{Wait: wait})
				require.NoError(t, err)
				for w.TryWrite(0, make([]byte, 40)) == nil {
				}
				done := make(chan error, 2)
				go func() { _, err := r.Next(context.Background()); done <- err }()
				go func() { done <- w.Write(context.Background(), 0, make([]byte, 40)) }()
				time.Sleep(20 * time.Millisecond)
				require.NoError(t, empty.Close())
				require.NoError(t, full.Close())
				for range 2 {
					select {
					case err := <-done:
						assert.ErrorIs(t, err, ring.ErrClosed)
					case <-time.After(5 * time.Second):
						t.Fatal("a blocked call did not return after Segment.Close")
					}
				}
				_, err = r.TryNext()
				assert.ErrorIs(t, err, ring.ErrClosed, "the endpoint is closed with its segment")
				assert.ErrorIs(t, w.TryWrite(0, nil), ring.ErrClosed)
				assert.NoError(t, r.Close(), "closing again is safe")
				assert.NoError(t, idle.Close())
			})
		}
	}
}

// Finding: two goroutines closing one reader, as the docs allow: the second Close returned
// before the first had finished, and closing the segment then faulted in counters.retire.
// Now every Close returns only once the endpoint is closed, whoever does the work.
func TestConcurrentClosesThenSegmentClose(t *testing.T) {
	rounds := 2000
	if testing.Short() {
		rounds = 300
	}
	dir := testDir(t)
	for i := range rounds {
		name := fmt.Sprintf("c%d", i)
		spec := ring.Spec{Kind: ring.SPSC, Size: 4096}
		if i%2 == 1 {
			spec = ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 64}
		}
		seg, err := ring.Create(name, spec, shm.Options{Dir: dir, RemoveOnClose: true})
		require.NoError(t, err)
		r, err := ring.NewReader(seg, ring.Options{})
		require.NoError(t, err)
		w, err := ring.NewWriter(seg, ring.Options{})
		require.NoError(t, err)
		require.NoError(t, w.TryWrite(1, []byte("x")))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if g%2 == 0 {
					assert.NoError(t, r.Close())
				} else {
					assert.NoError(t, w.Close())
				}
			}()
		}
		close(start)
		wg.Wait()
		require.NoError(t, seg.Close())
	}
}

// Finding: Segment.Close waited forever while a record was still borrowed. Now it returns
// shm.ErrBorrowed after a bounded wait; the record stays readable until Release, which
// lets the mapping go.
func TestSegmentCloseWithBorrowedRecordReturns(t *testing.T) {
	for _, spec := range smallRings {
		t.Run(spec.Kind.String(), func(t *testing.T) {
			seg, err := ring.Create("b", spec, shm.Options{Dir: testDir(t)})
			require.NoError(t, err)
			w, err := ring.NewWriter(seg, ring.Options{})
			require.NoError(t, err)
			r, err := ring.NewReader(seg, ring.Options{})
			require.NoError(t, err)
			require.NoError(t, w.TryWrite(5, []byte("still mine")))
			rec, err := r.Next(context.Background())
			require.NoError(t, err)

			done := make(chan error, 1)
			go func() { done <- seg.Close() }()
			select {
			case err := <-done:
				assert.ErrorIs(t, err, shm.ErrBorrowed)
			case <-time.After(10 * time.Second):
				t.Fatal("Segment.Close hangs while a record is borrowed")
			}
			assert.Equal(t, "still mine", string(rec.Data), "the borrowed record is still mapped")
			r.Release()       // lets the mapping go
			err = seg.Close() // closing again is safe, and says the same
			if err != nil {
				assert.ErrorIs(t, err, shm.ErrBorrowed)
			}
		})
	}
}

// Finding: an MPMC producer with no consumer yet failed with ErrPeerDead once the ring was
// full. Now it waits (ErrFull in the Try form), and goes on once a consumer attaches.
func TestWriterWithNoReaderYetWaits(t *testing.T) {
	for _, spec := range smallRings {
		t.Run(spec.Kind.String(), func(t *testing.T) {
			seg := newSegment(t, testDir(t), "q", spec)
			w, err := ring.NewWriter(seg, ring.Options{Wait: ring.Futex()})
			require.NoError(t, err)
			defer w.Close()
			sent := 0
			for ; w.TryWrite(0, []byte{byte(sent)}) == nil; sent++ {
			}
			assert.ErrorIs(t, w.TryWrite(0, []byte{1}), ring.ErrFull)
			ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond) // past the 100 ms liveness checks
			defer cancel()
			assert.ErrorIs(t, w.Write(ctx, 0, []byte{1}), context.DeadlineExceeded, "waits, no ErrPeerDead")

			done := make(chan error, 1)
			go func() { done <- w.Write(context.Background(), 0, []byte{byte(sent)}) }()
			r, err := ring.NewReader(seg, ring.Options{})
			require.NoError(t, err)
			defer r.Close()
			for i := 0; i <= sent; i++ {
				rec, err := r.Next(context.Background())
				require.NoError(t, err)
				assert.Equal(t, byte(i), rec.Data[0])
				r.Release()
			}
			require.NoError(t, <-done)
		})
	}
}

// Finding: the end of a stream was os.ErrClosed, reading "file already closed", the same as
// closing one's own endpoint. Now the end is io.EOF and one's own Close is ErrClosed, which
// says so (and still matches os.ErrClosed for code written for files).
func TestEndOfStreamIsNotClosed(t *testing.T) {
	seg := newSegment(t, testDir(t), "e", ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 64})
	w, err := ring.NewWriter(seg, ring.Options{})
	require.NoError(t, err)
	r, err := ring.NewReader(seg, ring.Options{})
	require.NoError(t, err)
	require.NoError(t, w.Close())
	_, err = r.Next(context.Background())
	assert.Equal(t, io.EOF, err)
	assert.False(t, errors.Is(err, os.ErrClosed))
	require.NoError(t, r.Close())
	_, err = r.Next(context.Background())
	assert.ErrorIs(t, err, ring.ErrClosed)
	assert.ErrorIs(t, err, os.ErrClosed)
	assert.NotErrorIs(t, err, io.EOF)
	assert.Equal(t, "ring endpoint is closed", err.Error())
}

// Finding: errors.Is(err, shm.ErrKind) and errors.Is(err, shm.ErrBusy) were false for the
// ring's errors of the same meaning.
func TestRingErrorsWrapShmSentinels(t *testing.T) {
	dir := testDir(t)
	mpmc := newSegment(t, dir, "m", ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 64})
	_, err := ring.NewSPSCWriter(mpmc, ring.Options{})
	assert.ErrorIs(t, err, ring.ErrKind)
	assert.ErrorIs(t, err, shm.ErrKind)

	spsc := newSegment(t, dir, "s", ring.Spec{Kind: ring.SPSC, Size: 4096})
	w, err := ring.NewSPSCWriter(spsc, ring.Options{})
	require.NoError(t, err)
	defer w.Close()
	_, err = ring.NewSPSCWriter(spsc, ring.Options{})
	assert.ErrorIs(t, err, ring.ErrBusy)
	assert.ErrorIs(t, err, shm.ErrBusy)

	ring.SetWritePos(spsc, 1<<40)
	_, err = w.TryReserve(0, 8) // fine: the writer trusts its own position
	require.NoError(t, err)
	_, err = ring.NewSPSCReader(spsc, ring.Options{})
	assert.ErrorIs(t, err, ring.ErrCorrupt)
	assert.ErrorIs(t, err, shm.ErrCorrupt)
}

// Finding: a version bump of the ring format must be refused cleanly.
func TestRingFormatVersionRefused(t *testing.T) {
	dir := testDir(t)
	for _, v := range []uint64{1, 3} { // the format before this code's (2), and a newer one
		spec, err := ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 64}.SegmentSpec()
		require.NoError(t, err)
		spec.Params[0] = v
		seg, err := shm.Create(fmt.Sprintf("v%d", v), spec, shm.Options{Dir: dir})
		require.NoError(t, err)
		defer seg.Close()
		_, err = ring.NewReader(seg, ring.Options{})
		assert.ErrorIs(t, err, ring.ErrVersion)
		assert.ErrorIs(t, err, shm.ErrVersion)
		_, err = ring.NewWriter(seg, ring.Options{})
		assert.ErrorIs(t, err, ring.ErrVersion)
		_, err = ring.ReadStats(seg)
		assert.ErrorIs(t, err, shm.ErrVersion)
	}

	other, err := shm.Create("other", shm.Spec{Kind: 77, DataSize: 4096}, shm.Options{Dir: dir})
	require.NoError(t, err)
	defer other.Close()
	_, err = ring.NewWriter(other, ring.Options{})
	assert.ErrorIs(t, err, shm.ErrKind)
}

// Finding: each endpoint took two of the 64 peer entries; 50 subscribers in one process hit
// "peer table is full". Now a process has one entry per segment whatever its endpoints:
// 1,000 endpoints on one segment in one process work.
func TestThousandEndpointsOneProcess(t *testing.T) {
	seg := newSegment(t, testDir(t), "many", ring.Spec{Kind: ring.MPMC, Size: 1 << 16, SlotSize: 64})
	before, err := seg.LivePeers()
	require.NoError(t, err)
	var readers []ring.Reader
	for range 999 {
		r, err := ring.NewReader(seg, ring.Options{})
		require.NoError(t, err)
		readers = append(readers, r)
	}
	w, err := ring.NewWriter(seg, ring.Options{})
	require.NoError(t, err)
	after, err := seg.LivePeers()
	require.NoError(t, err)
	assert.Equal(t, before, after, "endpoints take no peer entries of their own")
	st, err := ring.ReadStats(seg)
	require.NoError(t, err)
	assert.Equal(t, 999, st.ReadersOpen)
	assert.Equal(t, 1, st.WritersOpen)

	for i := range 999 {
		require.NoError(t, w.TryWrite(uint32(i), nil))
	}
	got := map[uint32]bool{}
	for _, r := range readers {
		rec, err := r.TryNext()
		require.NoError(t, err)
		got[rec.Type] = true
		r.Release()
	}
	assert.Len(t, got, 999, "each message to exactly one reader")
	// One reader keeps the process's reader counters, 998 add to the pool: none is lost or
	// counted twice, before the endpoints close and after their counters retire.
	st, err = ring.ReadStats(seg)
	require.NoError(t, err)
	assert.EqualValues(t, 999, st.Readers.Messages)
	assert.EqualValues(t, 999, st.Writers.Messages)
	for _, r := range readers {
		require.NoError(t, r.Close())
	}
	require.NoError(t, w.Close())
	assert.Zero(t, ring.CellsInUse(seg), "every claim cell given back")
	st, err = ring.ReadStats(seg)
	require.NoError(t, err)
	assert.EqualValues(t, 999, st.Readers.Messages)
	assert.EqualValues(t, 999, st.Writers.Messages)
}

// A consumer can refuse a record: it is released, counted as rejected, and the consumer
// goes on (before, the only choices were to take it or to stop for good).
func TestRejectGoesOn(t *testing.T) {
	for _, spec := range smallRings {
		t.Run(spec.Kind.String(), func(t *testing.T) {
			seg := newSegment(t, testDir(t), "rj", spec)
			w, err := ring.NewWriter(seg, ring.Options{})
			require.NoError(t, err)
			r, err := ring.NewReader(seg, ring.Options{})
			require.NoError(t, err)
			defer r.Close()
			for i := range 6 {
				require.NoError(t, w.TryWrite(uint32(i), nil))
			}
			require.NoError(t, w.Close())
			var accepted []uint32
			cause := errors.New("bad record")
			n, err := r.Drain(context.Background(), func(rec ring.Record) error {
				if rec.Type%3 == 1 {
					return ring.Reject(cause)
				}
				accepted = append(accepted, rec.Type)
				return nil
			}, 0)
			require.NoError(t, err)
			assert.Equal(t, 4, n)
			assert.Equal(t, []uint32{0, 2, 3, 5}, accepted)
			_, err = r.Next(context.Background())
			assert.Equal(t, io.EOF, err, "the rejected records are gone, not redelivered")

			st, err := ring.ReadStats(seg)
			require.NoError(t, err)
			assert.EqualValues(t, 2, st.Readers.Rejected)
			assert.EqualValues(t, 4, st.Readers.Messages)
			assert.ErrorIs(t, ring.Reject(cause), ring.ErrRejected)
			assert.ErrorIs(t, ring.Reject(cause), cause)
		})
	}
}

// Reject outside Drain: the borrowed record is released and counted as rejected.
func TestRejectBorrowed(t *testing.T) {
	for _, spec := range smallRings {
		t.Run(spec.Kind.String(), func(t *testing.T) {
			seg := newSegment(t, testDir(t), "rb", spec)
			w, err := ring.NewWriter(seg, ring.Options{})
			require.NoError(t, err)
			defer w.Close()
			r, err := ring.NewReader(seg, ring.Options{})
			require.NoError(t, err)
			defer r.Close()
			require.NoError(t, w.TryWrite(1, nil))
			require.NoError(t, w.TryWrite(2, nil))
			rec, err := r.TryNext()
			require.NoError(t, err)
			require.EqualValues(t, 1, rec.Type)
			r.Reject()
			rec, err = r.TryNext()
			require.NoError(t, err)
			assert.EqualValues(t, 2, rec.Type)
			r.Release()
			st, err := ring.ReadStats(seg)
			require.NoError(t, err)
			assert.EqualValues(t, 1, st.Readers.Rejected)
			assert.EqualValues(t, 1, st.Readers.Messages)
		})
	}
}

// The event-loop hooks: Ready is a cheap check; Arm hands out the futex word that the
// writer's next publish changes, and marks the process so that the writer wakes it.
func TestReadyAndArm(t *testing.T) {
	for _, spec := range smallRings {
		t.Run(spec.Kind.String(), func(t *testing.T) {
			seg := newSegment(t, testDir(t), "rd", spec)
			w, err := ring.NewWriter(seg, ring.Options{})
			require.NoError(t, err)
			r, err := ring.NewReader(seg, ring.Options{})
			require.NoError(t, err)
			defer r.Close()
			assert.False(t, r.Ready())
			assert.True(t, w.Ready(8))
			wake, armed, err := r.Arm()
			require.NoError(t, err)
			require.True(t, armed)
			assert.NotZero(t, ring.DataWaiters(seg), "armed: the writer sees a sleeper")
			require.NoError(t, w.TryWrite(1, []byte("x")))
			assert.NotEqual(t, wake.Value, atomic.LoadUint32(wake.Word), "the publish changed the word the loop sleeps on")
			assert.True(t, r.Ready())
			r.Disarm()
			r.Disarm() // idempotent
			assert.Zero(t, ring.DataWaiters(seg))
			_, armed, err = r.Arm()
			require.NoError(t, err)
			assert.False(t, armed, "ready already: nothing to sleep on")
			assert.Zero(t, ring.DataWaiters(seg))

			rec, err := r.TryNext()
			require.NoError(t, err)
			assert.Equal(t, "x", string(rec.Data))
			r.Release()
			require.NoError(t, w.Close())
			assert.True(t, r.Ready(), "the end of the stream is ready too")
			_, err = r.TryNext()
			assert.Equal(t, io.EOF, err)
		})
	}
}

// Endpoints attaching while their segment closes: each either attaches (and is closed with
// the segment) or fails with ErrClosed; nothing faults, and no stream is left open.
func TestAttachRacesSegmentClose(t *testing.T) {
	dir := testDir(t)
	for i := range 100 {
		spec := ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 64}
		if i%2 == 0 {
			spec = ring.Spec{Kind: ring.SPSC, Size: 4096}
		}
		seg, err := ring.Create(fmt.Sprintf("a%d", i), spec, shm.Options{Dir: dir, RemoveOnClose: true})
		require.NoError(t, err)
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var closer interface{ Close() error }
				var err error
				if g%2 == 0 {
					closer, err = ring.NewWriter(seg, ring.Options{})
				} else {
					closer, err = ring.NewReader(seg, ring.Options{})
				}
				if err != nil {
					if !errors.Is(err, ring.ErrClosed) && !errors.Is(err, ring.ErrBusy) {
						t.Errorf("attach: %v", err)
					}
					return
				}
				if err := closer.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			}()
		}
		seg.Close()
		wg.Wait()
	}
}

// A sleeping reader costs the writer one wake-up system call per sleep, not one per message
// published until the reader has run: a writer that keeps publishing to a reader that was
// woken and has not yet unmarked itself wakes it once.
func TestOneWakePerSleep(t *testing.T) {
	for _, spec := range smallRings {
		t.Run(spec.Kind.String(), func(t *testing.T) { testOneWakePerSleep(t, spec) })
	}
}

func testOneWakePerSleep(t *testing.T, spec ring.Spec) {
	seg := newSegment(t, testDir(t), "w", spec)
	w, err := ring.NewWriter(seg, ring.Options{})
	require.NoError(t, err)
	defer w.Close()
	r, err := ring.NewReader(seg, ring.Options{})
	require.NoError(t, err)
	defer r.Close()
	_, armed, err := r.Arm() // asleep, as an event loop would be
	require.NoError(t, err)
	require.True(t, armed)
	for i := range 50 {
		require.NoError(t, w.TryWrite(uint32(i), nil))
	}
	require.NoError(t, w.Close()) // its counters go to the pool
	st, err := ring.ReadStats(seg)
	require.NoError(t, err)
	assert.EqualValues(t, 1, st.Writers.FutexWakes, "one sleep, one wake-up")
	r.Disarm()
	_, armed, err = r.Arm()
	require.NoError(t, err)
	assert.False(t, armed, "records are waiting: nothing to sleep on")
}

// ReserveBatch reserves as many records as fit (at least one, waiting for the first), and
// one Commit publishes them all, in order.
func TestReserveBatch(t *testing.T) {
	for _, spec := range smallRings {
		t.Run(spec.Kind.String(), func(t *testing.T) {
			seg := newSegment(t, testDir(t), "rb", spec)
			w, err := ring.NewWriter(seg, ring.Options{Wait: ring.Futex()})
			require.NoError(t, err)
			defer w.Close()
			r, err := ring.NewReader(seg, ring.Options{})
			require.NoError(t, err)
			defer r.Close()
			ctx := context.Background()

			recs, err := w.ReserveBatch(ctx, 7, 16, 10, nil)
			require.NoError(t, err)
			require.Len(t, recs, 10)
			for i, p := range recs {
				require.Len(t, p, 16)
				p[0] = byte(i)
			}
			_, err = r.TryNext()
			assert.ErrorIs(t, err, ring.ErrEmpty, "nothing published before Commit")
			require.NoError(t, w.Commit())
			for i := range 10 {
				rec, err := r.TryNext()
				require.NoError(t, err)
				assert.EqualValues(t, 7, rec.Type)
				assert.Equal(t, byte(i), rec.Data[0])
				r.Release()
			}

			// Near full: only what fits now.
			sent := 0
			for w.TryWrite(0, make([]byte, 16)) == nil {
				sent++
			}
			for range 3 {
				_, err := r.TryNext()
				require.NoError(t, err)
				r.Release()
			}
			recs, err = w.ReserveBatch(ctx, 1, 16, 10, recs[:0])
			require.NoError(t, err)
			assert.NotEmpty(t, recs)
			assert.LessOrEqual(t, len(recs), 3, "only the room three records left")
			require.NoError(t, w.Commit())

			// No room at all: waits like Reserve.
			for w.TryWrite(0, make([]byte, 16)) == nil {
			}
			short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			_, err = w.ReserveBatch(short, 1, 16, 4, nil)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			_, err = w.ReserveBatch(ctx, 1, w.MaxMessage()+1, 4, nil)
			assert.ErrorIs(t, err, ring.ErrTooLarge)
			require.NoError(t, w.Close())
			_, err = w.ReserveBatch(ctx, 1, 16, 4, nil)
			assert.ErrorIs(t, err, ring.ErrClosed)
		})
	}
}
