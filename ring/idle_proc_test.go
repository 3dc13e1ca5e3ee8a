package ring_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
)

// runIdleWriter writes one record, reports it, and idles until it is killed.
func runIdleWriter(c *proctest.Child) error {
	_, opts, seg, err := parseConfig(c)
	if err != nil {
		return err
	}
	w, err := ring.NewSPSCWriter(seg, opts)
	if err != nil {
		return err
	}
	if err := w.Write(context.Background(), 1, []byte("one")); err != nil {
		return err
	}
	c.Point("wrote")
	time.Sleep(time.Hour)
	return nil
}

// TestIdleReaderSleepsUntilDeath: a reader that has waited a while sleeps in the kernel
// without waking every liveness interval (its writer's death is watched instead), and
// still learns of that death at once: ErrPeerDead about a liveness interval or two after
// the SIGKILL, not after its long sleep.
func TestIdleReaderSleepsUntilDeath(t *testing.T) {
	dir := testDir(t)
	seg := newSegment(t, dir, "idle", ring.Spec{Kind: ring.SPSC, Size: 4096})
	r, err := ring.NewSPSCReader(seg, ring.Options{Wait: ring.Futex()})
	require.NoError(t, err)
	defer r.Close()
	cfg := procConfig{Dir: dir, Name: "idle", Wait: "futex"}
	writer := proctest.Start(t, "idle-writer", proctest.Options{Args: cfg.args()})
	writer.WaitPoint("wrote", 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rec, err := r.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, "one", string(rec.Data))
	r.Release()

	result := make(chan error, 1)
	go func() { _, err := r.Next(ctx); result <- err }()
	time.Sleep(2 * time.Second) // idle: the first 200 ms at 100 ms sleeps, then long ones
	before, err := ring.ReadStats(seg)
	require.NoError(t, err)
	time.Sleep(2 * time.Second)
	after, err := ring.ReadStats(seg)
	require.NoError(t, err)
	assert.LessOrEqual(t, after.Readers.FutexWaits-before.Readers.FutexWaits, uint64(2),
		"an idle reader whose writer is watched sleeps long (at 100 ms it would have slept ~20 times)")

	killed := time.Now()
	writer.Kill()
	select {
	case err := <-result:
		assert.ErrorIs(t, err, ring.ErrPeerDead)
		took := time.Since(killed)
		t.Logf("ErrPeerDead %v after the SIGKILL", took)
		assert.Less(t, took, 5*time.Second, "the death woke the reader; its long sleep is 30 s")
	case <-ctx.Done():
		t.Fatal("the reader never learned of its writer's death")
	}
}
