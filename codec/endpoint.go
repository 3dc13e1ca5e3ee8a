package codec

import (
	"context"
	"errors"
	"fmt"

	"github.com/shmq/shmq/ring"
)

// Sender writes values of T to a ring as records of type id ID. Like the ring writer under
// it, it is for one goroutine at a time.
type Sender[T any] struct {
	w     ring.Writer
	id    uint32
	codec Codec[T]
}

// NewSender returns a Sender that stamps id on every record it writes with codec.
func NewSender[T any](w ring.Writer, id uint32, codec Codec[T]) *Sender[T] {
	return &Sender[T]{w: w, id: id, codec: codec}
}

// Send encodes v into a reserved record and publishes it, waiting for room like the ring's
// Reserve. Errors: the codec's, and the ring's (ErrTooLarge, ErrClosed, ErrPeerDead, ctx's).
func (s *Sender[T]) Send(ctx context.Context, v *T) error {
	if err := s.Stage(ctx, v); err != nil {
		return err
	}
	return s.w.Commit()
}

// TrySend is Send that never blocks: ring.ErrFull when there is no room.
func (s *Sender[T]) TrySend(v *T) error {
	n, err := s.codec.Size(v)
	if err != nil {
		return err
	}
	dst, err := s.w.TryReserve(s.id, n)
	if err != nil {
		return err
	}
	if err := s.codec.Encode(dst, v); err != nil {
		s.w.Abort()
		return err
	}
	return s.w.Commit()
}

// Stage encodes v into a reserved record without publishing it: several staged values go
// out together with one Flush (a batch). If encoding fails, the whole unflushed batch is
// discarded.
func (s *Sender[T]) Stage(ctx context.Context, v *T) error {
	n, err := s.codec.Size(v)
	if err != nil {
		return err
	}
	dst, err := s.w.Reserve(ctx, s.id, n)
	if err != nil {
		return err
	}
	if err := s.codec.Encode(dst, v); err != nil {
		s.w.Abort()
		return err
	}
	return nil
}

// Flush publishes every staged value.
func (s *Sender[T]) Flush() error {
	err := s.w.Commit()
	if errors.Is(err, ring.ErrNotReserved) {
		return nil
	}
	return err
}

// Close closes the ring writer.
func (s *Sender[T]) Close() error { return s.w.Close() }

// Receiver reads values of T from a ring, checking each record's type id. For one goroutine
// at a time.
type Receiver[T any] struct {
	// Rejected, if set, is told of every record ReceiveBatch rejects (another type id, bytes
	// the codec cannot decode, or fn's ring.Reject), while the record is still borrowed:
	// copy rec.Data to keep it (to a dead-letter queue, say).
	Rejected func(rec ring.Record, err error)

	r     ring.Reader
	id    uint32
	codec Codec[T]
	view  func([]byte) (*T, error) // Fixed codecs: in place
	value T                        // other codecs: Next decodes here
}

// NewReceiver returns a Receiver of records of type id decoded with codec.
func NewReceiver[T any](r ring.Reader, id uint32, codec Codec[T]) *Receiver[T] {
	rc := &Receiver[T]{r: r, id: id, codec: codec}
	if f, ok := codec.(*Fixed[T]); ok {
		rc.view = f.View
	}
	return rc
}

// Receive waits for the next record, decodes it into v and releases it. A record of
// another type id is released and reported with ErrWrongType; a record the codec cannot
// decode is released and reported with the codec's error. On a topic whose records can be
// overwritten while read (ring.Overwrite, ring.Latest), the decoded value is validated
// afterwards: a record overwritten meanwhile is reported as the subscriber's
// *ring.LagError, never handed over.
func (r *Receiver[T]) Receive(ctx context.Context, v *T) error {
	rec, err := r.r.Next(ctx)
	if err != nil {
		return err
	}
	defer r.r.Release()
	return r.decode(rec, v)
}

// TryReceive is Receive that never blocks: ring.ErrEmpty when nothing is there.
func (r *Receiver[T]) TryReceive(v *T) error {
	rec, err := r.r.TryNext()
	if err != nil {
		return err
	}
	defer r.r.Release()
	return r.decode(rec, v)
}

func (r *Receiver[T]) decode(rec ring.Record, v *T) error {
	if rec.Type != r.id {
		return fmt.Errorf("%w: got type %d, want %d", ErrWrongType, rec.Type, r.id)
	}
	if err := r.codec.Decode(rec.Data, v); err != nil {
		return err
	}
	return r.Validate()
}

// validator is a Reader whose borrowed records a writer may overwrite (*ring.Subscriber).
type validator interface{ Validate() error }

// Validate reports whether the records borrowed since the last Release are intact: always
// nil, except on a topic whose records can be overwritten while read, where a value Next
// returned in place must be validated after use before it is trusted (see
// ring.Subscriber.Validate).
func (r *Receiver[T]) Validate() error {
	if v, ok := r.r.(validator); ok {
		return v.Validate()
	}
	return nil
}

