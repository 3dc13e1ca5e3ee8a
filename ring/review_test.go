package ring_test

// Regression tests from the review of the "ring core, second pass" commits: each proved a
// bug (it failed before the fix named in its comment) and now guards the fix.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func init() {
	proctest.Register("review-ctx-unmap", runReviewCtxUnmap)
}

// catchPanic runs fn and returns the panic value, if any.
func catchPanic(fn func()) (p any) {
	defer func() { p = recover() }()
	fn()
	return nil
}

// Bug: MPMCReader.borrow releases the slot it has just claimed when seg.Pin fails. Pin fails
// from the moment Segment.Close starts (closing is set before the OnClose functions run), but
// the reader's own Close runs only later, from its OnClose hook, so in between every
// TryNext/Next claims the next committed record, cannot pin, and "gives the slot back" with
// release(): the slot is marked free for the next lap and the claim cleared. The record is
// delivered to nobody: lost. (The SPSC reader does not advance on a failed Pin.)
//
// The window is made deterministic with an OnClose hook registered after the reader (hooks run
// last-registered first): any other endpoint's or user's hook opens the same window.
func TestReviewMPMCSegmentCloseLosesClaimedRecord(t *testing.T) {
	// Was: MPMC reader loses a committed record when Pin fails while its segment is closing.
	dir := testDir(t)
	const n = 10
	other := newSegment(t, dir, "m", ring.Spec{Kind: ring.MPMC, Size: 64 * 64, SlotSize: 64})
	w, err := ring.NewMPMCWriter(other, ring.Options{})
	require.NoError(t, err)
	for i := range n {
		require.NoError(t, w.TryWrite(uint32(i), []byte{byte(i)}))
	}
	require.NoError(t, w.Close()) // the stream ends once all is read

	mine, err := shm.Open("m", shm.Options{Dir: dir}) // this consumer's own handle
	require.NoError(t, err)
	r, err := ring.NewMPMCReader(mine, ring.Options{})
	require.NoError(t, err)
	got := map[uint32]int{}
	rec, err := r.TryNext()
	require.NoError(t, err)
	got[rec.Type]++
	r.Release()

	inHook := make(chan struct{})
	proceed := make(chan struct{})
	mine.OnClose(func() { close(inHook); <-proceed }) // runs before the reader's Close
	closed := make(chan error, 1)
	go func() { closed <- mine.Close() }()
	<-inHook
	// The segment is closing; the reader is not closed yet. A consumer polling now gets an
	// error, and the record it claimed is gone.
	if rec, err := r.TryNext(); err == nil {
		got[rec.Type]++
		r.Release()
	} else {
		t.Logf("TryNext while the segment closes: %v (matches ring.ErrClosed: %v)", err, errors.Is(err, ring.ErrClosed))
	}
	close(proceed)
	require.NoError(t, <-closed)

	r2, err := ring.NewMPMCReader(other, ring.Options{})
	require.NoError(t, err)
	defer r2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		rec, err := r2.Next(ctx)
		if err != nil {
			require.ErrorIs(t, err, ring.ErrEndOfStream)
			break
		}
		got[rec.Type]++
		r2.Release()
	}
	for i := range n {
		assert.GreaterOrEqual(t, got[uint32(i)], 1, "committed record %d delivered to nobody", i)
	}
}

