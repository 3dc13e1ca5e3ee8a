package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func TestStatPeersAcrossProcesses(t *testing.T) {
	dir := testDir(t)
	_, _, status := shmctl(t, dir, "create", "orders", "--kind", "spsc", "--size", "64KiB")
	require.Equal(t, 0, status)
	holder := startHolder(t, dir, "orders")
	before, err := os.ReadFile(filepath.Join(dir, "orders"))
	require.NoError(t, err)

	stdout, stderr, status := shmctl(t, dir, "stat", "orders", "--json") // flag after the name
	require.Equal(t, 0, status, stderr)
	var r statReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &r))
	assert.Equal(t, "spsc", r.Kind)
	assert.Equal(t, "2.0", r.Version)
	assert.Equal(t, "0600", r.Mode)
	assert.Equal(t, []string{"writer"}, r.RolesHeld)
	require.Len(t, r.Peers, 1)
	assert.Equal(t, holder.Pid(), r.Peers[0].PID)
	assert.True(t, r.Peers[0].Alive)
	assert.Equal(t, "writer", r.Peers[0].Role, "the holder process has a ring writer")
	assert.Equal(t, 1, r.Peers[0].Writers)

	stdout, _, status = shmctl(t, dir, "stat", "orders")
	require.Equal(t, 0, status)
	assert.Contains(t, stdout, "roles held  [writer]")
	assert.Contains(t, stdout, "1 alive, 0 dead")

	holder.Kill()
	_ = holder.Wait(20 * time.Second)
	stdout, _, status = shmctl(t, dir, "stat", "orders", "--json")
	require.Equal(t, 0, status)
	r = statReport{}
	require.NoError(t, json.Unmarshal([]byte(stdout), &r))
	require.Len(t, r.Peers, 1)
	assert.False(t, r.Peers[0].Alive, "killed peer reads dead")
	assert.Empty(t, r.RolesHeld, "its role is free")

	after, err := os.ReadFile(filepath.Join(dir, "orders"))
	require.NoError(t, err)
	assert.Equal(t, before, after, "stat changed nothing")
}

// TestStatJSONFields pins the field names documented in the README.
func TestStatJSONFields(t *testing.T) {
	dir := testDir(t)
	_, _, status := shmctl(t, dir, "create", "s", "--kind", "mpmc", "--size", "64KiB")
	require.Equal(t, 0, status)
	startHolder(t, dir, "s")
	stdout, _, status := shmctl(t, dir, "stat", "--json", "s")
	require.Equal(t, 0, status)
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &m))
	assert.Equal(t, []string{"created", "creator_pid", "data_offset", "data_size", "gid", "kind", "mode", "name",
		"path", "peers", "processes", "processes_alive", "processes_dead", "ring", "roles_held", "slot_count", "slot_size",
		"uid", "version"}, keys(m))
	assert.Equal(t, []string{"capacity", "dead_sleepers", "kind", "read_pos", "readers", "readers_asleep", "readers_open",
		"roles_held", "slot_size", "used", "write_pos", "writer_state", "writers", "writers_asleep", "writers_open"},
		keys(m["ring"].(map[string]any)))
	assert.Equal(t, []string{"bytes", "drops", "empty", "full", "futex_waits", "futex_wakes", "late_wakes", "messages", "rejected"},
		keys(m["ring"].(map[string]any)["writers"].(map[string]any)))
	peers := m["peers"].([]any)
	require.Len(t, peers, 1)
	assert.Equal(t, []string{"alive", "attached", "index", "pid", "readers", "role", "writers"}, keys(peers[0].(map[string]any)))
	procs := m["processes"].([]any)
	require.Len(t, procs, 1)
	assert.Equal(t, []string{"alive", "attached", "entries", "pid", "readers", "role", "writers"}, keys(procs[0].(map[string]any)))
}

// TestStatBadFiles: whatever is in the file, stat prints one line naming the segment and the
// cause and exits 1.
func TestStatBadFiles(t *testing.T) {
	dir := testDir(t)
	_, _, status := shmctl(t, dir, "create", "orders", "--kind", "spsc", "--size", "64KiB")
	require.Equal(t, 0, status)
	corruptChecksum(t, filepath.Join(dir, "orders"))
	_, stderr, status := shmctl(t, dir, "stat", "orders")
	assert.Equal(t, 1, status)
	oneLine(t, stderr)
	assert.Contains(t, stderr, "shmctl: stat orders: segment is corrupt: checksum mismatch")

	garbage := make([]byte, 70000)
	for i := range garbage {
		garbage[i] = byte(i * 7)
	}
	copy(garbage, "SHMQSEG\x00")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "garbage"), garbage, 0o600))
	_, stderr, status = shmctl(t, dir, "stat", "garbage")
	assert.Equal(t, 1, status)
	oneLine(t, stderr)
	assert.Contains(t, stderr, "shmctl: stat garbage: ")

	_, stderr, status = shmctl(t, dir, "stat", "missing")
	assert.Equal(t, 1, status)
	oneLine(t, stderr)
	assert.Contains(t, stderr, "shmctl: stat missing: file does not exist")
}

