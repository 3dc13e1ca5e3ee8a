package main

import (
	"context"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shmq/shmq/examples/internal/extest"
	"github.com/shmq/shmq/examples/internal/proc"
)

func TestMain(m *testing.M) {
	if proc.Role() != "" {
		os.Exit(proc.RunChild(roles))
	}
	os.Exit(m.Run())
}

var (
	jobsLine   = regexp.MustCompile(`(?m)^jobs: (\d+) emitted = (\d+) completed \((\d+) after a retry, (\d+) after its worker crashed\) \+ (\d+) dead-lettered; (-?\d+) lost, (\d+) completed twice$`)
	superLine  = regexp.MustCompile(`(?m)^supervisor: (\d+) starts, (\d+) restarts, (\d+) failures$`)
	workerRow  = regexp.MustCompile(`(?m)^\s+([0-3])\s+\d+\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+\s+stopped\s*$`)
	prioRow    = regexp.MustCompile(`(?m)^\s+(critical|normal|low)\s+(\d+)\s+(\d+)\s`)
	healthDone = regexp.MustCompile(`(?m)health \(all jobs done\): (\w+)\n(?:\s+.*\n)*?\s+degraded dead_letters: (\d+) events in the dead-letter queue`)
)

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The example runs to the end: every job completed or dead-lettered, the dead letters are
// exactly the jobs that always fail, the crashed worker's job completed after a restart,
// the pool grew to four worker processes, and health reports the dead letters.
func TestBuffered(t *testing.T) {
	var out extest.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), extest.Deadline)
	defer cancel()
	cfg := defaultConfig()
	cfg.Jobs, cfg.ScaleAfter, cfg.CrashAt, cfg.Work, cfg.Restart = 600, 250, 300, 2*time.Millisecond, 200*time.Millisecond
	err := run(ctx, &out, cfg)
	s := out.String()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, s)
	}
	t.Log("\n" + s)
	extest.CheckCleanup(t, s)

	poison := 0
	for seq := range cfg.Jobs {
		if p, _ := kind(seq); p {
			poison++
		}
	}
	m := jobsLine.FindStringSubmatch(s)
	if m == nil {
		t.Fatal("no jobs line")
	}
	emitted, completed, retried, afterCrash, dead, lost := atoi(t, m[1]), atoi(t, m[2]), atoi(t, m[3]), atoi(t, m[4]), atoi(t, m[5]), atoi(t, m[6])
	if emitted != cfg.Jobs || completed+dead != emitted || lost != 0 {
		t.Errorf("jobs: %d emitted, %d completed, %d dead-lettered, %d lost", emitted, completed, dead, lost)
	}
	if dead != poison || poison == 0 {
		t.Errorf("%d dead-lettered, want the %d jobs that always fail", dead, poison)
	}
	if retried == 0 || afterCrash != 1 {
		t.Errorf("%d completed after a retry (want some), %d after the crash (want 1)", retried, afterCrash)
	}
	sm := superLine.FindStringSubmatch(s)
	if sm == nil {
		t.Fatal("no supervisor line")
	}
	if starts, restarts, failures := atoi(t, sm[1]), atoi(t, sm[2]), atoi(t, sm[3]); starts < 5 || restarts < 1 || failures < 1 {
		t.Errorf("supervisor: %d starts, %d restarts, %d failures; want 2 + 2 (scaled) + 1 (restart), a restart, a failure", starts, restarts, failures)
	}
	if !strings.Contains(s, "scaling the pool from 2 to 4 worker processes") {
		t.Error("no scaling")
	}
	seen := map[string]bool{}
	deadByWorkers := 0
	for _, r := range workerRow.FindAllStringSubmatch(s, -1) {
		seen[r[1]] = true
		deadByWorkers += atoi(t, r[5])
	}
	if len(seen) != 4 {
		t.Errorf("worker rows for %d indices, want 0 to 3: %v", len(seen), seen)
	}
	if deadByWorkers > dead {
		t.Errorf("workers dead-lettered %d, the queue holds %d", deadByWorkers, dead)
	}
	total := 0
	for _, r := range prioRow.FindAllStringSubmatch(s, -1) {
		total += atoi(t, r[2])
	}
	if total != cfg.Jobs {
		t.Errorf("priority rows sum to %d emitted, want %d", total, cfg.Jobs)
	}
	h := healthDone.FindStringSubmatch(s)
	if h == nil || h[1] != "degraded" || atoi(t, h[2]) != poison {
		t.Errorf("final health: %q, want degraded by %d dead letters", h, poison)
	}
}

// Interrupted while jobs flow, the example stops its supervisor's workers and removes its
// segments.
func TestBufferedInterrupted(t *testing.T) {
	var out extest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, &out, defaultConfig()) }()
	deadline := time.Now().Add(extest.Deadline)
	for !strings.Contains(out.String(), "emitting") {
		if time.Now().After(deadline) {
			t.Fatalf("the example did not start emitting:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(proc.Running(extest.Dir(out.String()))); n < 2 {
		t.Fatalf("%d worker processes running, want 2", n)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("run returned %v, want context.Canceled", err)
		}
	case <-time.After(extest.Deadline):
		t.Fatal("run did not return after its context ended")
	}
	extest.CheckCleanup(t, out.String())
}