// Bug: parseSPSC (and tryReserve's padding) trust the alignment of the positions loaded from
// shared memory. Attach checks only that the positions are within a ring of each other; a
// position 1 to 3 bytes before the end of the region makes the 4-byte length read (or the
// padding write) slice past the region: index out of range, a panic instead of ErrCorrupt.
// The same reaches Peek (shmctl peek on a damaged segment).
func TestReviewSPSCUnalignedPositionPanics(t *testing.T) {
	// Was: an unaligned SPSC position from a corrupt segment panics instead of ErrCorrupt.
	const size = 4096
	t.Run("reader", func(t *testing.T) {
		seg := newSegment(t, testDir(t), "s", ring.Spec{Kind: ring.SPSC, Size: size})
		ring.SetReadPos(seg, size-2)
		ring.SetWritePos(seg, size-2+16)
		r, err := ring.NewSPSCReader(seg, ring.Options{})
		if err != nil {
			require.ErrorIs(t, err, ring.ErrCorrupt)
			return
		}
		defer r.Close()
		var terr error
		p := catchPanic(func() { _, terr = r.TryNext() })
		require.Nil(t, p, "TryNext panicked on a corrupt segment")
		assert.ErrorIs(t, terr, ring.ErrCorrupt)
	})
	t.Run("peek", func(t *testing.T) {
		seg := newSegment(t, testDir(t), "s", ring.Spec{Kind: ring.SPSC, Size: size})
		ring.SetReadPos(seg, size-1)
		ring.SetWritePos(seg, size-1+16)
		var perr error
		p := catchPanic(func() { _, perr = ring.Peek(seg, 10, 8) })
		require.Nil(t, p, "Peek panicked on a corrupt segment")
		assert.ErrorIs(t, perr, ring.ErrCorrupt)
	})
	t.Run("writer", func(t *testing.T) {
		seg := newSegment(t, testDir(t), "s", ring.Spec{Kind: ring.SPSC, Size: size})
		ring.SetWritePos(seg, size-3) // raw: SetPositions would align it
		ring.SetReadPos(seg, size-3)
		w, err := ring.NewSPSCWriter(seg, ring.Options{})
		if err != nil {
			require.ErrorIs(t, err, ring.ErrCorrupt)
			return
		}
		defer w.Close()
		var werr error
		p := catchPanic(func() { werr = w.TryWrite(1, make([]byte, 8)) })
		require.Nil(t, p, "TryWrite panicked on a corrupt segment")
		assert.ErrorIs(t, werr, ring.ErrCorrupt)
	})
}

// Bug: Close is documented as safe "from any goroutine", but Drain holds the endpoint's opMu
// while it runs the callback, and close() takes opMu: a callback that closes its reader
// (a handler deciding to stop; codec.Mux.Serve runs handlers inside Drain) deadlocks, and so
// does any later Segment.Close (its hook waits in closeOnce). Same for Segment.Close called
// from the callback.
func TestReviewCloseInsideDrainCallbackDeadlocks(t *testing.T) {
	// Was: Close from a Drain callback deadlocks on opMu.
	for _, spec := range []ring.Spec{{Kind: ring.SPSC, Size: 4096}, {Kind: ring.MPMC, Size: 4096, SlotSize: 64}} {
		t.Run(spec.Kind.String(), func(t *testing.T) {
			// Not closed in Cleanup: the deadlocked goroutine would hang Segment.Close.
			seg, err := ring.Create("d", spec, shm.Options{Dir: testDir(t)})
			require.NoError(t, err)
			w, err := ring.NewWriter(seg, ring.Options{})
			require.NoError(t, err)
			require.NoError(t, w.TryWrite(1, []byte("x")))
			r, err := ring.NewReader(seg, ring.Options{})
			require.NoError(t, err)
			done := make(chan error, 1)
			go func() {
				_, err := r.Drain(context.Background(), func(ring.Record) error { return r.Close() }, 0)
				done <- err
			}()
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				t.Fatal("Drain's callback called Close and never returned")
			}
		})
	}
}

