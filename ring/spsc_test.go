package ring_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func newSPSC(t testing.TB, size uint64, opts ring.Options) (*shm.Segment, *ring.SPSCWriter, *ring.SPSCReader) {
	t.Helper()
	seg := newSegment(t, testDir(t), "spsc", ring.Spec{Kind: ring.SPSC, Size: size})
	w, err := ring.NewSPSCWriter(seg, opts)
	require.NoError(t, err)
	r, err := ring.NewSPSCReader(seg, opts)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close(); r.Close() })
	return seg, w, r
}

func TestSPSCRoundTrip(t *testing.T) {
	_, w, r := newSPSC(t, 4096, ring.Options{})
	ctx := context.Background()
	require.NoError(t, w.Write(ctx, 7, []byte("hello")))
	require.NoError(t, w.Write(ctx, 8, nil))
	rec, err := r.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint32(7), rec.Type)
	assert.Equal(t, "hello", string(rec.Data))
	r.Release()
	buf := make([]byte, 16)
	n, typ, err := r.Read(ctx, buf)
	require.NoError(t, err)
	assert.Equal(t, 0, n)
	assert.Equal(t, uint32(8), typ)
	_, err = r.TryNext()
	assert.ErrorIs(t, err, ring.ErrEmpty)
}

// TestSPSCManyThroughSmallRing pushes messages of varying sizes through a 4 KiB ring so
// that records wrap with padding many times, verifying each.
func TestSPSCManyThroughSmallRing(t *testing.T) {
	for _, start := range []uint64{0, math.MaxUint64 - 50_000} {
		seg := newSegment(t, testDir(t), "small", ring.Spec{Kind: ring.SPSC, Size: 4096})
		ring.SetPositions(seg, start)
		w, err := ring.NewSPSCWriter(seg, ring.Options{})
		require.NoError(t, err)
		r, err := ring.NewSPSCReader(seg, ring.Options{})
		require.NoError(t, err)
		const total = 20_000
		next := uint64(0)
		for seq := uint64(0); seq < total; seq++ {
			n := msgLen(seq, msgHeader, 700)
			for {
				p, err := w.TryReserve(uint32(seq), n)
				if err == nil {
					fillMsg(p, seq)
					require.NoError(t, w.Commit())
					break
				}
				require.ErrorIs(t, err, ring.ErrFull)
				next = drainAll(t, r, next)
			}
		}
		next = drainAll(t, r, next)
		assert.EqualValues(t, total, next)
		st, err := ring.ReadStats(seg)
		require.NoError(t, err)
		assert.EqualValues(t, total, st.Writers.Messages)
		assert.EqualValues(t, total, st.Readers.Messages)
		assert.Equal(t, st.WritePos, st.ReadPos)
		assert.Equal(t, start+st.WritePos-start, st.WritePos)
		if start != 0 {
			assert.Less(t, st.WritePos, start, "the position wrapped past 2^64")
		}
		w.Close()
		r.Close()
	}
}

func drainAll(t *testing.T, r *ring.SPSCReader, next uint64) uint64 {
	t.Helper()
	for {
		rec, err := r.TryNext()
		if errors.Is(err, ring.ErrEmpty) {
			r.Release()
			return next
		}
		require.NoError(t, err)
		seq, err := checkMsg(rec.Data, rec.Type)
		require.NoError(t, err)
		require.Equal(t, next, seq)
		next++
	}
}

