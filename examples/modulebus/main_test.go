package main

import (
	"context"
	"errors"
	"os"
	"regexp"
	"strconv"
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
	storageLine  = regexp.MustCompile(`(?m)^storage: (\d+) readings stored, (\d+) distinct of the (\d+) capture published, (\d+) duplicates, (\d+) from other sources$`)
	analysisLine = regexp.MustCompile(`(?m)^analysis: critical alarms (\d+) of (\d+); best effort saw (\d+) of (\d+) capture readings and (\d+) of (\d+) rig readings \((\d+) events dropped\)$`)
	monitorLine  = regexp.MustCompile(`(?m)^monitor: (\d+) status events handled of (\d+) published, (\d+) skipped as stale; the last one says (\d+) readings \(final: (true|false)\)$`)
	healthLine   = regexp.MustCompile(`(?m)^health \(publishers done\): (healthy|degraded|unhealthy), dead letters (\d+)$`)
	tableRow     = regexp.MustCompile(`(?m)^(storage|analysis|monitor)\s+.*\s(reliable|best-effort|latest-only)\s`)
)

func nums(t *testing.T, re *regexp.Regexp, s string) []uint64 {
	t.Helper()
	m := re.FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no line matching %v", re)
	}
	var out []uint64
	for _, f := range m[1:] {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			continue // a word, not a count
		}
		out = append(out, n)
	}
	return out
}

// The example runs its four modules to the end: every reading from capture stored once and
// none from rig (the source filter), every critical alarm handled, the best-effort
// subscriber never saw more than was published (and all of it when it dropped nothing),
// and the LatestOnly subscriber ended on capture's final status.
func TestModuleBus(t *testing.T) {
	var out extest.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), extest.Deadline)
	defer cancel()
	err := run(ctx, &out, config{Duration: 2 * time.Second, Rate: 5000, RigRate: 100})
	s := out.String()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, s)
	}
	t.Log("\n" + s)
	extest.CheckCleanup(t, s)

	st := nums(t, storageLine, s)
	stored, distinct, published, dups, others := st[0], st[1], st[2], st[3], st[4]
	if published == 0 || distinct != published || stored != published || dups != 0 || others != 0 {
		t.Errorf("storage: stored %d, %d distinct of %d, %d duplicates, %d from others", stored, distinct, published, dups, others)
	}
	an := nums(t, analysisLine, s)
	crit, critPub, sawCap, capPub, sawRig, rigPub, dropped := an[0], an[1], an[2], an[3], an[4], an[5], an[6]
	if critPub == 0 || crit != critPub {
		t.Errorf("analysis: %d critical alarms of %d", crit, critPub)
	}
	if capPub != published || rigPub == 0 || sawCap > capPub || sawRig > rigPub || sawCap == 0 {
		t.Errorf("analysis saw %d of %d capture and %d of %d rig readings", sawCap, capPub, sawRig, rigPub)
	}
	if dropped == 0 && (sawCap != capPub || sawRig != rigPub) {
		t.Errorf("analysis dropped nothing but saw %d of %d capture and %d of %d rig readings", sawCap, capPub, sawRig, rigPub)
	}
	mo := nums(t, monitorLine, s)
	if handled, statuses, last := mo[0], mo[1], mo[3]; handled == 0 || handled > statuses || last != published {
		t.Errorf("monitor: handled %d of %d statuses, the last says %d readings (want %d)", handled, statuses, last, published)
	}
	if m := monitorLine.FindStringSubmatch(s); m[5] != "true" {
		t.Errorf("the monitor's last status is not the final one")
	}
	if h := nums(t, healthLine, s); h[0] != 0 {
		t.Errorf("dead letters: %d, want 0", h[0])
	}
	if rows := tableRow.FindAllString(s, -1); len(rows) != 4 {
		t.Errorf("want 4 rows of subscription stats, got %d: %q", len(rows), rows)
	}
}

// Interrupted while capture publishes, the example stops every module and removes its
// segments.
func TestModuleBusInterrupted(t *testing.T) {
	var out extest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, &out, defaultConfig()) }()
	deadline := time.Now().Add(extest.Deadline)
	for extest.Dir(out.String()) == "" || len(proc.Running(extest.Dir(out.String()))) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("the example did not start its four modules:\n%s", out.String())
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
