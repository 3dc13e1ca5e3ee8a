package dlq

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A slot whose state word says Ready but carries holder bits (no peer writes that) must not
// make Take spin: it used to be seen as the oldest ready entry, whose CAS from the plain
// Ready word could never succeed, and claim looked again forever.
func TestReviewCorruptReadyWordDoesNotHangTake(t *testing.T) {
	for _, w := range []uint64{stateReady | 5<<8, stateReady | 1234<<32, stateReady | 1<<20} {
		q, opts := newQueue(t, Config{Capacity: 8})
		for i := range 2 {
			require.NoError(t, q.Put(entry(i)))
		}
		var victim = -1
		for i := range q.Cap() {
			if atomic.LoadUint64(q.seq(uint64(i))) == 1 {
				victim = i
			}
		}
		require.GreaterOrEqual(t, victim, 0)
		f, err := os.OpenFile(filepath.Join(opts.Dir, "dlq"), os.O_RDWR, 0)
		require.NoError(t, err)
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], w)
		_, err = f.WriteAt(b[:], slotOffset(q, victim))
		require.NoError(t, err)
		f.Close()

		type result struct {
			got []string
			err error
		}
		done := make(chan result, 1)
		go func() {
			var got []string
			_, err := q.Replay(context.Background(), func(e Entry) error { got = append(got, string(e.Data)); return nil })
			done <- result{got, err}
		}()
		select {
		case r := <-done:
			require.NoError(t, r.err)
			assert.Equal(t, []string{"event-0001"}, r.got, "the good entry is replayed, the bad slot passed over (word %#x)", w)
		case <-time.After(20 * time.Second):
			t.Fatalf("Replay hangs on a slot with state word %#x", w)
		}
		assert.ErrorIs(t, q.Take(func(Entry) error { return nil }), ErrEmpty)
		_, err = q.Len()
		assert.ErrorIs(t, err, ErrCorrupt, "Len still reports the bad word")
	}
}

// The liveness of a scan lists the peer table once; a holder that registered after that
// listing and then took a slot the scan reaches later must not be judged dead from the old
// listing: its entry would be made Ready again and handed to a second taker while it runs.
func TestReviewHolderNewerThanPeerListingIsAlive(t *testing.T) {
	a, opts := newQueue(t, Config{Capacity: 8})
	require.NoError(t, a.Put(entry(1)))

	live := liveness{q: a}
	live.alive(a.peer+1, 999999) // a scan meets some other holder first: the table is listed now

	b, err := Open("dlq", opts) // a new peer, in a peer entry unused at the listing
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	require.NotEqual(t, a.peer, b.peer)
	i, _, err := b.claim(^uint64(0))
	require.NoError(t, err)

	w := atomic.LoadUint64(a.state(i))
	state, _, _, _ := unpackState(w)
	require.Equal(t, uint64(stateTaken), state)
	assert.Equal(t, uint64(stateTaken), a.repair(i, w, &live), "b is running: its slot stays Taken")
	st, err := a.Stats()
	require.NoError(t, err)
	assert.Zero(t, st.Recovered)
	assert.NoError(t, b.finish(i, 1, nil), "b removes the entry it was handed")
}
