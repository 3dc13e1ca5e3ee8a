package dlq

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

func newQueue(t *testing.T, c Config) (*Queue, shm.Options) {
	t.Helper()
	opts := shm.Options{Dir: t.TempDir()}
	q, err := Create("dlq", c, opts)
	require.NoError(t, err)
	t.Cleanup(func() { q.Close() })
	return q, opts
}

func entry(i int) Entry {
	return Entry{Origin: "orders.q", Type: 7, Attempts: uint32(i % 5), Err: fmt.Sprint("handler failed #", i),
		DeadAt: time.Unix(1700000000, int64(i)), Data: []byte(fmt.Sprintf("event-%04d", i))}
}

func TestPutListTakeInOrder(t *testing.T) {
	q, _ := newQueue(t, Config{Capacity: 16, MaxEntry: 200})
	assert.Equal(t, 16, q.Cap())
	for i := range 10 {
		require.NoError(t, q.Put(entry(i)))
	}
	n, err := q.Len()
	require.NoError(t, err)
	assert.Equal(t, 10, n)

	list, err := q.List()
	require.NoError(t, err)
	require.Len(t, list, 10)
	for i, e := range list {
		want := entry(i)
		assert.Equal(t, uint64(i+1), e.Seq)
		assert.Equal(t, want.Origin, e.Origin)
		assert.Equal(t, want.Type, e.Type)
		assert.Equal(t, want.Attempts, e.Attempts)
		assert.Equal(t, want.Err, e.Err)
		assert.True(t, want.DeadAt.Equal(e.DeadAt))
		assert.Equal(t, want.Data, e.Data)
		assert.Equal(t, Ready, e.State)
	}
	again, err := q.List()
	require.NoError(t, err)
	assert.Equal(t, list, again, "List consumes nothing")

	// Take hands out the oldest; a failing fn leaves it first.
	boom := errors.New("boom")
	err = q.Take(func(e Entry) error {
		assert.Equal(t, []byte("event-0000"), e.Data)
		inside, _ := q.List()
		assert.Equal(t, Taken, inside[0].State, "List shows a taken entry")
		assert.Equal(t, os.Getpid(), inside[0].HolderPID)
		assert.False(t, inside[0].HolderDead)
		return boom
	})
	assert.ErrorIs(t, err, boom)
	var got []string
	require.NoError(t, q.Take(func(e Entry) error { got = append(got, string(e.Data)); return nil }))
	assert.Equal(t, []string{"event-0000"}, got, "a failed Take gives the entry back, still oldest")

	n, err = q.Replay(context.Background(), func(e Entry) error { got = append(got, string(e.Data)); return nil })
	require.NoError(t, err)
	assert.Equal(t, 9, n)
	require.Len(t, got, 10)
	for i, s := range got {
		assert.Equal(t, fmt.Sprintf("event-%04d", i), s)
	}
	assert.ErrorIs(t, q.Take(func(Entry) error { return nil }), ErrEmpty)
	st, err := q.Stats()
	require.NoError(t, err)
	assert.Equal(t, Stats{Len: 0, Cap: 16, Puts: 10, Taken: 10, Returned: 1}, st)
}

func TestReplayStopsAtFirstError(t *testing.T) {
	q, _ := newQueue(t, Config{Capacity: 8})
	for i := range 5 {
		require.NoError(t, q.Put(entry(i)))
	}
	boom := errors.New("destination gone")
	n, err := q.Replay(context.Background(), func(e Entry) error {
		if string(e.Data) == "event-0002" {
			return boom
		}
		return nil
	})
	assert.ErrorIs(t, err, boom)
	assert.Equal(t, 2, n)
	list, err := q.List()
	require.NoError(t, err)
	require.Len(t, list, 3)
	assert.Equal(t, "event-0002", string(list[0].Data), "the failed entry stays, oldest")
}

func TestReplayLeavesLaterPuts(t *testing.T) {
	q, _ := newQueue(t, Config{Capacity: 8})
	require.NoError(t, q.Put(entry(0)))
	require.NoError(t, q.Put(entry(1)))
	n, err := q.Replay(context.Background(), func(e Entry) error {
		return q.Put(entry(100 + int(e.Seq))) // a replay that fails again puts a new entry
	})
	require.NoError(t, err)
	assert.Equal(t, 2, n, "entries put during the replay wait for the next one")
	l, _ := q.Len()
	assert.Equal(t, 2, l)
}

