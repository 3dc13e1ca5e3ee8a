package ring

import (
	"context"
	"fmt"

	"github.com/shmq/shmq/shm"
)

// Writer is the writing end of a ring, whatever its kind: *SPSCWriter, *MPMCWriter and
// *Publisher.
//
// A Writer is for one goroutine at a time (the contract of bufio.Writer), except Close,
// which any goroutine may call, any number of times: it wakes a blocked call, which returns
// ErrClosed. Blocking calls wait by the endpoint's Wait strategy until ctx ends.
//
// A topic's Publisher differs in two ways: its Close never ends a stream (a topic has
// none), and while it has records reserved it holds the topic lock, which other publishers
// and joining subscribers wait for.
type Writer interface {
	// Reserve returns room for a record of n payload bytes of type typ, to be filled in
	// place; Commit publishes everything reserved since the last Commit. It waits for room.
	Reserve(ctx context.Context, typ uint32, n int) ([]byte, error)
	// TryReserve is Reserve that never waits: ErrFull.
	TryReserve(typ uint32, n int) ([]byte, error)
	// ReserveBatch reserves up to count records of n bytes (as many as fit, at least one,
	// waiting like Reserve for the first), appends their payloads to dst and returns it.
	ReserveBatch(ctx context.Context, typ uint32, n, count int, dst [][]byte) ([][]byte, error)
	// Commit publishes the reserved records: ErrNotReserved when there are none.
	Commit() error
	// Abort discards the reserved records: no reader sees them.
	Abort()
	// Write copies p into one record and publishes it, waiting for room.
	Write(ctx context.Context, typ uint32, p []byte) error
	// TryWrite is Write that never waits: ErrFull.
	TryWrite(typ uint32, p []byte) error
	// MaxMessage is the largest payload the ring carries (ErrTooLarge above it).
	MaxMessage() int
	// Ready reports, without blocking or a system call, whether a record of n bytes fits.
	Ready(n int) bool
	// Arm marks the endpoint as waiting for room for n bytes and returns the futex word an
	// event loop sleeps on; false when it is ready already. Disarm undoes it.
	Arm(n int) (Wake, bool, error)
	Disarm()
	// Close detaches the writer: what it reserved is discarded, and if it was the last
	// live writer the stream ends (readers drain, then get ErrEndOfStream).
	Close() error
}

// Reader is the reading end of a ring, whatever its kind: *SPSCReader, *MPMCReader and
// *Subscriber.
//
// A Reader is for one goroutine at a time, except Close, which any goroutine may call, any
// number of times: it wakes a blocked call, which returns ErrClosed.
//
// A topic's Subscriber differs: it never sees ErrEndOfStream or ErrPeerDead (a topic
// outlives its publishers: Next waits for the next one); under Overwrite and Latest it
// reports missed records as a *LagError, and records it reads in place must be validated
// after use (Subscriber.Validate); the records an anonymous subscriber borrowed when it
// closes are not delivered again (a durable subscription's are).
type Reader interface {
	// Next borrows the next record in place, waiting for one. The contract every kind keeps:
	// the record stays valid until Release, Reject, Close or the next Next/TryNext/Read/
	// Drain, whichever comes first (an SPSC reader keeps earlier records borrowed too, and
	// releases them all with one store; an MPMC reader releases the previous one first).
	// ErrEndOfStream (io.EOF) once every writer closed and all was read; ErrPeerDead once
	// every writer died.
	Next(ctx context.Context) (Record, error)
	// TryNext is Next that never waits: ErrEmpty.
	TryNext() (Record, error)
	// Release gives the borrowed records back to the writers.
	Release()
	// Reject is Release counting the last record borrowed as rejected (see ErrRejected).
	Reject()
	// Read copies the next record into dst and releases it.
	Read(ctx context.Context, dst []byte) (int, uint32, error)
	// TryRead is Read that never waits.
	TryRead(dst []byte) (int, uint32, error)
	// Drain hands fn the available records, up to max, in place, and releases them.
	Drain(ctx context.Context, fn func(Record) error, max int) (int, error)
	// Ready reports, without blocking or a system call, whether Next would return at once.
	Ready() bool
	// Arm marks the endpoint as waiting for data and returns the futex word an event loop
	// sleeps on; false when it is ready already. Disarm undoes it.
	Arm() (Wake, bool, error)
	Disarm()
	// Maintain does, without waiting, what a blocked Next does about every liveness
	// interval: it looks whether the writers' processes are alive (ErrPeerDead once every
	// writer died and all was read, ErrEndOfStream once the stream ended and all was read)
	// and, on an MPMC ring, repairs what dead peers left (a slot a dead writer claimed, a
	// record a dead reader borrowed). An event loop, which never blocks in Next, calls it
	// for its idle readers about every 100 ms. It makes system calls; nil when all is well.
	Maintain() error
	// Close detaches the reader; records still borrowed are delivered again to the next
	// reader.
	Close() error
}

var (
	_ Writer = (*SPSCWriter)(nil)
	_ Writer = (*MPMCWriter)(nil)
	_ Reader = (*SPSCReader)(nil)
	_ Reader = (*MPMCReader)(nil)
	_ Writer = (*Publisher)(nil)
	_ Reader = (*Subscriber)(nil)
)

// NewWriter attaches a writer of the segment's ring kind. Errors as NewSPSCWriter and
// NewMPMCWriter; ErrKind for a segment that is not a ring.
func NewWriter(seg *shm.Segment, opts Options) (Writer, error) {
	switch k := seg.Descriptor().Kind; k {
	case SPSC:
		return NewSPSCWriter(seg, opts)
	case MPMC:
		return NewMPMCWriter(seg, opts)
	case Topic:
		return NewPublisher(seg, opts)
	default:
		return nil, fmt.Errorf("%w: segment %s is %v", ErrKind, seg.Name(), k)
	}
}

// NewReader attaches a reader of the segment's ring kind. Errors as NewSPSCReader and
// NewMPMCReader; ErrKind for a segment that is not a ring.
func NewReader(seg *shm.Segment, opts Options) (Reader, error) {
	switch k := seg.Descriptor().Kind; k {
	case SPSC:
		return NewSPSCReader(seg, opts)
	case MPMC:
		return NewMPMCReader(seg, opts)
	case Topic:
		return Subscribe(context.Background(), seg, SubscribeOptions{Wait: opts.Wait})
	default:
		return nil, fmt.Errorf("%w: segment %s is %v", ErrKind, seg.Name(), k)
	}
}
