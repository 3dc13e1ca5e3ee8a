package dlq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// ErrNoOrigin is returned by RingSink.Write for an entry without an Origin.
var ErrNoOrigin = errors.New("dead letter has no origin to replay to")

// DefaultSinkTimeout is how long RingSink.Write waits for room in a ring by default.
const DefaultSinkTimeout = time.Second

// RingSink writes entries back to the rings they came from: Write is a function for
// Replay and Take. Each entry's Data goes, as one record of its Type, to the ring segment
// named by its Origin (an SPSC, MPMC or topic segment in the sink's directory), through a
// writer the sink attaches on first use and keeps until Close. Its methods are safe for
// concurrent use; Write waits at most Timeout for room.
type RingSink struct {
	// Timeout bounds the wait for room in a ring; 0 means DefaultSinkTimeout.
	Timeout time.Duration

	opts ring.Options
	shm  shm.Options

	mu      sync.Mutex
	segs    map[string]*shm.Segment
	writers map[string]ring.Writer
	closed  bool
}

// NewRingSink returns a sink that opens rings with opts (their directory and trusted
// owners) and attaches writers with ropts.
func NewRingSink(opts shm.Options, ropts ring.Options) *RingSink {
	opts.Kind, opts.RemoveOnClose = 0, false
	return &RingSink{opts: ropts, shm: opts, segs: map[string]*shm.Segment{}, writers: map[string]ring.Writer{}}
}

// Write writes e.Data as a record of type e.Type to the ring named e.Origin. Errors:
// ErrNoOrigin; those of shm.Open (shm.ErrNotExist when the ring is gone) and of attaching
// a writer (ring.ErrBusy for an SPSC ring whose writer is alive, ring.ErrKind); those of
// ring.Writer.Write (ring.ErrTooLarge, context.DeadlineExceeded when the ring stayed full
// for Timeout); ErrClosed after Close. A failed Write leaves the entry in the queue.
func (s *RingSink) Write(e Entry) error {
	if e.Origin == "" {
		return fmt.Errorf("%w: entry %d", ErrNoOrigin, e.Seq)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	w, ok := s.writers[e.Origin]
	if !ok {
		seg, err := shm.Open(e.Origin, s.shm)
		if err != nil {
			return fmt.Errorf("replay of entry %d to %s: %w", e.Seq, e.Origin, err)
		}
		w, err = ring.NewWriter(seg, s.opts)
		if err != nil {
			seg.Close()
			return fmt.Errorf("replay of entry %d to %s: %w", e.Seq, e.Origin, err)
		}
		s.segs[e.Origin], s.writers[e.Origin] = seg, w
	}
	timeout := s.Timeout
	if timeout == 0 {
		timeout = DefaultSinkTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := w.Write(ctx, e.Type, e.Data); err != nil {
		return fmt.Errorf("replay of entry %d to %s: %w", e.Seq, e.Origin, err)
	}
	return nil
}

// Close detaches every writer and closes the rings' segments. It is safe to call any
// number of times.
func (s *RingSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for name, w := range s.writers {
		errs = append(errs, w.Close(), s.segs[name].Close())
	}
	clear(s.writers)
	clear(s.segs)
	return errors.Join(errs...)
}