func TestReplayContext(t *testing.T) {
	q, _ := newQueue(t, Config{Capacity: 8})
	for i := range 3 {
		require.NoError(t, q.Put(entry(i)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := q.Replay(ctx, func(Entry) error { cancel(); return nil })
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 1, n)
}

func TestFullAndTooLarge(t *testing.T) {
	q, _ := newQueue(t, Config{Capacity: 4, MaxEntry: 100})
	// MaxEntry rounds the slot up to a power of two: 100+48 -> 256 bytes, 208 of room.
	assert.Equal(t, 256-slotHeader-recordHeader, q.MaxEntry())
	// The data region is at least 4 KiB: 16 slots of 256.
	for i := range q.Cap() {
		require.NoError(t, q.Put(entry(i)))
	}
	assert.ErrorIs(t, q.Put(entry(99)), ErrFull)
	big := entry(0)
	big.Data = make([]byte, q.MaxEntry())
	assert.ErrorIs(t, q.Put(big), ErrTooLarge)
	big.Origin = string(make([]byte, MaxOriginLen+1))
	big.Data = nil
	assert.ErrorIs(t, q.Put(big), ErrTooLarge)

	n, err := q.Purge()
	require.NoError(t, err)
	assert.Equal(t, q.Cap(), n)
	l, _ := q.Len()
	assert.Zero(t, l)
	require.NoError(t, q.Put(entry(5)), "room again after Purge")
	st, _ := q.Stats()
	assert.Equal(t, uint64(1), st.Full)
	assert.Equal(t, uint64(q.Cap()), st.Purged)
}

func TestLongErrorCut(t *testing.T) {
	q, _ := newQueue(t, Config{Capacity: 4, MaxEntry: 2000})
	long := entry(1)
	long.Err = string(make([]byte, 5000))
	require.NoError(t, q.Put(long), "a long error text is cut, not refused")
	list, err := q.List()
	require.NoError(t, err)
	assert.Len(t, list[0].Err, MaxErrorLen)
	assert.Equal(t, long.Data, list[0].Data)
}

func TestInspectIsReadOnly(t *testing.T) {
	q, opts := newQueue(t, Config{Capacity: 8})
	require.NoError(t, q.Put(entry(1)))
	path := filepath.Join(opts.Dir, "dlq")
	before, err := os.ReadFile(path)
	require.NoError(t, err)

	ro, err := Inspect("dlq", opts)
	require.NoError(t, err)
	defer ro.Close()
	list, err := ro.List()
	require.NoError(t, err)
	require.Len(t, list, 1)
	n, err := ro.Len()
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.ErrorIs(t, ro.Put(entry(2)), ErrReadOnly)
	assert.ErrorIs(t, ro.Take(func(Entry) error { return nil }), ErrReadOnly)
	_, err = ro.Purge()
	assert.ErrorIs(t, err, ErrReadOnly)
	_, err = ro.Replay(context.Background(), func(Entry) error { return nil })
	assert.ErrorIs(t, err, ErrReadOnly)
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, before, after, "Inspect changed no byte")
}

func TestCloseWhileTaking(t *testing.T) {
	opts := shm.Options{Dir: t.TempDir()}
	q, err := Create("dlq", Config{Capacity: 8}, opts)
	require.NoError(t, err)
	require.NoError(t, q.Put(entry(1)))
	other, err := Open("dlq", opts)
	require.NoError(t, err)
	defer other.Close()

	inFn, release := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	go func() {
		done <- q.Take(func(Entry) error { close(inFn); <-release; return nil })
	}()
	<-inFn
	require.NoError(t, q.Close())
	close(release)
	assert.ErrorIs(t, <-done, ErrClosed, "Close won: the entry was given back")
	list, err := other.List()
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, Ready, list[0].State)
	assert.ErrorIs(t, q.Put(entry(2)), ErrClosed)
	_, err = q.List()
	assert.ErrorIs(t, err, ErrClosed)
	require.NoError(t, q.Close(), "Close again")
}

func TestTakePanicGivesBack(t *testing.T) {
	q, _ := newQueue(t, Config{Capacity: 8})
	require.NoError(t, q.Put(entry(1)))
	assert.Panics(t, func() { _ = q.Take(func(Entry) error { panic("handler bug") }) })
	list, err := q.List()
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, Ready, list[0].State)
}

// slotFile locates slot i of the DLQ file for tests that corrupt it.
func slotOffset(q *Queue, i int) int64 {
	return int64(layout.DataOffset) + int64(i)*int64(q.geo.slotSize)
}

func TestCorruptRecord(t *testing.T) {
	q, opts := newQueue(t, Config{Capacity: 8})
	for i := range 3 {
		require.NoError(t, q.Put(entry(i)))
	}
	// Flip a byte of the second entry's data in the file.
	var victim int = -1
	for i := range q.Cap() {
		if atomic.LoadUint64(q.seq(uint64(i))) == 2 {
			victim = i
		}
	}
	require.GreaterOrEqual(t, victim, 0)
	f, err := os.OpenFile(filepath.Join(opts.Dir, "dlq"), os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	off := slotOffset(q, victim) + slotHeader + recordHeader + 3
	b := make([]byte, 1)
	_, err = f.ReadAt(b, off)
	require.NoError(t, err)
	b[0] ^= 0x40
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)

	list, err := q.List()
	assert.ErrorIs(t, err, ErrCorrupt)
	assert.ErrorIs(t, err, shm.ErrCorrupt)
	assert.Len(t, list, 2, "the good entries are listed with the error")

	var got []string
	n, err := q.Replay(context.Background(), func(e Entry) error { got = append(got, string(e.Data)); return nil })
	assert.ErrorIs(t, err, ErrCorrupt, "reported")
	assert.Equal(t, 2, n, "and passed over")
	assert.Equal(t, []string{"event-0000", "event-0002"}, got)
	st, _ := q.Stats()
	assert.Equal(t, uint64(1), st.Corrupt)
	l, _ := q.Len()
	assert.Zero(t, l, "the corrupt entry was dropped")

	// A state word no peer writes.
	_, err = f.WriteAt([]byte{9, 0, 0, 0, 0, 0, 0, 0}, slotOffset(q, 0))
	require.NoError(t, err)
	_, err = q.Len()
	assert.ErrorIs(t, err, ErrCorrupt)
	_, err = q.List()
	assert.ErrorIs(t, err, ErrCorrupt)
	require.NoError(t, q.Put(entry(9)), "Put goes around the bad slot")
}