// TestStatShowsRejected: records a reader rejected are counted, and stat says so, with the
// endpoints attached.
func TestStatShowsRejected(t *testing.T) {
	dir := testDir(t)
	seg, err := ring.Create("q", ring.Spec{Kind: ring.MPMC, Size: 4096, SlotSize: 64}, shm.Options{Dir: dir})
	require.NoError(t, err)
	defer seg.Close()
	w, err := ring.NewWriter(seg, ring.Options{})
	require.NoError(t, err)
	r, err := ring.NewReader(seg, ring.Options{})
	require.NoError(t, err)
	require.NoError(t, w.TryWrite(1, []byte("bad")))
	_, err = r.TryNext()
	require.NoError(t, err)
	r.Reject()
	stdout, stderr, status := shmctl(t, dir, "stat", "q")
	require.Equal(t, 0, status, stderr)
	assert.Contains(t, stdout, "rejected    1 records refused by readers")
	assert.Contains(t, stdout, "attached (1 writers, 1 readers attached)")
}

// TestStatTopic: a topic's policy, published count, oldest record held, lock holder and
// subscriptions (a durable one in another process, an anonymous one here), in text and
// JSON, and the counters ReadStats gives.
func TestStatTopic(t *testing.T) {
	dir := testDir(t)
	_, stderr, status := shmctl(t, dir, "create", "events", "--kind", "topic", "--size", "4KiB", "--slot", "256")
	require.Equal(t, 0, status, stderr)
	seg, err := shm.Open("events", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer seg.Close()
	durable := startSubscriber(t, dir, "events", "audit")
	sub, err := ring.Subscribe(context.Background(), seg, ring.SubscribeOptions{})
	require.NoError(t, err)
	defer sub.Close()
	p, err := ring.NewPublisher(seg, ring.Options{})
	require.NoError(t, err)
	defer p.Close()
	for i := range 5 {
		require.NoError(t, p.TryWrite(uint32(i), []byte("event")))
	}
	for range 2 {
		_, err := sub.TryNext()
		require.NoError(t, err)
	}
	sub.Release()
	_, err = p.TryReserve(9, 5) // holds the topic lock until Commit
	require.NoError(t, err)

	stdout, stderr, status := shmctl(t, dir, "stat", "events", "--json")
	require.Equal(t, 0, status, stderr)
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &m))
	assert.Equal(t, []string{"lock_holder_pid", "oldest", "policy", "published", "slot_size", "slots", "subscriptions"},
		keys(m["topic"].(map[string]any)))
	var r statReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &r))
	require.NotNil(t, r.Topic)
	assert.Equal(t, "topic", r.Kind)
	assert.Equal(t, "block", r.Topic.Policy)
	assert.EqualValues(t, 5, r.Topic.Published)
	assert.EqualValues(t, 0, r.Topic.Oldest)
	assert.EqualValues(t, 16, r.Topic.Slots)
	assert.Equal(t, os.Getpid(), r.Topic.LockHolderPID)
	require.Len(t, r.Topic.Subscriptions, 2)
	audit, anon := r.Topic.Subscriptions[0], r.Topic.Subscriptions[1]
	assert.Equal(t, "audit", audit.Name)
	assert.Equal(t, durable.Pid(), audit.PID)
	assert.True(t, audit.Alive)
	assert.EqualValues(t, 0, audit.Position)
	assert.EqualValues(t, 5, audit.Lag)
	assert.Empty(t, anon.Name)
	assert.Equal(t, os.Getpid(), anon.PID)
	assert.EqualValues(t, 2, anon.Position)
	assert.EqualValues(t, 3, anon.Lag)
	assert.Equal(t, 1, r.Ring.WritersOpen)
	assert.Equal(t, 2, r.Ring.ReadersOpen)
	assert.EqualValues(t, 5, r.Ring.Writers.Messages)
	assert.EqualValues(t, 2, r.Ring.Readers.Messages)
	roles := map[int]string{}
	for _, peer := range r.Peers {
		roles[peer.PID] = peer.Role
	}
	assert.Equal(t, map[int]string{os.Getpid(): "publisher+subscriber", durable.Pid(): "subscriber"}, roles)

	stdout, _, status = shmctl(t, dir, "stat", "events")
	require.Equal(t, 0, status)
	assert.Contains(t, stdout, "policy      block")
	assert.Contains(t, stdout, "published   5 records, oldest held 0")
	assert.Contains(t, stdout, fmt.Sprintf("lock        held by pid %d", os.Getpid()))
	assert.Contains(t, stdout, "attached (1 publishers, 2 subscribers attached)")
	assert.Contains(t, stdout, "written     5 messages")
	assert.Contains(t, stdout, "read        2 messages")
	assert.Regexp(t, `SUB\s+NAME\s+PID\s+ALIVE\s+POSITION\s+LAG\s+MISSED`, stdout)
	assert.Regexp(t, fmt.Sprintf(`0\s+audit\s+%d\s+yes\s+0\s+5\s+0`, durable.Pid()), stdout)
	assert.Regexp(t, fmt.Sprintf(`1\s+-\s+%d\s+yes\s+2\s+3\s+0`, os.Getpid()), stdout)
	assert.NotContains(t, stdout, "fill")

	require.NoError(t, p.Commit())
	durable.Kill()
	_ = durable.Wait(20 * time.Second)
	stdout, _, status = shmctl(t, dir, "stat", "events")
	require.Equal(t, 0, status)
	assert.Contains(t, stdout, "lock        free")
	assert.Contains(t, stdout, "published   6 records")
	assert.Regexp(t, fmt.Sprintf(`0\s+audit\s+%d\s+no\s+0\s+6\s+0`, durable.Pid()), stdout, "its process died; nobody reaped it yet")
}

