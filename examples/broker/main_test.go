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
	requestorRow = regexp.MustCompile(`(?m)^\s+(\d+)\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+(\d+)\s+\S+\s+\S+\s+\S+\s*$`)
	receiverLine = regexp.MustCompile(`(?m)^receiver: (\d+) connections accepted, (\d+) ended \[(.*)\]; (\d+) frames \(\S+ MB\) checked in place, (\d+) bad; (\d+) acks sent$`)
	acceptedLine = regexp.MustCompile(`(?m)\[receiver \d+\] accepted sensor-hub\.\d+\.\d+ \(on the loop\)$`)
	connLine     = regexp.MustCompile(`(?m)\[requestor \d+\] connected as sensor-hub\.\d+\.\d+ after \S+ \(on the loop\)$`)
)

// The requestors, started before the receiver, connect by name once it listens; every
// frame arrives intact and is acknowledged in order; both connections end with io.EOF.
func TestBroker(t *testing.T) {
	var out extest.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), extest.Deadline)
	defer cancel()
	cfg := defaultConfig()
	cfg.Frames = 1000
	err := run(ctx, &out, cfg)
	s := out.String()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, s)
	}
	t.Log("\n" + s)
	extest.CheckCleanup(t, s)

	if n := len(acceptedLine.FindAllString(s, -1)); n != cfg.Requestors {
		t.Errorf("%d connections accepted on the loop, want %d", n, cfg.Requestors)
	}
	if n := len(connLine.FindAllString(s, -1)); n != cfg.Requestors {
		t.Errorf("%d connect listener calls, want %d", n, cfg.Requestors)
	}
	rows := requestorRow.FindAllStringSubmatch(s, -1)
	if len(rows) != cfg.Requestors {
		t.Fatalf("%d requestor rows, want %d", len(rows), cfg.Requestors)
	}
	for _, r := range rows {
		waited, err := time.ParseDuration(r[2])
		if err != nil || waited <= 0 {
			t.Errorf("requestor %s: waited for server %q", r[1], r[2])
		}
		if r[3] != strconv.Itoa(cfg.Frames) || r[5] != r[3] || r[6] != "0" {
			t.Errorf("requestor %s: %s frames, %s acks, %s bad; want %d, %d, 0", r[1], r[3], r[5], r[6], cfg.Frames, cfg.Frames)
		}
	}
	m := receiverLine.FindStringSubmatch(s)
	if m == nil {
		t.Fatal("no receiver line")
	}
	want := strconv.Itoa(cfg.Requestors * cfg.Frames)
	if m[1] != strconv.Itoa(cfg.Requestors) || m[2] != m[1] || m[4] != want || m[5] != "0" || m[6] != want {
		t.Errorf("receiver: %q", m[0])
	}
	for _, end := range strings.Fields(m[3]) {
		if end != "EOF" {
			t.Errorf("a connection ended by %q, want EOF", end)
		}
	}
}

// Interrupted while frames flow, the example stops its processes and removes its segments.
func TestBrokerInterrupted(t *testing.T) {
	var out extest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := defaultConfig()
	cfg.Frames = 1 << 30 // would run for ever
	done := make(chan error, 1)
	go func() { done <- run(ctx, &out, cfg) }()
	deadline := time.Now().Add(extest.Deadline)
	for len(connLine.FindAllString(out.String(), -1)) < cfg.Requestors {
		if time.Now().After(deadline) {
			t.Fatalf("the requestors did not connect:\n%s", out.String())
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
