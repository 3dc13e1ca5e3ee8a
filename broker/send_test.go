//go:build linux

package broker_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/broker"
	"github.com/shmq/shmq/ring"
)

// recv reads one record and returns a copy of its type and data.
func recv(t *testing.T, c *broker.Conn) (uint32, string) {
	t.Helper()
	rec, err := c.Recv(context.Background())
	require.NoError(t, err)
	typ, data := rec.Type, string(rec.Data)
	c.Release()
	return typ, data
}

// TestReserveCommit: records reserved, filled in place and committed arrive in order, a
// batch with one Commit included; aborted ones never arrive; Commit with nothing reserved
// is ring.ErrNotReserved. With and without Poison.
func TestReserveCommit(t *testing.T) {
	for _, poison := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "poison"}[poison], func(t *testing.T) {
			_, cc, sc := pair(t, broker.Options{Dir: testDir(t), Poison: poison})
			ctx := context.Background()
			p, err := cc.Reserve(ctx, 5, 3)
			require.NoError(t, err)
			copy(p, "one")
			require.NoError(t, cc.Commit())

			for i, s := range []string{"two", "three", "four"} { // a batch, one Commit
				p, err := cc.Reserve(ctx, uint32(10+i), len(s))
				require.NoError(t, err)
				copy(p, s)
			}
			require.NoError(t, cc.Commit())

			p, err = cc.Reserve(ctx, 99, 4)
			require.NoError(t, err)
			copy(p, "drop")
			cc.Abort()
			assert.ErrorIs(t, cc.Commit(), ring.ErrNotReserved)
			require.NoError(t, cc.Send(ctx, 6, []byte("five")))

			for _, want := range []struct {
				typ  uint32
				data string
			}{{5, "one"}, {10, "two"}, {11, "three"}, {12, "four"}, {6, "five"}} {
				typ, data := recv(t, sc)
				assert.Equal(t, want.typ, typ)
				assert.Equal(t, want.data, data)
			}
			require.NoError(t, cc.Close())
		})
	}
}

// TestReserveIsZeroCopy: without Poison the buffer is the ring's memory: a write after
// Commit (the program error Poison catches) changes the message the peer has not read yet.
func TestReserveIsZeroCopy(t *testing.T) {
	if poisonTag {
		t.Skip("built with -tags shmqpoison: every buffer is a private copy")
	}
	_, cc, sc := pair(t, broker.Options{Dir: testDir(t)})
	p, err := cc.Reserve(context.Background(), 1, 5)
	require.NoError(t, err)
	copy(p, "hello")
	require.NoError(t, cc.Commit())
	copy(p, "HELLO") // the error: the buffer is the ring's now
	_, data := recv(t, sc)
	assert.Equal(t, "HELLO", data, "the buffer Reserve returned is the record in the ring")
}

// TestPoisonCatchesReuse: with Poison, a buffer written after its Commit, after its Abort,
// or after a later Reserve gave it back is reported by the next call on the sending side
// (or Close) as ErrBufferReused; the peer gets what was there at the send, reads of a sent
// buffer see the poison, and the connection goes on after the report.
func TestPoisonCatchesReuse(t *testing.T) {
	ctx := context.Background()
	t.Run("after Commit, next Reserve", func(t *testing.T) {
		_, cc, sc := pair(t, broker.Options{Dir: testDir(t), Poison: true})
		p, err := cc.Reserve(ctx, 1, 8)
		require.NoError(t, err)
		copy(p, "original")
		require.NoError(t, cc.Commit())
		assert.Equal(t, bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 2), p, "a sent buffer reads as poison")
		p[3] = 'X'
		_, err = cc.Reserve(ctx, 1, 8)
		assert.ErrorIs(t, err, broker.ErrBufferReused)
		_, data := recv(t, sc)
		assert.Equal(t, "original", data, "the peer got the message as it was sent")
		// Reported once; the connection goes on.
		q, err := cc.Reserve(ctx, 1, 4)
		require.NoError(t, err)
		copy(q, "next")
		require.NoError(t, cc.Commit())
		_, data = recv(t, sc)
		assert.Equal(t, "next", data)
	})
	t.Run("after Commit, Send and Close", func(t *testing.T) {
		_, cc, _ := pair(t, broker.Options{Dir: testDir(t), Poison: true})
		p, err := cc.Reserve(ctx, 1, 4)
		require.NoError(t, err)
		require.NoError(t, cc.Commit())
		p[0] = 1
		assert.ErrorIs(t, cc.Send(ctx, 1, []byte("x")), broker.ErrBufferReused)
		p[1] = 1
		assert.ErrorIs(t, cc.Close(), broker.ErrBufferReused)
	})
	t.Run("after Abort", func(t *testing.T) {
		_, cc, _ := pair(t, broker.Options{Dir: testDir(t), Poison: true})
		p, err := cc.Reserve(ctx, 1, 4)
		require.NoError(t, err)
		cc.Abort()
		p[2] = 1
		_, err = cc.Reserve(ctx, 1, 4)
		assert.ErrorIs(t, err, broker.ErrBufferReused)
	})
	t.Run("batch: after a later Reserve, Commit sends nothing", func(t *testing.T) {
		_, cc, sc := pair(t, broker.Options{Dir: testDir(t), Poison: true})
		a, err := cc.Reserve(ctx, 1, 1)
		require.NoError(t, err)
		a[0] = 'a'
		b, err := cc.Reserve(ctx, 1, 1)
		require.NoError(t, err)
		b[0] = 'b'
		a[0] = 'A' // too late: the second Reserve gave it back
		assert.ErrorIs(t, cc.Commit(), broker.ErrBufferReused)
		require.NoError(t, cc.Send(ctx, 2, []byte("after")))
		_, data := recv(t, sc)
		assert.Equal(t, "after", data, "the batch with the misused buffer was dropped")
	})
	t.Run("correct use reports nothing", func(t *testing.T) {
		_, cc, sc := pair(t, broker.Options{Dir: testDir(t), Poison: true})
		for i := range 200 {
			p, err := cc.Reserve(ctx, 1, 100)
			require.NoError(t, err)
			for j := range p {
				p[j] = byte(i + j)
			}
			require.NoError(t, cc.Commit())
			rec, err := sc.Recv(ctx)
			require.NoError(t, err)
			for j, v := range rec.Data {
				if v != byte(i+j) {
					t.Fatalf("record %d byte %d: %d", i, j, v)
				}
			}
			sc.Release()
		}
		assert.NoError(t, cc.Close())
	})
}

// TestPoisonCloseWakesReserve: with Poison, a Reserve waiting for room (the peer reads
// nothing) returns ring.ErrClosed when another goroutine closes the connection.
func TestPoisonCloseWakesReserve(t *testing.T) {
	_, cc, _ := pair(t, broker.Options{Dir: testDir(t), Poison: true, RingSize: 4096})
	ctx := context.Background()
	for {
		p, err := cc.Reserve(ctx, 1, 1000)
		require.NoError(t, err)
		p[0] = 1
		require.NoError(t, cc.Commit())
		if !cc.Writer().Ready(1000) {
			break
		}
	}
	done := make(chan error, 1)
	go func() { _, err := cc.Reserve(ctx, 1, 1000); done <- err }()
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, cc.Close())
	select {
	case err := <-done:
		assert.ErrorIs(t, err, ring.ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not wake a Reserve waiting for room")
	}
}
