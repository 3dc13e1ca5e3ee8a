//go:build linux

package main

import (
	"context"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// floorPair maps one memfd of capacity records of size bytes as a writer and a reader, the
// way the two children do.
func floorPair(t *testing.T, size, capacity int) (*floorRing, *floorRing) {
	t.Helper()
	f, err := newFloorFile(floorData + capacity*size)
	require.NoError(t, err)
	defer f.Close()
	open := func(writer bool) *floorRing {
		dup, err := syscall.Dup(int(f.Fd()))
		require.NoError(t, err)
		r, err := newFloorRing(os.NewFile(uintptr(dup), "floor"), size, writer, 5*time.Second)
		require.NoError(t, err)
		return r
	}
	return open(true), open(false)
}

// TestFloorRing streams messages through a ring of 7 records in batches of 5 (which wrap
// and, in the last case, exceed the ring) and checks each one, its order and the end.
func TestFloorRing(t *testing.T) {
	for _, batch := range []int{1, 5, 16} {
		w, r := floorPair(t, 100, 7)
		assert.Equal(t, uint64(7), w.capacity)
		const total = 10_000
		pat := pattern(100)
		errc := make(chan error, 1)
		go func() {
			ctx := context.Background()
			for seq := uint64(0); seq < total; seq += uint64(batch) {
				n := min(batch, int(total-seq))
				err := w.sendN(ctx, 100, n, func(i int, p []byte) { encode(p, seq+uint64(i), 1, 0, pat) })
				if err != nil {
					errc <- err
					return
				}
			}
			errc <- w.close()
		}()
		next := uint64(0)
		for {
			err := r.recvN(context.Background(), batch, func(p []byte) {
				seq, writer, _, err := decode(p)
				if assert.NoError(t, err) {
					assert.Equal(t, next, seq)
					assert.Equal(t, uint32(1), writer)
				}
				next++
			})
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
		}
		require.NoError(t, <-errc)
		assert.Equal(t, uint64(total), next, "batch %d", batch)
	}
}

// TestFloorRingStall: a writer whose reader never reads gives up instead of spinning for
// ever.
func TestFloorRingStall(t *testing.T) {
	w, _ := floorPair(t, 64, 2)
	w.stall = 10 * time.Millisecond
	fill := func([]byte) {}
	require.NoError(t, w.send(context.Background(), 64, fill))
	require.NoError(t, w.send(context.Background(), 64, fill))
	assert.ErrorIs(t, w.send(context.Background(), 64, fill), errStalled)
}

// TestFDRecvN: a batched read of a kernel stream splits what arrives into messages and
// keeps a message cut between two reads for the next call.
func TestFDRecvN(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer w.Close()
	rt := newFDTransport(r, 64)
	defer rt.close()
	pat := pattern(64)
	msgs := make([]byte, 5*64)
	for i := range 5 {
		encode(msgs[i*64:(i+1)*64], uint64(i), 0, 0, pat)
	}
	var got []uint64
	fn := func(p []byte) {
		seq, _, _, err := decode(p)
		require.NoError(t, err)
		got = append(got, seq)
	}
	ctx := context.Background()
	_, err = w.Write(msgs[:64+30]) // one message and a part of the next
	require.NoError(t, err)
	require.NoError(t, rt.recvN(ctx, 4, fn))
	assert.Equal(t, []uint64{0}, got)
	_, err = w.Write(msgs[64+30:]) // the rest of it and three more
	require.NoError(t, err)
	require.NoError(t, rt.recvN(ctx, 2, fn)) // at most 2
	require.NoError(t, rt.recvN(ctx, 2, fn))
	assert.Equal(t, []uint64{0, 1, 2, 3, 4}, got)
	w.Close()
	assert.Equal(t, io.EOF, rt.recvN(ctx, 4, fn))
}
