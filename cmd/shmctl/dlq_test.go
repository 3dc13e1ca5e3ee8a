package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/dlq"
	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// dlqFixture makes DLQ "dead" with three entries from ring "orders" (the first two
// envelopes) and one from a ring that does not exist, and the MPMC ring "orders".
func dlqFixture(t *testing.T) (dir string, env []byte, id string) {
	t.Helper()
	dir = testDir(t)
	opts := shm.Options{Dir: dir}
	q, err := dlq.Create("dead", dlq.Config{Capacity: 16}, opts)
	require.NoError(t, err)
	defer q.Close()
	h, err := envelope.NewHeader("order.created", "checkout")
	require.NoError(t, err)
	env, err = h.Append(nil, []byte("order 42"))
	require.NoError(t, err)
	typ := envelope.TypeID("order.created")
	require.NoError(t, q.Put(dlq.Entry{Origin: "orders", Type: typ, Attempts: 5, Err: "db down\nretry later", Data: env}))
	require.NoError(t, q.Put(dlq.Entry{Origin: "orders", Type: typ, Attempts: 5, Err: "db down", Data: env}))
	require.NoError(t, q.Put(dlq.Entry{Origin: "gone", Type: 3, Attempts: 1, Err: "bad", Data: []byte("raw")}))
	seg, err := ring.Create("orders", ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 256}, opts)
	require.NoError(t, err)
	seg.Close()
	return dir, env, h.ID.String()
}

func TestDLQList(t *testing.T) {
	dir, _, id := dlqFixture(t)
	stdout, stderr, status := shmctl(t, dir, "dlq", "dead")
	require.Equal(t, 0, status, stderr)
	assert.Contains(t, stdout, "SEQ")
	assert.Contains(t, stdout, "order.created "+id)
	assert.Contains(t, stdout, "db down retry later", "the error on one line")
	assert.Contains(t, stdout, "type 3")
	assert.Contains(t, stdout, "3 entries (capacity 16)")

	stdout, stderr, status = shmctl(t, dir, "dlq", "dead", "list", "--json")
	require.Equal(t, 0, status, stderr)
	var got []dlqEntry
	require.NoError(t, json.Unmarshal([]byte(stdout), &got))
	require.Len(t, got, 3)
	assert.Equal(t, uint64(1), got[0].Seq)
	assert.Equal(t, "ready", got[0].State)
	assert.Equal(t, "orders", got[0].Origin)
	assert.Equal(t, "order.created", got[0].EventType)
	assert.Equal(t, "checkout", got[0].Source)
	assert.Equal(t, id, got[0].EventID)
	assert.Equal(t, uint32(5), got[0].Attempts)
	assert.Equal(t, "db down\nretry later", got[0].Error)
	assert.Empty(t, got[2].EventType, "not an envelope")

	// Listing consumed nothing.
	stdout, _, _ = shmctl(t, dir, "dlq", "dead")
	assert.Contains(t, stdout, "3 entries")
}

func TestDLQReplayAndPurge(t *testing.T) {
	dir, env, _ := dlqFixture(t)
	stdout, stderr, status := shmctl(t, dir, "dlq", "dead", "replay", "--timeout", "100ms")
	assert.Equal(t, 1, status)
	assert.Equal(t, "replayed 2 entries from dead\n", stdout)
	oneLine(t, stderr)
	assert.Contains(t, stderr, "dlq replay dead:")
	assert.Contains(t, stderr, "gone")

	seg, err := shm.Open("orders", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer seg.Close()
	r, err := ring.NewMPMCReader(seg, ring.Options{})
	require.NoError(t, err)
	defer r.Close()
	for range 2 {
		buf := make([]byte, 256)
		n, typ, err := r.TryRead(buf)
		require.NoError(t, err)
		assert.Equal(t, envelope.TypeID("order.created"), typ)
		assert.Equal(t, env, buf[:n], "the envelope goes back byte for byte")
	}
	stdout, _, _ = shmctl(t, dir, "dlq", "dead")
	assert.Contains(t, stdout, "1 entries", "the entry that could not be replayed stays")

	// --to sends everything to one ring.
	stdout, stderr, status = shmctl(t, dir, "dlq", "dead", "replay", "--to", "orders")
	require.Equal(t, 0, status, stderr)
	assert.Equal(t, "replayed 1 entries from dead\n", stdout)
	buf := make([]byte, 256)
	n, typ, err := r.TryRead(buf)
	require.NoError(t, err)
	assert.Equal(t, uint32(3), typ)
	assert.Equal(t, "raw", string(buf[:n]))

	q, err := dlq.Open("dead", shm.Options{Dir: dir})
	require.NoError(t, err)
	for range 4 {
		require.NoError(t, q.Put(dlq.Entry{Data: []byte("x"), DeadAt: time.Now()}))
	}
	q.Close()
	stdout, stderr, status = shmctl(t, dir, "dlq", "dead", "purge")
	require.Equal(t, 0, status, stderr)
	assert.Equal(t, "purged 4 entries from dead\n", stdout)
	stdout, _, _ = shmctl(t, dir, "dlq", "dead")
	assert.Contains(t, stdout, "0 entries")
}

func TestDLQErrors(t *testing.T) {
	dir, _, _ := dlqFixture(t)
	for _, args := range [][]string{
		{"dlq"},
		{"dlq", "dead", "explode"},
		{"dlq", "dead", "purge", "--json"},
		{"dlq", "dead", "list", "--to", "x"},
		{"dlq", "dead", "replay", "--timeout", "0s"},
	} {
		_, _, status := shmctl(t, dir, args...)
		assert.Equal(t, 2, status, "%v", args)
	}
	_, stderr, status := shmctl(t, dir, "dlq", "missing")
	assert.Equal(t, 1, status)
	oneLine(t, stderr)
	_, stderr, status = shmctl(t, dir, "dlq", "orders")
	assert.Equal(t, 1, status)
	assert.Contains(t, stderr, "kind")
}