// Bug: a writer whose constructor races Segment.Close can leave the stream open forever.
// attach pins the segment, then registers its OnClose hook; if the hook comes after Close
// ran its hooks (it is then queued and never run, or started on a goroutine), finishAttach
// closes the writer itself. But that close runs endStream, and endStream's sidePeers calls
// seg.Peers(), which fails with ErrClosed once Close has set closed: endStream gives up
// without ending the stream the writer opened (openStream bumped it to open). The ring is
// left "attached" with no writer anywhere: readers never get io.EOF (nor ErrPeerDead), and
// if the previous stream had ended, its readers lose their EOF too.
func TestReviewAttachRaceLeavesStreamOpen(t *testing.T) {
	// Was: endpoint closed by finishAttach after the segment closed cannot end the stream it opened.
	dir := testDir(t)
	hits := 0
	rounds := 3000
	for i := range rounds {
		name := fmt.Sprintf("a%d", i)
		seg, err := ring.Create(name, ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 64}, shm.Options{Dir: dir})
		require.NoError(t, err)
		// A previous stream that ended cleanly.
		w0, err := ring.NewMPMCWriter(seg, ring.Options{})
		require.NoError(t, err)
		require.NoError(t, w0.Close())
		start := make(chan struct{})
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if w, err := ring.NewMPMCWriter(seg, ring.Options{}); err == nil {
					_ = w.Close()
				}
			}()
		}
		close(start)
		runtime.Gosched()
		seg.Close()
		wg.Wait()
		look, err := shm.Inspect(name, shm.Options{Dir: dir})
		require.NoError(t, err)
		st, err := ring.ReadStats(look)
		require.NoError(t, err)
		look.Close()
		if st.WriterState != ring.WriterEnded {
			hits++
			t.Logf("round %d: writer state %q with %d writers open and no writer process anywhere", i, st.WriterState, st.WritersOpen)
			// A consumer of the ended stream now waits forever instead of getting io.EOF.
			again, err := shm.Open(name, shm.Options{Dir: dir})
			require.NoError(t, err)
			r, err := ring.NewMPMCReader(again, ring.Options{})
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = r.Next(ctx)
			cancel()
			assert.ErrorIs(t, err, ring.ErrEndOfStream, "the last writer closed, yet no end of stream")
			require.NoError(t, again.Close())
		}
		if hits > 0 {
			break
		}
	}
	assert.Zero(t, hits, "streams left open by a writer that never attached")
}

// runReviewCtxUnmap: a reader waits with a context that times out, then the endpoint and its
// segment are closed at once, as a caller does after a timeout. Many rounds.
func runReviewCtxUnmap(c *proctest.Child) error {
	dir := c.Args[0]
	rounds, _ := strconv.Atoi(c.Args[1])
	for i := range rounds {
		name := fmt.Sprintf("u%d", i)
		seg, err := ring.Create(name, ring.Spec{Kind: ring.SPSC, Size: 4096}, shm.Options{Dir: dir, RemoveOnClose: true})
		if err != nil {
			return err
		}
		r, err := ring.NewSPSCReader(seg, ring.Options{Wait: ring.Futex()})
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Microsecond)
		_, err = r.Next(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("round %d: Next: %v", i, err)
		}
		if err := seg.Close(); err != nil { // closes r too, then unmaps
			return err
		}
		runtime.Gosched()
	}
	return nil
}

// Bug: waiter.await registers context.AfterFunc(ctx, ev.wakeAll) and on return calls the stop
// function, which does not wait for an AfterFunc that has already started. When ctx ends at
// the moment the waiter returns (a deadline: the futex timeout is clipped to it, so the
// sleeper and the context's timer fire together), the call returns, the caller closes the
// endpoint and the segment, Close unmaps, and the AfterFunc goroutine then runs
// atomic.AddUint32 on the unmapped event word: SIGSEGV (or, if the address was mapped again,
// a write into another segment).
func TestReviewContextAfterFuncTouchesUnmappedSegment(t *testing.T) {
	// Was: context.AfterFunc wake-up can run after await returned and the segment was unmapped.
	var failures []string
	attempts, rounds := 2, "1500" // before the fix the child faulted within the first attempt
	if testing.Short() {
		attempts, rounds = 1, "500"
	}
	for attempt := range attempts {
		p := proctest.Start(t, "review-ctx-unmap", proctest.Options{Args: []string{testDir(t), rounds}, Env: []string{"GOMAXPROCS=1"}})
		if err := p.Wait(2 * time.Minute); err != nil {
			failures = append(failures, fmt.Sprintf("attempt %d: %v\n%s", attempt, err, lastLines(p.Output(), 12)))
			break
		}
	}
	assert.Empty(t, failures, "the child faulted after closing its segment")
}

