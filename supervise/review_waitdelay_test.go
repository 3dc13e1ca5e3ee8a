package supervise

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/internal/proctest"
)

func init() { proctest.Register("orphaner", runOrphaner) }

// runOrphaner is a worker that starts a long-lived child of its own sharing its stdout (a
// shell pipeline, a daemon), reports "grandchild PID" on stdout, and exits 0 on SIGTERM,
// leaving the grandchild behind.
func runOrphaner(c *proctest.Child) error {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	gc := exec.Command("sleep", "1000")
	gc.Stdout = os.Stdout
	if err := gc.Start(); err != nil {
		return err
	}
	fmt.Printf("grandchild %d\n", gc.Process.Pid)
	<-term
	return nil
}

// outputWriter is a worker's stdout as os/exec copies it (not an *os.File: a pipe and a
// copying goroutine), which reports the grandchild's pid.
type outputWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
	pid chan int
}

var grandchildLine = regexp.MustCompile(`grandchild (\d+)\n`)

func (w *outputWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if m := grandchildLine.FindSubmatch(w.buf.Bytes()); m != nil {
		pid, _ := strconv.Atoi(string(m[1]))
		w.buf.Reset()
		w.pid <- pid
	}
	return len(p), nil
}

// TestReviewStopWithGrandchildHoldingOutput: a worker whose own child outlives it and holds
// its stdout (copied by os/exec into a Writer) kept exec.Cmd.Wait blocked after the worker
// was reaped, until the grandchild closed the pipe: Stop hung past its context (and a
// crashed worker was never restarted, its exit never seen). The supervisor now sets the
// command's WaitDelay (Grace, unless the factory set one), so Wait returns after it.
func TestReviewStopWithGrandchildHoldingOutput(t *testing.T) {
	out := &outputWriter{pid: make(chan int, 10)}
	sup, err := New(func(int) *exec.Cmd {
		cmd, err := proctest.Command("orphaner")
		if err != nil {
			t.Errorf("command: %v", err)
			return nil
		}
		cmd.Stdout = out
		cmd.Stderr = os.Stderr
		return cmd
	}, Options{Workers: 1, Grace: 200 * time.Millisecond})
	require.NoError(t, err)
	var grandchild int
	select {
	case grandchild = <-out.pid:
	case <-time.After(30 * time.Second):
		_ = sup.Stop(context.Background())
		t.Fatal("the worker did not report its child")
	}
	t.Cleanup(func() {
		_ = syscall.Kill(grandchild, syscall.SIGKILL) // not the supervisor's child: ours to end
	})
	worker := sup.Workers()[0].PID

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- sup.Stop(ctx) }()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Errorf("Stop hung while the worker's child held its stdout")
		_ = syscall.Kill(grandchild, syscall.SIGKILL)
		<-stopped
	}
	assert.ErrorIs(t, syscall.Kill(worker, 0), syscall.ESRCH, "the worker was reaped")
	assert.Equal(t, 0, sup.Live())
}
