package loop_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/loop"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func testOpts(t testing.TB) shm.Options {
	t.Helper()
	base := ""
	if st, err := os.Stat(shm.DefaultDir); err == nil && st.IsDir() {
		base = shm.DefaultDir
	}
	d, err := os.MkdirTemp(base, "loop-test-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return shm.Options{Dir: d}
}

func create(t testing.TB, opts shm.Options, name string, spec ring.Spec) *shm.Segment {
	t.Helper()
	seg, err := ring.Create(name, spec, opts)
	require.NoError(t, err)
	t.Cleanup(func() { seg.Close() })
	return seg
}

// run runs l in a goroutine and returns a function that stops it and returns Run's error.
func run(t *testing.T, l *loop.Loop) func() error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- l.Run(context.Background()) }()
	return func() error {
		l.Stop()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after Stop")
			return nil
		}
	}
}

// TestLoopServesRings: one loop goroutine serves SPSC, MPMC and topic readers fed by other
// goroutines, every message handled once and in order, with each wait strategy.
func TestLoopServesRings(t *testing.T) {
	for _, wait := range []ring.Wait{ring.Spin(), ring.Sleep(100 * time.Microsecond), ring.Futex(), ring.Adaptive(0)} {
		t.Run(wait.Name(), func(t *testing.T) {
			opts := testOpts(t)
			const perRing = 2000
			segs := []*shm.Segment{
				create(t, opts, "s1", ring.Spec{Kind: ring.SPSC, Size: 4096}),
				create(t, opts, "s2", ring.Spec{Kind: ring.SPSC, Size: 4096}),
				create(t, opts, "m", ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 64}),
				create(t, opts, "t", ring.Spec{Kind: ring.Topic, Size: 4096, SlotSize: 64, Policy: ring.Block}),
			}
			l := loop.New(loop.Options{Wait: wait})
			got := make([]uint64, len(segs))
			var order error
			for i, seg := range segs {
				r, err := ring.NewReader(seg, ring.Options{})
				require.NoError(t, err)
				defer r.Close()
				_, err = l.Add(r, func(rec ring.Record) error {
					if v := binary.LittleEndian.Uint64(rec.Data); v != got[i] && order == nil {
						order = fmt.Errorf("ring %d: got %d, want %d", i, v, got[i])
					}
					got[i]++
					return nil
				}, nil)
				require.NoError(t, err)
			}
			stop := run(t, l)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			for _, seg := range segs {
				w, err := ring.NewWriter(seg, ring.Options{})
				require.NoError(t, err)
				defer w.Close()
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := uint64(0); i < perRing; i++ {
						if err := w.Write(ctx, 0, binary.LittleEndian.AppendUint64(nil, i)); err != nil {
							t.Error(err)
							return
						}
						if i%500 == 0 {
							time.Sleep(2 * time.Millisecond) // let the loop fall asleep now and then
						}
					}
				}()
			}
			wg.Wait()
			require.Eventually(t, func() bool {
				done := make(chan bool, 1)
				if l.Post(func() {
					all := true
					for _, n := range got {
						all = all && n == perRing
					}
					done <- all
				}) != nil {
					return false
				}
				return <-done
			}, 20*time.Second, time.Millisecond)
			require.NoError(t, stop())
			require.NoError(t, order)
		})
	}
}

func TestLoopPostAndTimers(t *testing.T) {
	l := loop.New(loop.Options{Wait: ring.Futex()})
	stop := run(t, l)
	var mu sync.Mutex
	var seen []string
	note := func(s string) { mu.Lock(); seen = append(seen, s); mu.Unlock() }
	for i := range 5 {
		require.NoError(t, l.Post(func() { note(fmt.Sprint("task", i)) }))
	}
	fired := make(chan struct{})
	_, err := l.AfterFunc(20*time.Millisecond, func() { note("after"); close(fired) })
	require.NoError(t, err)
	ticks := make(chan struct{}, 100)
	tick, err := l.Every(5*time.Millisecond, func() { ticks <- struct{}{} })
	require.NoError(t, err)
	never, err := l.AfterFunc(50*time.Millisecond, func() { note("never") })
	require.NoError(t, err)
	never.Stop()
	<-fired
	for range 3 {
		<-ticks
	}
	tick.Stop()
	time.Sleep(60 * time.Millisecond)
	for len(ticks) > 0 {
		<-ticks
	}
	time.Sleep(20 * time.Millisecond)
	assert.Zero(t, len(ticks), "a stopped timer does not fire again")
	require.NoError(t, stop())
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"task0", "task1", "task2", "task3", "task4", "after"}, seen)
	assert.ErrorIs(t, l.Post(func() {}), loop.ErrStopped)
	_, err = l.AfterFunc(time.Millisecond, func() {})
	assert.ErrorIs(t, err, loop.ErrStopped)
}

