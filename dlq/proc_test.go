package dlq

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/shm"
)

func TestMain(m *testing.M) {
	proctest.Register("putter", runPutter)
	proctest.Register("replayer", runReplayer)
	proctest.Register("attacher", runAttacher)
	proctest.Main(m)
}

// runPutter puts Args[2] entries into DLQ Args[1] in dir Args[0], as putter Args[3]:
// Origin "pID", Data "pID-I".
func runPutter(c *proctest.Child) error {
	q, err := Open(c.Args[1], shm.Options{Dir: c.Args[0]})
	if err != nil {
		return err
	}
	defer q.Close()
	n, _ := strconv.Atoi(c.Args[2])
	id := c.Args[3]
	c.Point("open")
	for i := range n {
		e := Entry{Origin: "p" + id, Type: uint32(i), Attempts: 3, Err: "failed", Data: []byte(fmt.Sprintf("p%s-%d", id, i))}
		if err := q.Put(e); err != nil {
			return fmt.Errorf("put %d: %w", i, err)
		}
	}
	return nil
}

// replayResult is what a replayer reports.
type replayResult struct {
	Listed   []string // Data of the listed entries, in List order
	Replayed []string // Data of the replayed entries, in order
}

// runReplayer lists DLQ Args[1] in dir Args[0], then replays it. In each replay call it
// reports Point("fn-K") for the K-th entry (from 0) before accepting it, so that the
// parent can have it killed there.
func runReplayer(c *proctest.Child) error {
	q, err := Open(c.Args[1], shm.Options{Dir: c.Args[0]})
	if err != nil {
		return err
	}
	defer q.Close()
	var res replayResult
	list, err := q.List()
	if err != nil {
		return err
	}
	for _, e := range list {
		res.Listed = append(res.Listed, string(e.Data))
	}
	k := 0
	_, err = q.Replay(context.Background(), func(e Entry) error {
		c.Point(fmt.Sprint("fn-", k))
		k++
		res.Replayed = append(res.Replayed, string(e.Data))
		return nil
	})
	if err != nil {
		return err
	}
	return c.Result(res)
}

// runAttacher opens DLQ Args[1] in dir Args[0], reports its peer entry and pid, and
// waits to be killed.
func runAttacher(c *proctest.Child) error {
	q, err := Open(c.Args[1], shm.Options{Dir: c.Args[0]})
	if err != nil {
		return err
	}
	if err := c.Result([2]int{q.peer, os.Getpid()}); err != nil {
		return err
	}
	c.Point("attached")
	select {}
}

func TestProcPutConcurrentlyThenListAndReplay(t *testing.T) {
	const perPutter = 300
	q, opts := newQueue(t, Config{Capacity: 2 * perPutter, MaxEntry: 100})
	a := proctest.Start(t, "putter", proctest.Options{Args: []string{opts.Dir, "dlq", strconv.Itoa(perPutter), "1"}})
	b := proctest.Start(t, "putter", proctest.Options{Args: []string{opts.Dir, "dlq", strconv.Itoa(perPutter), "2"}})
	require.NoError(t, a.Wait(60*time.Second))
	require.NoError(t, b.Wait(60*time.Second))

	r := proctest.Start(t, "replayer", proctest.Options{Args: []string{opts.Dir, "dlq"}})
	var res replayResult
	require.NoError(t, r.Result(0, &res, 60*time.Second))
	require.NoError(t, r.Wait(60*time.Second))

	for name, got := range map[string][]string{"listed": res.Listed, "replayed": res.Replayed} {
		require.Len(t, got, 2*perPutter, name)
		next := map[byte]int{'1': 0, '2': 0}
		for _, s := range got {
			var id byte
			var i int
			_, err := fmt.Sscanf(s, "p%c-%d", &id, &i)
			require.NoError(t, err, s)
			assert.Equal(t, next[id], i, "%s: each putter's entries in its order", name)
			next[id] = i + 1
		}
		assert.Equal(t, map[byte]int{'1': perPutter, '2': perPutter}, next, name)
	}
	assert.Equal(t, res.Listed, res.Replayed, "replayed in the order listed")
	n, err := q.Len()
	require.NoError(t, err)
	assert.Zero(t, n)
	st, err := q.Stats()
	require.NoError(t, err)
	assert.Equal(t, uint64(2*perPutter), st.Puts)
	assert.Equal(t, uint64(2*perPutter), st.Taken)
}