func TestSPSCLimits(t *testing.T) {
	_, w, r := newSPSC(t, 4096, ring.Options{})
	assert.Equal(t, 2040, w.MaxMessage())
	_, err := w.TryReserve(0, 2041)
	assert.ErrorIs(t, err, ring.ErrTooLarge)
	assert.ErrorIs(t, w.Write(context.Background(), 0, make([]byte, 5000)), ring.ErrTooLarge)
	require.NoError(t, w.TryWrite(0, make([]byte, 2040)))
	require.NoError(t, w.TryWrite(0, make([]byte, 2000)))
	assert.ErrorIs(t, w.TryWrite(0, make([]byte, 100)), ring.ErrFull)
	assert.ErrorIs(t, w.Commit(), ring.ErrNotReserved)

	// A too-small buffer leaves the record in the ring.
	_, _, err = r.TryRead(make([]byte, 10))
	assert.ErrorIs(t, err, ring.ErrShortBuffer)
	n, _, err := r.TryRead(make([]byte, 4096))
	require.NoError(t, err)
	assert.Equal(t, 2040, n)
}

func TestSPSCBatch(t *testing.T) {
	seg, w, r := newSPSC(t, 1<<16, ring.Options{})
	for seq := uint64(0); seq < 10; seq++ {
		p, err := w.TryReserve(uint32(seq), 64)
		require.NoError(t, err)
		fillMsg(p, seq)
	}
	_, err := r.TryNext()
	assert.ErrorIs(t, err, ring.ErrEmpty, "nothing is visible before Commit")
	assert.ErrorIs(t, w.TryWrite(0, []byte("x")), ring.ErrPending)
	require.NoError(t, w.Commit())

	var got []uint64
	n, err := r.Drain(context.Background(), func(rec ring.Record) error {
		seq, err := checkMsg(rec.Data, rec.Type)
		got = append(got, seq)
		return err
	}, 4)
	require.NoError(t, err)
	assert.Equal(t, 4, n)
	n, err = r.Drain(context.Background(), func(rec ring.Record) error {
		seq, _ := checkMsg(rec.Data, rec.Type)
		if seq == 7 {
			return errors.New("handler failed")
		}
		got = append(got, seq)
		return nil
	}, 0)
	assert.EqualError(t, err, "handler failed")
	assert.Equal(t, 3, n)
	rec, err := r.TryNext()
	require.NoError(t, err)
	seq, _ := checkMsg(rec.Data, rec.Type)
	assert.EqualValues(t, 7, seq, "the record the handler failed on is delivered again")
	r.Release()
	assert.Equal(t, []uint64{0, 1, 2, 3, 4, 5, 6}, got)
	st, err := ring.ReadStats(seg)
	require.NoError(t, err)
	assert.EqualValues(t, 10, st.Writers.Messages)
	assert.EqualValues(t, 8, st.Readers.Messages)
}

func TestSPSCExclusiveRoles(t *testing.T) {
	seg, w, r := newSPSC(t, 4096, ring.Options{})
	_, err := ring.NewSPSCWriter(seg, ring.Options{})
	assert.ErrorIs(t, err, ring.ErrBusy)
	_, err = ring.NewSPSCReader(seg, ring.Options{})
	assert.ErrorIs(t, err, ring.ErrBusy)
	require.NoError(t, w.Close())
	require.NoError(t, r.Close())
	w2, err := ring.NewSPSCWriter(seg, ring.Options{})
	require.NoError(t, err)
	w2.Close()

	mpmc := newSegment(t, testDir(t), "m", ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 64})
	_, err = ring.NewSPSCWriter(mpmc, ring.Options{})
	assert.ErrorIs(t, err, ring.ErrKind)
}

func TestSPSCCloseDrainsThenEndOfStream(t *testing.T) {
	seg, w, r := newSPSC(t, 4096, ring.Options{Wait: ring.Futex()})
	ctx := context.Background()
	for i := range 3 {
		require.NoError(t, w.Write(ctx, uint32(i), []byte{byte(i)}))
	}
	require.NoError(t, w.Close())
	require.NoError(t, w.Close(), "idempotent")
	assert.ErrorIs(t, w.Write(ctx, 0, nil), ring.ErrClosed)
	for i := range 3 {
		rec, err := r.Next(ctx)
		require.NoError(t, err)
		assert.Equal(t, byte(i), rec.Data[0])
		r.Release()
	}
	_, err := r.Next(ctx)
	assert.Equal(t, ring.ErrEndOfStream, err, "returned bare, like io.EOF")
	_, err = r.TryNext()
	assert.Equal(t, ring.ErrEndOfStream, err)

	// A new writer reopens the stream.
	w2, err := ring.NewSPSCWriter(seg, ring.Options{})
	require.NoError(t, err)
	defer w2.Close()
	require.NoError(t, w2.Write(ctx, 9, []byte("again")))
	rec, err := r.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, "again", string(rec.Data))
	r.Release()
}