// TestStatCountsProcesses: stat counts processes, not peer entries: this process with the
// segment open three times is one process, a killed holder one dead process.
func TestStatCountsProcesses(t *testing.T) {
	dir := testDir(t)
	_, _, status := shmctl(t, dir, "create", "q", "--kind", "mpmc", "--size", "64KiB")
	require.Equal(t, 0, status)
	for range 3 {
		seg, err := shm.Open("q", shm.Options{Dir: dir})
		require.NoError(t, err)
		t.Cleanup(func() { seg.Close() })
	}
	holder := startHolder(t, dir, "q")
	holderPID := holder.Pid()
	holder.Kill()
	_ = holder.Wait(20 * time.Second)

	stdout, stderr, status := shmctl(t, dir, "stat", "q", "--json")
	require.Equal(t, 0, status, stderr)
	var r statReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &r))
	assert.Len(t, r.Peers, 4, "four entries")
	assert.Equal(t, 1, r.ProcessesAlive)
	assert.Equal(t, 1, r.ProcessesDead)
	require.Len(t, r.Processes, 2)
	assert.Equal(t, os.Getpid(), r.Processes[0].PID)
	assert.True(t, r.Processes[0].Alive)
	assert.Len(t, r.Processes[0].Entries, 3)
	assert.Equal(t, holderPID, r.Processes[1].PID)
	assert.False(t, r.Processes[1].Alive)
	assert.Equal(t, "writer", r.Processes[1].Role)

	stdout, _, status = shmctl(t, dir, "stat", "q")
	require.Equal(t, 0, status)
	assert.Contains(t, stdout, "processes   1 alive, 1 dead (4 peer entries)")
	assert.Regexp(t, fmt.Sprintf(`\n  %d\s+alive\s+handle\s+\d+,\d+,\d+\s`, os.Getpid()), stdout)
	assert.Regexp(t, fmt.Sprintf(`\n  %d\s+dead\s+writer\s+\d+\s`, holderPID), stdout)
}

// TestStatDeadSleeper: a reader process asleep in the ring shows as asleep; once killed it
// does not, though its waiting mark stays until a live peer clears it.
func TestStatDeadSleeper(t *testing.T) {
	dir := testDir(t)
	_, _, status := shmctl(t, dir, "create", "q", "--kind", "spsc", "--size", "64KiB")
	require.Equal(t, 0, status)
	p := proctest.Start(t, "sleeper", proctest.Options{Args: []string{dir, "q"}})
	p.WaitPoint("reading", 20*time.Second)
	var r statReport
	require.Eventually(t, func() bool {
		stdout, _, status := shmctl(t, dir, "stat", "q", "--json")
		r = statReport{}
		return status == 0 && json.Unmarshal([]byte(stdout), &r) == nil && r.Ring.ReadersAsleep == 1
	}, 20*time.Second, 5*time.Millisecond, "the reader goes to sleep")
	stdout, _, status := shmctl(t, dir, "stat", "q")
	require.Equal(t, 0, status)
	assert.Contains(t, stdout, "asleep      1 process with a reader, 0 processes with a writer\n")

	p.Kill()
	_ = p.Wait(20 * time.Second)
	stdout, _, status = shmctl(t, dir, "stat", "q", "--json")
	require.Equal(t, 0, status)
	r = statReport{}
	require.NoError(t, json.Unmarshal([]byte(stdout), &r))
	assert.Zero(t, r.Ring.ReadersAsleep, "a dead process is not asleep")
	assert.Equal(t, 1, r.Ring.DeadSleepers)
	stdout, _, status = shmctl(t, dir, "stat", "q")
	require.Equal(t, 0, status)
	assert.Contains(t, stdout, "asleep      0 processes with a reader, 0 processes with a writer; 1 waiting mark left by processes that died asleep")
	assert.Contains(t, stdout, "processes   0 alive, 1 dead")
}
