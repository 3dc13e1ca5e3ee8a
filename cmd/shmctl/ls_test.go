package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// corruptChecksum flips a byte inside the descriptor of a real segment file.
func corruptChecksum(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteAt([]byte{0x77}, 41)
	require.NoError(t, err)
}

func TestLsStates(t *testing.T) {
	dir := testDir(t)
	for _, n := range []string{"good", "bad"} {
		_, stderr, status := shmctl(t, dir, "create", n, "--kind", "spsc", "--size", "64KiB")
		require.Equal(t, 0, status, stderr)
	}
	corruptChecksum(t, filepath.Join(dir, "bad"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("hello\n"), 0o600))
	require.NoError(t, os.Symlink(filepath.Join(dir, "good"), filepath.Join(dir, "alias")))
	holder := startHolder(t, dir, "good")
	_ = holder

	stdout, stderr, status := shmctl(t, dir, "ls", "--json", "--all")
	require.Equal(t, 0, status, stderr)
	var rows []map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &rows))
	state := map[string]string{}
	for _, r := range rows {
		state[r["name"].(string)] = r["state"].(string)
	}
	assert.Equal(t, map[string]string{"good": "ok", "bad": "corrupt", "notes.txt": "foreign", "alias": "unsafe"}, state)
	for _, r := range rows {
		if r["name"] == "good" {
			assert.EqualValues(t, 1, r["peers_alive"])
			assert.EqualValues(t, 65536, r["data_size"])
			assert.Equal(t, "spsc", r["kind"])
		}
	}

	stdout, _, status = shmctl(t, dir, "ls", "--all")
	require.Equal(t, 0, status)
	assert.Regexp(t, `good\s+spsc\s+64KiB\s+1 alive\s+ok`, stdout)
	assert.Regexp(t, `bad\s+-\s+-\s+-\s+corrupt`, stdout)
	assert.Regexp(t, `notes.txt\s+-\s+-\s+-\s+foreign`, stdout)

	// Without --all: shmq segments only, the damaged one included.
	stdout, _, status = shmctl(t, dir, "ls")
	require.Equal(t, 0, status)
	assert.Regexp(t, `good\s+spsc\s+64KiB\s+1 alive\s+ok`, stdout)
	assert.Regexp(t, `bad\s+-\s+-\s+-\s+corrupt`, stdout)
	assert.NotContains(t, stdout, "notes.txt")
	assert.NotContains(t, stdout, "alias")
	stdout, _, status = shmctl(t, dir, "ls", "--json")
	require.Equal(t, 0, status)
	rows = nil
	require.NoError(t, json.Unmarshal([]byte(stdout), &rows))
	assert.Len(t, rows, 2, "good and bad")
}

// TestLsCountsProcesses: a process that has a segment open three times is one process; a
// process that died attached is one dead process.
func TestLsCountsProcesses(t *testing.T) {
	dir := testDir(t)
	_, stderr, status := shmctl(t, dir, "create", "q", "--kind", "mpmc", "--size", "64KiB")
	require.Equal(t, 0, status, stderr)
	for range 3 {
		seg, err := shm.Open("q", shm.Options{Dir: dir})
		require.NoError(t, err)
		t.Cleanup(func() { seg.Close() })
	}
	holder := startHolder(t, dir, "q")
	holder.Kill()
	_ = holder.Wait(20 * time.Second)

	stdout, _, status := shmctl(t, dir, "ls", "--json")
	require.Equal(t, 0, status)
	var rows []map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &rows))
	require.Len(t, rows, 1)
	assert.EqualValues(t, 3, rows[0]["peers_alive"], "entries")
	assert.EqualValues(t, 1, rows[0]["processes_alive"])
	assert.EqualValues(t, 1, rows[0]["peers_dead"])
	assert.EqualValues(t, 1, rows[0]["processes_dead"])
	stdout, _, status = shmctl(t, dir, "ls")
	require.Equal(t, 0, status)
	assert.Regexp(t, `NAME\s+KIND\s+SIZE\s+PROCESSES\s+STATE`, stdout)
	assert.Regexp(t, `q\s+mpmc\s+64KiB\s+1 alive, 1 dead\s+ok`, stdout)
}