// TestSPSCBlockedNextWoken: a reader asleep on an empty ring is woken by its own Close, by
// its context, and by the writer's Close; a writer asleep on a full ring likewise.
func TestSPSCBlockedCallsWake(t *testing.T) {
	for _, wait := range []ring.Wait{ring.Futex(), ring.Adaptive(0), ring.Spin(), ring.Sleep(time.Millisecond)} {
		t.Run(wait.Name(), func(t *testing.T) {
			_, w, r := newSPSC(t, 4096, ring.Options{Wait: wait})
			done := make(chan error, 1)
			go func() { _, err := r.Next(context.Background()); done <- err }()
			time.Sleep(20 * time.Millisecond)
			require.NoError(t, r.Close())
			assert.ErrorIs(t, waitErr(t, done), ring.ErrClosed)

			ctx, cancel := context.WithCancel(context.Background())
			require.NoError(t, w.TryWrite(0, make([]byte, 2040)))
			require.NoError(t, w.TryWrite(0, make([]byte, 2000)))
			go func() { done <- w.Write(ctx, 0, make([]byte, 100)) }()
			time.Sleep(20 * time.Millisecond)
			cancel()
			assert.ErrorIs(t, waitErr(t, done), context.Canceled)

			dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
			defer dcancel()
			assert.ErrorIs(t, w.Write(dctx, 0, make([]byte, 100)), context.DeadlineExceeded)

			go func() { done <- w.Write(context.Background(), 0, make([]byte, 100)) }()
			time.Sleep(20 * time.Millisecond)
			require.NoError(t, w.Close())
			assert.ErrorIs(t, waitErr(t, done), ring.ErrClosed)
		})
	}
}

func waitErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("blocked call was not woken")
		return nil
	}
}

// TestSPSCCorruptPositions: positions a correct peer never writes are reported, not trusted.
func TestSPSCCorruptPositions(t *testing.T) {
	seg, w, r := newSPSC(t, 4096, ring.Options{})
	require.NoError(t, w.TryWrite(1, []byte("ok")))
	ring.SetWritePos(seg, 1<<40)
	_, err := r.TryNext()
	assert.ErrorIs(t, err, ring.ErrCorrupt)
	_, err = ring.ReadStats(seg)
	assert.ErrorIs(t, err, ring.ErrCorrupt)
	_, err = ring.Peek(seg, 1, 1)
	assert.ErrorIs(t, err, ring.ErrCorrupt)

	w.Close()
	r.Close()
	_, err = ring.NewSPSCReader(seg, ring.Options{})
	assert.ErrorIs(t, err, ring.ErrCorrupt)
}

// TestSPSCCorruptReadPosition: a writer that finds the reader's position impossible stops
// with ErrCorrupt instead of overwriting unread data or waiting forever.
func TestSPSCCorruptReadPosition(t *testing.T) {
	seg, w, _ := newSPSC(t, 4096, ring.Options{Wait: ring.Futex()})
	require.NoError(t, w.TryWrite(0, make([]byte, 2040)))
	require.NoError(t, w.TryWrite(0, make([]byte, 2000)))
	ring.SetReadPos(seg, 1<<50)
	assert.ErrorIs(t, w.TryWrite(0, make([]byte, 100)), ring.ErrCorrupt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	assert.ErrorIs(t, w.Write(ctx, 0, make([]byte, 100)), ring.ErrCorrupt)
}

// TestPeekCorruptPadding: a padding marker that runs past the write position is reported;
// before the check, one at index 0 made Peek loop for ever.
func TestPeekCorruptPadding(t *testing.T) {
	seg, w, _ := newSPSC(t, 4096, ring.Options{})
	require.NoError(t, w.TryWrite(1, []byte("ok")))
	copy(seg.Data(), []byte{0xFF, 0xFF, 0xFF, 0xFF})
	done := make(chan error, 1)
	go func() { _, err := ring.Peek(seg, 10, 8); done <- err }()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, ring.ErrCorrupt)
	case <-time.After(5 * time.Second):
		t.Fatal("Peek did not return")
	}
}

