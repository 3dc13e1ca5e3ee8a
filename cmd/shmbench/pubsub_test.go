//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func TestParseFlagsPubSub(t *testing.T) {
	cfg, err := parseFlags(strings.Fields("--transports pubsub,fanout-spsc,spsc --consumers 8 --waits adaptive,spin --policy overwrite"), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, "overwrite", cfg.Policy)
	cases := cfg.cases()
	// throughput, latency, idle x 2 fan-out transports x 2 waits, and 4 scenarios x spsc x 2 waits
	require.Len(t, cases, 3*2*2+4*2)
	for _, cs := range cases {
		if isFanout(cs.Transport) {
			assert.NotEqual(t, "pingpong", cs.Scenario, "%s", cs.label())
			assert.Equal(t, 8, cs.Consumers, "%s", cs.label())
			assert.NotEmpty(t, cs.Wait, "%s", cs.label())
		} else {
			assert.Equal(t, 1, cs.Consumers, "%s", cs.label())
		}
	}
	assert.Equal(t, "throughput pubsub/adaptive 64B 1x8", cases[0].label())

	cfg, err = parseFlags(nil, &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, "block", cfg.Policy)
	assert.NotContains(t, cfg.Transports, "pubsub", "not in the default run")
	for _, bad := range []string{"--policy latest", "--policy drop", "--transports pubsubs"} {
		_, err := parseFlags(strings.Fields(bad), &bytes.Buffer{})
		assert.True(t, errors.Is(err, errUsage), "%s: %v", bad, err)
	}
}

// fanoutPair makes, in this process, a pubsub publisher and subscriber (a topic of policy)
// or a fanout-spsc writer to three rings and their readers, as the children do.
func fanoutPair(t *testing.T, transport string, policy ring.Policy, size int) (*fanoutWriter, []*fanoutReceiver) {
	t.Helper()
	dir := t.TempDir()
	open := func(spec ring.Spec, name string) *shm.Segment {
		seg, err := ring.Create(name, spec, shm.Options{Dir: dir})
		require.NoError(t, err)
		t.Cleanup(func() { seg.Close() })
		return seg
	}
	f := &fanoutWriter{topic: transport == "pubsub", size: size, pattern: pattern(size)}
	opts := ring.Options{Wait: ring.Spin()}
	if transport == "pubsub" {
		seg := open(ring.Spec{Kind: ring.Topic, Size: 64 << 10, SlotSize: 8192, Policy: policy}, "t")
		sub, err := ring.Subscribe(context.Background(), seg, ring.SubscribeOptions{Start: ring.FromOldest, Wait: ring.Spin()})
		require.NoError(t, err)
		p, err := ring.NewPublisher(seg, opts)
		require.NoError(t, err)
		f.ws = append(f.ws, p)
		return f, []*fanoutReceiver{newFanoutReceiver(sub, 16)}
	}
	var rs []*fanoutReceiver
	for _, name := range []string{"a", "b", "c"} {
		seg := open(ring.Spec{Kind: ring.SPSC, Size: 1 << 20}, name)
		w, err := ring.NewSPSCWriter(seg, opts)
		require.NoError(t, err)
		f.ws = append(f.ws, w)
		r, err := ring.NewSPSCReader(seg, opts)
		require.NoError(t, err)
		rs = append(rs, newFanoutReceiver(r, 16))
	}
	return f, rs
}

// TestFanoutZeroAllocs: sending and receiving a message, alone or in a batch, allocates
// nothing, on either transport, and every receiver gets every message intact and in order.
func TestFanoutZeroAllocs(t *testing.T) {
	ctx := context.Background()
	for _, tr := range fanoutTransports {
		s, rs := fanoutPair(t, tr, ring.Block, 4096)
		got := make([]uint64, len(rs))
		fns := make([]func(uint64, uint32, int64, bool), len(rs))
		for i := range rs {
			fns[i] = func(seq uint64, _ uint32, _ int64, ok bool) {
				if ok && seq == got[i] {
					got[i]++
				}
			}
		}
		seq := uint64(0)
		allocs := testing.AllocsPerRun(200, func() {
			_ = s.sendMsg(ctx, seq, 0, 1)
			seq++
			for i, r := range rs {
				_ = r.recvMsg(ctx, fns[i])
			}
		})
		assert.Zero(t, allocs, "%s: one message", tr)
		allocs = testing.AllocsPerRun(200, func() {
			_ = s.sendBatch(ctx, seq, 8, 0)
			seq += 8
			for i, r := range rs {
				_ = r.recvBatch(ctx, 8, fns[i])
			}
		})
		assert.Zero(t, allocs, "%s: a batch of 8", tr)
		for i := range rs {
			assert.Equal(t, seq, got[i], "%s: receiver %d got every message intact, in order", tr, i)
		}
	}
}