// Next waits for the next record and returns it as a *T without copying when the codec is
// Fixed (the pointer is into the ring), or decoded into the Receiver's own value otherwise.
// Either way it is valid until Release, which must be called before the next Next.
func (r *Receiver[T]) Next(ctx context.Context) (*T, error) {
	rec, err := r.r.Next(ctx)
	if err != nil {
		return nil, err
	}
	if rec.Type != r.id {
		r.r.Release()
		return nil, fmt.Errorf("%w: got type %d, want %d", ErrWrongType, rec.Type, r.id)
	}
	if r.view != nil {
		p, err := r.view(rec.Data)
		if err != nil {
			r.r.Release()
		}
		return p, err
	}
	if err := r.codec.Decode(rec.Data, &r.value); err != nil {
		r.r.Release()
		return nil, err
	}
	return &r.value, nil
}

// Release gives the record from Next back to the ring.
func (r *Receiver[T]) Release() { r.r.Release() }

// ReceiveBatch waits for at least one record, then hands fn up to max values (all available
// if max <= 0), each valid only during its call, and releases them. A record of another type
// id or one the codec cannot decode is rejected (see ring.Reject): released, counted in the
// ring's statistics, handed to Rejected if it is set, and skipped. fn may reject a value the
// same way by returning ring.Reject(cause). It stops at the first other error from fn, which
// it returns; that record stays in the ring.
func (r *Receiver[T]) ReceiveBatch(ctx context.Context, fn func(*T) error, max int) (int, error) {
	return r.r.Drain(ctx, func(rec ring.Record) error {
		return reportRejected(rec, r.batchOne(rec, fn), r.Rejected)
	}, max)
}

func (r *Receiver[T]) batchOne(rec ring.Record, fn func(*T) error) error {
	if rec.Type != r.id {
		return ring.Reject(fmt.Errorf("%w: got type %d, want %d", ErrWrongType, rec.Type, r.id))
	}
	if r.view != nil {
		p, err := r.view(rec.Data)
		if err != nil {
			return ring.Reject(err)
		}
		return fn(p)
	}
	if err := r.codec.Decode(rec.Data, &r.value); err != nil {
		return ring.Reject(err)
	}
	return fn(&r.value)
}

// reportRejected hands a rejected record to hook, if there is one, and returns err.
func reportRejected(rec ring.Record, err error, hook func(ring.Record, error)) error {
	if hook != nil && errors.Is(err, ring.ErrRejected) {
		hook(rec, err)
	}
	return err
}

// Close closes the ring reader.
func (r *Receiver[T]) Close() error { return r.r.Close() }

// Mux dispatches records of several message types from one ring to their handlers, by the
// record's type id, without decoding records it has no handler for. For one goroutine at a
// time.
type Mux struct {
	handlers map[uint32]func([]byte) error
	// Unknown, if set, receives records of unhandled type ids (return nil to skip them);
	// if nil, Dispatch rejects them with ErrUnknownType.
	Unknown func(ring.Record) error
	// Rejected, if set, is told of every record Serve rejects (an unknown type id, bytes
	// the codec cannot decode, a handler's ring.Reject), while the record is still
	// borrowed: copy rec.Data to keep it (to a dead-letter queue, say).
	Rejected func(rec ring.Record, err error)
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{handlers: map[uint32]func([]byte) error{}} }

// Handle registers fn for records of type id, decoded with codec. With a Fixed codec fn gets
// a *T in place (valid during the call); otherwise a value decoded into a buffer that Handle
// reuses. Registering an id twice replaces the handler.
func Handle[T any](m *Mux, id uint32, codec Codec[T], fn func(*T) error) {
	if f, ok := codec.(*Fixed[T]); ok {
		m.handlers[id] = func(b []byte) error {
			p, err := f.View(b)
			if err != nil {
				return ring.Reject(err)
			}
			return fn(p)
		}
		return
	}
	var v T
	m.handlers[id] = func(b []byte) error {
		if err := codec.Decode(b, &v); err != nil {
			return ring.Reject(err)
		}
		return fn(&v)
	}
}

// Dispatch hands rec to the handler of its type id and returns the handler's error. A record
// that cannot be handled (an unknown type id with no Unknown hook, bytes the codec cannot
// decode) gives an error wrapping ring.ErrRejected and the cause (ErrUnknownType, the
// codec's error).
func (m *Mux) Dispatch(rec ring.Record) error {
	h, ok := m.handlers[rec.Type]
	if !ok {
		if m.Unknown != nil {
			return m.Unknown(rec)
		}
		return ring.Reject(fmt.Errorf("%w %d", ErrUnknownType, rec.Type))
	}
	return h(rec.Data)
}

// Serve dispatches records from r until ctx ends, the stream ends (io.EOF, returned as
// nil), the ring fails (ErrPeerDead, ErrClosed, ErrCorrupt), or a handler fails; it returns
// that error. Records are handled in place and released in batches. A record that cannot be
// handled, or that a handler rejects with ring.Reject, is released, counted, handed to
// Rejected and skipped: one bad record does not stop the consumer.
func (m *Mux) Serve(ctx context.Context, r ring.Reader) error {
	fn := func(rec ring.Record) error { return reportRejected(rec, m.Dispatch(rec), m.Rejected) }
	for {
		if _, err := r.Drain(ctx, fn, 0); err != nil {
			if err == ring.ErrEndOfStream {
				return nil
			}
			return err
		}
	}
}
