//go:build linux

package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/broker"
	"github.com/shmq/shmq/internal/proctest"
)

func init() {
	proctest.Register("broker-server", runBrokerServer)
	proctest.Register("broker-client", runBrokerClient)
}

// runBrokerServer binds server name Args[1] in Args[0] and echoes calls on every
// connection until it is killed.
func runBrokerServer(c *proctest.Child) error {
	l, err := broker.Listen(c.Args[1], broker.Options{Dir: c.Args[0]})
	if err != nil {
		return err
	}
	c.Point("listening")
	for {
		conn, err := l.Accept(context.Background())
		if err != nil {
			return err
		}
		go broker.Serve(context.Background(), conn, func(req []byte) ([]byte, error) { return req, nil }, 1)
	}
}

// runBrokerClient dials server Args[1] in Args[0], makes one call and waits to be killed.
func runBrokerClient(c *proctest.Child) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := broker.Dial(ctx, c.Args[1], broker.Options{Dir: c.Args[0]})
	if err != nil {
		return err
	}
	if _, err := broker.NewClient(conn).Call(ctx, []byte("hi")); err != nil {
		return err
	}
	c.Point("called")
	select {}
}

// TestBrokerLsAndGC: shmctl ls shows a broker's names (its accept ring under the server's
// name, each connection's two rings NAME.PID.N.c2s and .s2c) with their live peers; once
// the server and its clients are all SIGKILLed at once, nobody lived to remove anything:
// ls shows every one of them with dead peers only, and shmctl gc removes them all.
func TestBrokerLsAndGC(t *testing.T) {
	dir := testDir(t)
	srv := proctest.Start(t, "broker-server", proctest.Options{Args: []string{dir, "svc"}})
	srv.WaitPoint("listening", 20*time.Second)
	var procs []*proctest.Proc
	for range 2 {
		procs = append(procs, proctest.Start(t, "broker-client", proctest.Options{Args: []string{dir, "svc"}}))
	}
	for _, p := range procs {
		p.WaitPoint("called", 20*time.Second)
	}
	var want []string
	entries := lsJSON(t, dir)
	require.Len(t, entries, 5, "the accept ring and two connections' rings")
	for _, e := range entries {
		want = append(want, e.Name)
		assert.Equal(t, "ok", e.State, e.Name)
		assert.Zero(t, e.PeersDead, e.Name)
		if e.Name == "svc" {
			assert.Equal(t, "mpmc", e.Kind)
			assert.Equal(t, 1, e.PeersAlive, "the server")
			continue
		}
		assert.Equal(t, "spsc", e.Kind, e.Name)
		assert.True(t, strings.HasPrefix(e.Name, "svc.") && (strings.HasSuffix(e.Name, ".c2s") || strings.HasSuffix(e.Name, ".s2c")), e.Name)
		assert.Equal(t, 2, e.PeersAlive, "%s: client and server", e.Name)
	}

	srv.Kill()
	for _, p := range procs {
		p.Kill()
	}
	for _, p := range append(procs, srv) {
		_ = p.Wait(20 * time.Second)
	}
	entries = lsJSON(t, dir)
	require.Len(t, entries, 5)
	for _, e := range entries {
		assert.Zero(t, e.PeersAlive, e.Name)
		assert.Positive(t, e.PeersDead, e.Name)
	}
	stdout, stderr, status := shmctl(t, dir, "gc")
	require.Equal(t, 0, status, stderr)
	for _, n := range want {
		assert.Contains(t, stdout, "removed "+n+" (", "gc output:\n%s", stdout)
	}
	assert.Empty(t, listNames(t, dir))
}

func lsJSON(t *testing.T, dir string) []listEntry {
	t.Helper()
	stdout, stderr, status := shmctl(t, dir, "ls", "--json")
	require.Equal(t, 0, status, stderr)
	var entries []listEntry
	require.NoError(t, json.Unmarshal([]byte(stdout), &entries))
	return entries
}

func listNames(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, e := range lsJSON(t, dir) {
		out = append(out, e.Name)
	}
	slices.Sort(out)
	return out
}