// TestTopicReceiverEnd: the publisher's close ends the stream: the subscriber gets every
// message, then io.EOF.
func TestTopicReceiverEnd(t *testing.T) {
	ctx := context.Background()
	s, rs := fanoutPair(t, "pubsub", ring.Block, 100)
	for i := range 5 {
		require.NoError(t, s.sendMsg(ctx, uint64(i), 0, 0))
	}
	require.NoError(t, s.close())
	var seqs []uint64
	for {
		err := rs[0].recvBatch(ctx, 3, func(seq uint64, _ uint32, _ int64, ok bool) {
			assert.True(t, ok)
			seqs = append(seqs, seq)
		})
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
	}
	assert.Equal(t, []uint64{0, 1, 2, 3, 4}, seqs)
	assert.Equal(t, io.EOF, rs[0].recvMsg(ctx, nil), "and stays ended")
}

// TestTopicReceiverOverwrite: a subscriber lapped under Overwrite counts what it missed;
// what it receives is intact and in order, and received + missed = published.
func TestTopicReceiverOverwrite(t *testing.T) {
	ctx := context.Background()
	s, rs := fanoutPair(t, "pubsub", ring.Overwrite, 4096) // 8 slots
	tr := rs[0]
	const total = 100
	for i := range total {
		require.NoError(t, s.sendMsg(ctx, uint64(i), 0, 0))
	}
	require.NoError(t, s.close())
	var seqs []uint64
	for {
		err := rs[0].recvBatch(ctx, 4, func(seq uint64, _ uint32, _ int64, ok bool) {
			assert.True(t, ok)
			seqs = append(seqs, seq)
		})
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
	}
	assert.EqualValues(t, total, uint64(len(seqs))+tr.missed)
	assert.Positive(t, tr.missed)
	require.NotEmpty(t, seqs)
	assert.EqualValues(t, total-1, seqs[len(seqs)-1], "the newest message arrives")
	for i := 1; i < len(seqs); i++ {
		assert.Equal(t, seqs[i-1]+1, seqs[i], "in order, no gap after the lap")
	}
}

// TestPubSubRun runs pubsub and fanout-spsc with three subscriber processes, end to end:
// every subscriber gets every message intact, and the report has each one's figures.
func TestPubSubRun(t *testing.T) {
	dir := t.TempDir()
	jsonPath := filepath.Join(dir, "r.json")
	var out, errOut bytes.Buffer
	status := run([]string{"--quick", "--transports", "pubsub,fanout-spsc", "--consumers", "3", "--waits", "adaptive",
		"--sizes", "4KiB", "--batch", "4", "--scenarios", "throughput,latency,idle", "--json", jsonPath}, &out, &errOut)
	require.Equal(t, 0, status, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	t.Logf("\n%s", out.String())
	raw, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	var rep Report
	require.NoError(t, json.Unmarshal(raw, &rep))
	require.Len(t, rep.Results, 6)
	for _, r := range rep.Results {
		name := r.Scenario + " " + r.name()
		require.NotNil(t, r.Fanout, name)
		f := r.Fanout
		assert.Equal(t, 3, r.Consumers, name)
		assert.Equal(t, "raw", r.Codec, name)
		assert.Zero(t, r.Lost+r.Corrupt, name)
		assert.Zero(t, f.Missed, name)
		require.Len(t, f.Subscribers, 3, name)
		for _, s := range f.Subscribers {
			assert.Equal(t, f.Published, s.Messages, "%s: every subscriber gets every message", name)
		}
		assert.Equal(t, 3*f.Published, r.Messages, name)
		if r.Transport == "pubsub" {
			assert.Equal(t, "block", f.Policy)
		}
		switch r.Scenario {
		case "throughput":
			assert.Equal(t, 4, r.Batch)
			assert.Positive(t, r.MsgsPerSec, name)
			assert.Positive(t, f.PublisherCPUNsPerMsg, name)
			for _, s := range f.Subscribers {
				assert.Positive(t, s.MsgsPerSec, name)
			}
		case "latency":
			require.NotNil(t, r.Latency, name)
			require.NotNil(t, f.Subscribers[0].Latency, name)
		}
	}
	assert.Contains(t, out.String(), "throughput pubsub/adaptive (block) 4096B, 3 subscribers: published ")
	assert.Regexp(t, `pubsub/adaptive vs fanout-spsc/adaptive \(4096B, 3 subscribers\): aggregate throughput [0-9.]+x, publisher CPU per message [0-9.]+x`, out.String())
}

// TestPubSubOverwriteRun: under --policy overwrite the publisher never waits; whatever a
// subscriber missed is counted, never lost or corrupt.
func TestPubSubOverwriteRun(t *testing.T) {
	var out, errOut bytes.Buffer
	status := run([]string{"--quick", "--transports", "pubsub", "--consumers", "2", "--waits", "spin", "--policy", "overwrite",
		"--scenarios", "throughput", "--json", "-"}, &out, &errOut)
	require.Equal(t, 0, status, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	doc := out.Bytes()[bytes.IndexByte(out.Bytes(), '{'):]
	var rep Report
	require.NoError(t, json.Unmarshal(doc, &rep))
	require.Len(t, rep.Results, 1)
	r := rep.Results[0]
	require.NotNil(t, r.Fanout)
	assert.Equal(t, "overwrite", r.Fanout.Policy)
	assert.Zero(t, r.Lost+r.Corrupt)
	assert.Equal(t, 2*r.Fanout.Published, r.Messages+r.Fanout.Missed)
	assert.Positive(t, r.Messages)
}