// TestLsJSONFields pins the field names documented in the README.
func TestLsJSONFields(t *testing.T) {
	dir := testDir(t)
	_, _, status := shmctl(t, dir, "create", "s", "--kind", "mpmc", "--size", "64KiB")
	require.Equal(t, 0, status)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "x"), []byte("?"), 0o600))
	stdout, _, status := shmctl(t, dir, "ls", "--json", "--all")
	require.Equal(t, 0, status)
	var rows []map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &rows))
	require.Len(t, rows, 2)
	assert.Equal(t, []string{"data_size", "kind", "name", "path", "peers_alive", "peers_dead", "processes_alive",
		"processes_dead", "slot_size", "state"}, keys(rows[0]))
	assert.Equal(t, []string{"error", "name", "path", "peers_alive", "peers_dead", "processes_alive", "processes_dead",
		"state"}, keys(rows[1]))
}

func keys(m map[string]any) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	sort.Strings(k)
	return k
}

func TestLsEmptyAndMissingDir(t *testing.T) {
	dir := testDir(t)
	stdout, _, status := shmctl(t, dir, "ls", "--json")
	require.Equal(t, 0, status)
	assert.Equal(t, "[]\n", stdout)

	_, stderr, status := shmctl(t, filepath.Join(dir, "nope"), "ls")
	assert.Equal(t, 1, status)
	oneLine(t, stderr)
}

// TestLsTopic: a topic shows its policy and its live publishers and subscribers; other
// kinds have no such fields.
func TestLsTopic(t *testing.T) {
	dir := testDir(t)
	_, stderr, status := shmctl(t, dir, "create", "prices", "--kind", "topic", "--size", "64KiB", "--policy", "overwrite")
	require.Equal(t, 0, status, stderr)
	_, stderr, status = shmctl(t, dir, "create", "q", "--kind", "spsc", "--size", "64KiB")
	require.Equal(t, 0, status, stderr)
	seg, err := shm.Open("prices", shm.Options{Dir: dir})
	require.NoError(t, err)
	defer seg.Close()
	p, err := ring.NewPublisher(seg, ring.Options{})
	require.NoError(t, err)
	defer p.Close()
	startSubscriber(t, dir, "prices")
	startSubscriber(t, dir, "prices", "audit")

	stdout, stderr, status := shmctl(t, dir, "ls", "--json")
	require.Equal(t, 0, status, stderr)
	var rows []map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &rows))
	require.Len(t, rows, 2)
	byName := map[string]map[string]any{}
	for _, r := range rows {
		byName[r["name"].(string)] = r
	}
	topic := byName["prices"]
	assert.Equal(t, "topic", topic["kind"])
	assert.Equal(t, "overwrite", topic["policy"])
	assert.EqualValues(t, 1, topic["publishers"])
	assert.EqualValues(t, 2, topic["subscribers"])
	assert.EqualValues(t, 3, topic["peers_alive"], "this process and two subscriber processes")
	assert.EqualValues(t, 256, topic["slot_size"])
	assert.Equal(t, []string{"data_size", "kind", "name", "path", "peers_alive", "peers_dead", "processes_alive",
		"processes_dead", "state"}, keys(byName["q"]), "no topic fields")

	stdout, _, status = shmctl(t, dir, "ls")
	require.Equal(t, 0, status)
	assert.Regexp(t, `NAME\s+KIND\s+SIZE\s+PROCESSES\s+STATE\s+TOPIC`, stdout)
	assert.Regexp(t, `prices\s+topic\s+64KiB\s+3 alive\s+ok\s+overwrite, 1 publisher, 2 subscribers`, stdout)
	assert.Regexp(t, `q\s+spsc\s+64KiB\s+0 alive\s+ok\s*\n`, stdout)

	require.NoError(t, p.Close())
	stdout, _, status = shmctl(t, dir, "ls")
	require.Equal(t, 0, status)
	assert.Regexp(t, `prices\s+topic\s+64KiB\s+3 alive\s+ok\s+overwrite, 0 publishers, 2 subscribers`, stdout)
}