func TestProcKilledMidReplayLosesNothing(t *testing.T) {
	const total, killAt = 20, 5
	q, opts := newQueue(t, Config{Capacity: 32})
	for i := range total {
		require.NoError(t, q.Put(entry(i)))
	}
	r := proctest.Start(t, "replayer", proctest.Options{Args: []string{opts.Dir, "dlq"}, KillAt: fmt.Sprint("fn-", killAt)})
	r.WaitPoint(fmt.Sprint("fn-", killAt), 60*time.Second)
	_ = r.Wait(60 * time.Second)
	require.True(t, r.Killed())

	// The entry the replayer held is listed, taken by a dead process; the ones it had
	// accepted are gone.
	list, err := q.List()
	require.NoError(t, err)
	require.Len(t, list, total-killAt)
	assert.Equal(t, fmt.Sprintf("event-%04d", killAt), string(list[0].Data))
	assert.Equal(t, Taken, list[0].State)
	assert.Equal(t, r.Pid(), list[0].HolderPID)
	assert.True(t, list[0].HolderDead)
	n, err := q.Len()
	require.NoError(t, err)
	assert.Equal(t, total-killAt, n)

	var got []string
	n, err = q.Replay(context.Background(), func(e Entry) error { got = append(got, string(e.Data)); return nil })
	require.NoError(t, err)
	assert.Equal(t, total-killAt, n)
	for i, s := range got {
		assert.Equal(t, fmt.Sprintf("event-%04d", killAt+i), s, "the dead replayer's entry first, none lost")
	}
	st, err := q.Stats()
	require.NoError(t, err)
	assert.Equal(t, uint64(1), st.Recovered)
	assert.Equal(t, uint64(total), st.Taken)
}

// TestProcPutterDeathFreesSlot: a slot left Writing by a process that died (a Put killed
// between claiming the slot and publishing it) is freed by a Put that finds the queue
// full; one held by a live process is not.
func TestProcPutterDeathFreesSlot(t *testing.T) {
	q, opts := newQueue(t, Config{Capacity: 16, MaxEntry: 100})
	for i := range q.Cap() {
		require.NoError(t, q.Put(entry(i)))
	}
	require.NoError(t, q.Take(func(Entry) error { return nil }))
	free := -1
	for i := range q.Cap() {
		if atomic.LoadUint64(q.state(uint64(i))) == stateFree {
			free = i
		}
	}
	require.GreaterOrEqual(t, free, 0)

	p := proctest.Start(t, "attacher", proctest.Options{Args: []string{opts.Dir, "dlq"}})
	var who [2]int
	require.NoError(t, p.Result(0, &who, 60*time.Second))
	p.WaitPoint("attached", 60*time.Second)
	// What a Put of that process leaves when it dies between its claim and its publish.
	atomic.StoreUint64(q.state(uint64(free)), stateWord(stateWriting, who[0], who[1]))
	assert.ErrorIs(t, q.Put(entry(100)), ErrFull, "the writer is alive: its slot is not taken from it")

	p.Kill()
	_ = p.Wait(60 * time.Second)
	require.NoError(t, q.Put(entry(101)), "the writer is dead: its slot is freed")
	st, err := q.Stats()
	require.NoError(t, err)
	assert.Equal(t, uint64(1), st.Abandoned)
	assert.Equal(t, uint64(1), st.Full)
	list, err := q.List()
	require.NoError(t, err)
	assert.Len(t, list, q.Cap())
	assert.Equal(t, "event-0101", string(list[len(list)-1].Data))
}