func TestOpenErrors(t *testing.T) {
	opts := shm.Options{Dir: t.TempDir()}
	_, err := Open("missing", opts)
	assert.ErrorIs(t, err, shm.ErrNotExist)

	// Another kind of segment.
	seg, err := shm.Create("other", shm.Spec{Kind: 99, DataSize: 4096}, opts)
	require.NoError(t, err)
	seg.Close()
	_, err = Open("other", opts)
	assert.ErrorIs(t, err, shm.ErrKind)

	// A DLQ whose params no creator writes: version, then slot size.
	for name, params := range map[string][2]uint64{
		"v9":   {9<<32 | 256, 0},
		"slot": {formatVersion<<32 | 100, 0},
		"big":  {formatVersion<<32 | 8192, 0},
		"p1":   {formatVersion<<32 | 256, 1},
	} {
		seg, err := shm.Create(name, shm.Spec{Kind: Kind, DataSize: 4096, Params: params}, opts)
		require.NoError(t, err)
		seg.Close()
		_, err = Open(name, opts)
		if name == "v9" {
			assert.ErrorIs(t, err, ErrVersion, name)
		} else {
			assert.ErrorIs(t, err, ErrCorrupt, name)
		}
		_, err = Inspect(name, opts)
		assert.Error(t, err, name)
	}

	_, err = Create("bad", Config{Capacity: -1}, opts)
	assert.ErrorIs(t, err, ErrInvalid)
	_, _, err = OpenOrCreate("bad", Config{MaxEntry: 1 << 30}, opts)
	assert.ErrorIs(t, err, ErrInvalid)

	q, created, err := OpenOrCreate("q", Config{Capacity: 32}, opts)
	require.NoError(t, err)
	assert.True(t, created)
	defer q.Close()
	q2, created, err := OpenOrCreate("q", Config{Capacity: 32}, opts)
	require.NoError(t, err)
	assert.False(t, created)
	q2.Close()
	_, _, err = OpenOrCreate("q", Config{Capacity: 64}, opts)
	assert.ErrorIs(t, err, shm.ErrMismatch)
}

func TestRecordRoundTripAndBounds(t *testing.T) {
	e := entry(3)
	buf := make([]byte, recordSize(&e))
	putRecord(buf, &e)
	got, err := parseRecord(buf)
	require.NoError(t, err)
	e.DeadAt = e.DeadAt.Local()
	got.DeadAt = got.DeadAt.Local()
	assert.Equal(t, e, got)

	le := binary.LittleEndian
	for name, mutate := range map[string]func(b []byte){
		"short":       func(b []byte) {},
		"length big":  func(b []byte) { le.PutUint32(b[recOffLength:], 1<<30) },
		"length tiny": func(b []byte) { le.PutUint32(b[recOffLength:], 3) },
		"origin":      func(b []byte) { le.PutUint16(b[recOffOrigin:], 300) },
		"sum":         func(b []byte) { le.PutUint32(b[recOffData:], 1) },
		"crc":         func(b []byte) { b[recordHeader] ^= 1 },
	} {
		b := append([]byte(nil), buf...)
		if name == "short" {
			b = b[:recordHeader-1]
		}
		mutate(b)
		_, err := parseRecord(b)
		assert.ErrorIs(t, err, ErrCorrupt, name)
	}
}

func FuzzParseRecord(f *testing.F) {
	e := entry(1)
	buf := make([]byte, recordSize(&e))
	putRecord(buf, &e)
	f.Add(buf)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseRecord(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		again := make([]byte, recordSize(&got))
		putRecord(again, &got)
		if string(again) != string(b[:len(again)]) {
			t.Fatalf("a record that parses re-encodes differently")
		}
	})
}

func FuzzStateWord(f *testing.F) {
	f.Add(uint64(0))
	f.Add(stateWord(stateTaken, 3, 1234))
	f.Fuzz(func(t *testing.T, w uint64) {
		state, peer, pid, ok := unpackState(w)
		if ok && stateWord(state, peer, pid) != w {
			t.Fatalf("word %#x accepted but packs back to %#x", w, stateWord(state, peer, pid))
		}
	})
}