// TestLoopHandlerFailures: a handler's panic and error are reported and the record
// rejected; the loop goes on.
func TestLoopHandlerFailures(t *testing.T) {
	opts := testOpts(t)
	seg := create(t, opts, "r", ring.Spec{Kind: ring.SPSC, Size: 4096})
	var mu sync.Mutex
	var reported []error
	l := loop.New(loop.Options{Wait: ring.Futex(), OnError: func(_ *loop.Source, err error) {
		mu.Lock()
		reported = append(reported, err)
		mu.Unlock()
	}})
	r, err := ring.NewSPSCReader(seg, ring.Options{})
	require.NoError(t, err)
	defer r.Close()
	handled := make(chan uint64, 10)
	ended := make(chan error, 1)
	_, err = l.Add(r, func(rec ring.Record) error {
		switch v := binary.LittleEndian.Uint64(rec.Data); v {
		case 1:
			panic("boom")
		case 2:
			return errors.New("refused")
		default:
			handled <- v
		}
		return nil
	}, func(err error) { ended <- err })
	require.NoError(t, err)
	stop := run(t, l)
	w, err := ring.NewSPSCWriter(seg, ring.Options{})
	require.NoError(t, err)
	for i := range uint64(4) {
		require.NoError(t, w.Write(context.Background(), 0, binary.LittleEndian.AppendUint64(nil, i)))
	}
	require.NoError(t, w.Close())
	assert.EqualValues(t, 0, <-handled)
	assert.EqualValues(t, 3, <-handled)
	select {
	case err := <-ended:
		assert.ErrorIs(t, err, io.EOF, "the end of the stream ends the source")
	case <-time.After(10 * time.Second):
		t.Fatal("onEnd not called")
	}
	require.NoError(t, stop())
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, reported, 2)
	var pe *loop.PanicError
	require.ErrorAs(t, reported[0], &pe)
	assert.Equal(t, "boom", pe.Value)
	assert.NotEmpty(t, pe.Stack)
	assert.EqualError(t, reported[1], "refused")
	st, err := ring.ReadStats(seg)
	require.NoError(t, err)
	assert.EqualValues(t, 2, st.Readers.Rejected)
}

// TestLoopPastWaitVLimit: with more readers than futex_waitv takes, the ones past the limit
// are polled, and nothing is lost.
func TestLoopPastWaitVLimit(t *testing.T) {
	opts := testOpts(t)
	const rings = 130
	l := loop.New(loop.Options{Wait: ring.Futex()})
	var got [rings]int
	var ws []ring.Writer
	for i := range rings {
		seg := create(t, opts, fmt.Sprint("r", i), ring.Spec{Kind: ring.SPSC, Size: 4096})
		r, err := ring.NewSPSCReader(seg, ring.Options{})
		require.NoError(t, err)
		defer r.Close()
		_, err = l.Add(r, func(ring.Record) error { got[i]++; return nil }, nil)
		require.NoError(t, err)
		w, err := ring.NewSPSCWriter(seg, ring.Options{})
		require.NoError(t, err)
		defer w.Close()
		ws = append(ws, w)
	}
	stop := run(t, l)
	for round := range 3 {
		time.Sleep(5 * time.Millisecond) // asleep again
		for _, i := range []int{0, 126, 127, 129} {
			require.NoError(t, ws[i].Write(context.Background(), uint32(round), nil))
		}
	}
	require.Eventually(t, func() bool {
		done := make(chan bool, 1)
		require.NoError(t, l.Post(func() { done <- got[0] == 3 && got[126] == 3 && got[127] == 3 && got[129] == 3 }))
		return <-done
	}, 10*time.Second, time.Millisecond)
	require.NoError(t, stop())
}

// TestLoopStopFromHandler: Stop from a handler ends Run after the turn.
func TestLoopStopFromHandler(t *testing.T) {
	l := loop.New(loop.Options{})
	require.NoError(t, l.Post(l.Stop))
	require.NoError(t, l.Run(context.Background()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, loop.New(loop.Options{Wait: ring.Futex()}).Run(ctx), context.DeadlineExceeded)
}
