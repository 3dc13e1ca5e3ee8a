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

func quick() config {
	cfg := defaultConfig()
	cfg.Load, cfg.Idle = 1500*time.Millisecond, 500*time.Millisecond
	return cfg
}

var (
	sentLine = regexp.MustCompile(`(?m)^sent: (\d+) messages to each of (\d+) threads per consumer \((\d+) per consumer\)$`)
	rowLine  = regexp.MustCompile(`(?m)^\s*(event|poll)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)\s`)
)

// The example runs its three processes to the end and prints, for both consumers, every
// message received once, in order, and the posted tasks run.
func TestWorkers(t *testing.T) {
	var out extest.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), extest.Deadline)
	defer cancel()
	cfg := quick()
	err := run(ctx, &out, cfg)
	s := out.String()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, s)
	}
	t.Log("\n" + s)
	extest.CheckCleanup(t, s)

	m := sentLine.FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no 'sent:' line")
	}
	perThread, _ := strconv.ParseUint(m[1], 10, 64)
	perConsumer, _ := strconv.ParseUint(m[3], 10, 64)
	if perThread == 0 || m[2] != strconv.Itoa(cfg.Threads) || perConsumer != perThread*uint64(cfg.Threads) {
		t.Fatalf("sent line %q: want a non-zero count to each of %d threads", m[0], cfg.Threads)
	}
	rows := rowLine.FindAllStringSubmatch(s, -1)
	if len(rows) != 2 {
		t.Fatalf("want the event and poll rows, got %d", len(rows))
	}
	for _, r := range rows {
		received, _ := strconv.ParseUint(r[2], 10, 64)
		tasks, _ := strconv.ParseUint(r[8], 10, 64)
		if received != perConsumer || r[3] != "0" || r[4] != "0" {
			t.Errorf("%s: received %s, missing %s, dup %s; want %d, 0, 0", r[1], r[2], r[3], r[4], perConsumer)
		}
		if tasks == 0 {
			t.Errorf("%s: no posted task ran", r[1])
		}
		for _, d := range r[5:8] {
			if d == "-" || strings.HasPrefix(d, "0") {
				t.Errorf("%s: latency %q is not a duration", r[1], d)
			}
		}
	}
	if !strings.Contains(s, "every message accounted for") {
		t.Errorf("no accounting line")
	}
}

// Interrupted in the middle, the example stops its children, reaps them and removes its
// segments.
func TestWorkersInterrupted(t *testing.T) {
	var out extest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, &out, defaultConfig()) }()
	deadline := time.Now().Add(extest.Deadline)
	for extest.Dir(out.String()) == "" || len(proc.Running(extest.Dir(out.String()))) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the example did not start its three processes:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
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