func lastLines(s string, n int) string {
	lines := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			if lines++; lines > n {
				return s[i+1:]
			}
		}
	}
	if len(s) > 3000 {
		return s[:3000]
	}
	return s
}

// findReaderCell returns the claim word of the reader cell owned by peer entry owner.
func findReaderCell(t *testing.T, seg *shm.Segment, owner int) *uint64 {
	c := ring.ReaderClaimOfPeer(seg, owner)
	if c == nil {
		t.Fatalf("no reader cell owned by peer %d", owner)
	}
	return c
}

// Bug: a reader stores its claim (pos+1) in its cell before the CAS on the read position.
// If its process dies between the store and the CAS (or after a failed CAS, before it
// clears the claim), the cell names a position the dead reader never took. repair() cannot
// tell that from a borrowed record: it checks only that the slot is published and that the
// read position is past it, and adopts it. If another, live reader holds that position, the
// record is delivered twice while the first holder still has it; worse, once the live
// holder releases it and writers reuse the slot for the next lap, the adopter's Release
// stores "free for the next lap" over the new message's "published", which readers then
// take for a dead writer's slot and skip: a committed message is lost.
//
// The reader process is real and really dies; the parent writes into the dead process's
// claim cell the one value that process would have stored just before dying between the
// store and the CAS (that instant cannot be hit with a signal).
func TestReviewMPMCRepairAdoptsClaimNeverTaken(t *testing.T) {
	// Was: repair adopts a dead reader's pre-CAS claim of a record a live reader holds.
	dir := testDir(t)
	const slots = 64
	seg := newSegment(t, dir, "m", ring.Spec{Kind: ring.MPMC, Size: slots * 64, SlotSize: 64})
	w, err := ring.NewMPMCWriter(seg, ring.Options{})
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, w.TryWrite(7, []byte("first")))

	victim := proctest.Start(t, "mpmc-reader", proctest.Options{
		Args:   procConfig{Dir: dir, Name: "m", Wait: "futex", KillAt: math.MaxUint64}.args(),
		KillAt: "ready",
	})
	_ = victim.Wait(time.Minute)
	require.True(t, victim.Killed())
	peers, err := seg.Peers()
	require.NoError(t, err)
	dead := -1
	for _, p := range peers {
		if !p.Alive {
			dead = p.Index
		}
	}
	require.GreaterOrEqual(t, dead, 0)
	// What the victim's tryNext stores right before its CAS on the read position (0).
	atomic.StoreUint64(findReaderCell(t, seg, dead), 0+1)

	holder, err := ring.NewMPMCReader(seg, ring.Options{})
	require.NoError(t, err)
	defer holder.Close()
	rec, err := holder.TryNext() // position 0, held (not released yet)
	require.NoError(t, err)
	require.Equal(t, uint32(7), rec.Type)

	other, err := ring.NewMPMCReader(seg, ring.Options{Wait: ring.Futex()})
	require.NoError(t, err)
	defer other.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	dup, err := other.Next(ctx) // nothing else was written
	cancel()
	dupType := dup.Type
	assert.ErrorIs(t, err, context.DeadlineExceeded, "got record %d, which a live reader holds", dupType)

	// The consequence: the live holder releases, writers reuse slot 0 for position 64...
	holder.Release()
	for i := range slots {
		require.NoError(t, w.TryWrite(uint32(100+i), []byte("second lap")))
	}
	other.Release() // ...and the adopter's release marks slot 0 free again
	require.NoError(t, w.Close())

	got := map[uint32]bool{}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		rec, err := holder.Next(ctx)
		if err != nil {
			assert.ErrorIs(t, err, ring.ErrEndOfStream)
			break
		}
		got[rec.Type] = true
		holder.Release()
	}
	for i := range slots {
		assert.True(t, got[uint32(100+i)], "committed message %d lost", 100+i)
	}
}
