//go:build linux

package rpcbench_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/rpcbench"
)

// crossed is a transport whose replies go to the wrong call now and then: its caller
// answers every 5th call with the reply of the call before.
func crossed() rpcbench.Transport {
	t := rpcbench.Shmq()
	t.Name = "crossed"
	dial := t.Dial
	t.Dial = func(ctx context.Context, dir string, n int, o rpcbench.Options) ([]rpcbench.Caller, func(), error) {
		callers, closeAll, err := dial(ctx, dir, n, o)
		if err != nil {
			return nil, nil, err
		}
		for i, call := range callers {
			var prev []byte
			k := 0
			callers[i] = func(ctx context.Context, dst, req []byte) ([]byte, error) {
				reply, err := call(ctx, dst, req)
				k++
				if k%5 == 0 && prev != nil {
					reply = append(reply[:0], prev...)
				}
				prev = append(prev[:0], req...)
				return reply, err
			}
		}
		return callers, closeAll, nil
	}
	return t
}

func TestMain(m *testing.M) {
	if rpcbench.ChildMain(append(rpcbench.Builtin(), crossed())...) {
		return
	}
	os.Exit(m.Run())
}

// TestRun: every built-in transport with one caller and with eight, each side in a process
// of its own: calls counted, every reply its request's echo, latency and CPU measured, and
// the case's directory gone afterwards.
func TestRun(t *testing.T) {
	for _, tr := range []string{"shmq", "unix"} {
		for _, callers := range []int{1, 8} {
			cs := rpcbench.Case{Transport: tr, Callers: callers, Size: 64, Duration: 200 * time.Millisecond}
			if tr == "shmq" {
				cs.Wait = "adaptive"
			}
			before := rpcDirs(t)
			res, err := rpcbench.Run(cs)
			require.NoError(t, err, "%+v", cs)
			t.Logf("%s x%d: %.0f calls/s, p50 %v, p99 %v, %.0f ns CPU per call", tr, callers, res.CallsPerSec,
				time.Duration(res.P50), time.Duration(res.P99), res.CPUPerCall())
			assert.Positive(t, res.Calls)
			assert.Zero(t, res.Bad)
			assert.Positive(t, res.CallsPerSec)
			assert.Positive(t, res.P50)
			assert.GreaterOrEqual(t, res.P99, res.P50)
			assert.Positive(t, res.CallerCPU)
			assert.Positive(t, res.ServerCPU)
			assert.GreaterOrEqual(t, res.Seconds, 0.2, "the measured time is at least the case's")
			assert.Equal(t, before, rpcDirs(t), "the case's directory is removed")
		}
	}
}

// TestRunCountsCrossedReplies: a reply given to the wrong call is counted and fails the run.
func TestRunCountsCrossedReplies(t *testing.T) {
	res, err := rpcbench.Run(rpcbench.Case{Transport: "crossed", Callers: 2, Size: 32, Duration: 100 * time.Millisecond})
	require.Error(t, err)
	assert.Positive(t, res.Bad)
}

// TestRunRejects: cases that cannot be run.
func TestRunRejects(t *testing.T) {
	for _, cs := range []rpcbench.Case{
		{Transport: "shmq", Callers: 0, Size: 64, Duration: time.Second},
		{Transport: "shmq", Callers: 1, Size: 8, Duration: time.Second},
		{Transport: "shmq", Callers: 1, Size: 64},
	} {
		_, err := rpcbench.Run(cs)
		assert.Error(t, err, "%+v", cs)
	}
	_, err := rpcbench.Run(rpcbench.Case{Transport: "carrier-pigeon", Callers: 1, Size: 64, Duration: time.Second})
	assert.ErrorContains(t, err, "unknown transport")
}

func rpcDirs(t *testing.T) []string {
	m, err := filepath.Glob("/dev/shm/rpcbench-*")
	require.NoError(t, err)
	return m
}