func TestSPSCCorruptHeader(t *testing.T) {
	seg, w, r := newSPSC(t, 4096, ring.Options{})
	require.NoError(t, w.TryWrite(1, []byte("ok")))
	seg.Data()[0] = 0xFF // length 0x...FF: larger than the ring allows
	seg.Data()[1] = 0x7F
	_, err := r.TryNext()
	assert.ErrorIs(t, err, ring.ErrCorrupt)
}

func TestSPSCPeek(t *testing.T) {
	seg, w, r := newSPSC(t, 4096, ring.Options{})
	require.NoError(t, w.TryWrite(3, []byte("first record")))
	require.NoError(t, w.TryWrite(4, []byte("second")))
	_, err := r.TryNext()
	require.NoError(t, err)
	r.Release()
	require.NoError(t, w.TryWrite(5, []byte("third")))

	ins, err := shm.Inspect("spsc", shm.Options{Dir: seg.Dir()})
	require.NoError(t, err)
	defer ins.Close()
	recs, err := ring.Peek(ins, 10, 3)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	assert.Equal(t, uint32(4), recs[0].Type)
	assert.Equal(t, 6, recs[0].Length)
	assert.Equal(t, "sec", string(recs[0].Data))
	assert.Equal(t, "thi", string(recs[1].Data))
	rec, err := r.TryNext()
	require.NoError(t, err)
	assert.Equal(t, "second", string(rec.Data), "peek consumed nothing")
	r.Release()
}

func TestParseWait(t *testing.T) {
	for in, want := range map[string]string{
		"spin": "spin", "futex": "futex", "sleep": "sleep:10ms", "sleep:1ms": "sleep:1ms",
		"adaptive": "adaptive:50µs", "adaptive:200µs": "adaptive:200µs",
	} {
		w, err := ring.ParseWait(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, w.String())
	}
	for _, in := range []string{"", "poll", "spin:1ms", "sleep:x", "sleep:-1s"} {
		_, err := ring.ParseWait(in)
		assert.Error(t, err, in)
	}
	assert.Equal(t, "adaptive:50µs", ring.Wait{}.String())
}

func TestAbort(t *testing.T) {
	_, w, r := newSPSC(t, 4096, ring.Options{})
	p, err := w.TryReserve(1, 5)
	require.NoError(t, err)
	copy(p, "wrong")
	w.Abort()
	require.NoError(t, w.TryWrite(2, []byte("right")))
	rec, err := r.TryNext()
	require.NoError(t, err)
	assert.Equal(t, "right", string(rec.Data))
	r.Release()

	seg := newMPMCSeg(t, 64, 64)
	mw, err := ring.NewMPMCWriter(seg, ring.Options{})
	require.NoError(t, err)
	defer mw.Close()
	mr, err := ring.NewMPMCReader(seg, ring.Options{})
	require.NoError(t, err)
	defer mr.Close()
	_, err = mw.TryReserve(1, 5)
	require.NoError(t, err)
	mw.Abort()
	require.NoError(t, mw.TryWrite(2, []byte("right")))
	rec, err = mr.TryNext()
	require.NoError(t, err)
	assert.Equal(t, "right", string(rec.Data))
	mr.Release()
}
