package codec

import (
	"context"
	"errors"
	"fmt"

	"github.com/shmq/shmq/ring"
)

// RecordWriter is the writing side of a ring: *ring.SPSCWriter and *ring.MPMCWriter.
type RecordWriter interface {
	Reserve(ctx context.Context, typ uint32, n int) ([]byte, error)
	TryReserve(typ uint32, n int) ([]byte, error)
	Commit() error
	Abort()
	Close() error
}

// RecordReader is the reading side of a ring: *ring.SPSCReader and *ring.MPMCReader.
type RecordReader interface {
	Next(ctx context.Context) (ring.Record, error)
	TryNext() (ring.Record, error)
	Release()
	Drain(ctx context.Context, fn func(ring.Record) error, max int) (int, error)
	Close() error
}

// Sender writes values of T to a ring as records of type id ID. Like the ring writer under
// it, it is for one goroutine at a time.
type Sender[T any] struct {
	w     RecordWriter
	id    uint32
	codec Codec[T]
}

// NewSender returns a Sender that stamps id on every record it writes with codec.
func NewSender[T any](w RecordWriter, id uint32, codec Codec[T]) *Sender[T] {
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
	r     RecordReader
	id    uint32
	codec Codec[T]
	view  func([]byte) (*T, error) // Fixed codecs: in place
	value T                        // other codecs: Next decodes here
}

// NewReceiver returns a Receiver of records of type id decoded with codec.
func NewReceiver[T any](r RecordReader, id uint32, codec Codec[T]) *Receiver[T] {
	rc := &Receiver[T]{r: r, id: id, codec: codec}
	if f, ok := codec.(*Fixed[T]); ok {
		rc.view = f.View
	}
	return rc
}

// Receive waits for the next record, decodes it into v and releases it. A record of
// another type id is released and reported with ErrWrongType; a record the codec cannot
// decode is released and reported with the codec's error.
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
	return r.codec.Decode(rec.Data, v)
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
// if max <= 0), each valid only during its call, and releases them. It stops at the first
// error from fn or from decoding.
func (r *Receiver[T]) ReceiveBatch(ctx context.Context, fn func(*T) error, max int) (int, error) {
	return r.r.Drain(ctx, func(rec ring.Record) error {
		if rec.Type != r.id {
			return fmt.Errorf("%w: got type %d, want %d", ErrWrongType, rec.Type, r.id)
		}
		if r.view != nil {
			p, err := r.view(rec.Data)
			if err != nil {
				return err
			}
			return fn(p)
		}
		if err := r.codec.Decode(rec.Data, &r.value); err != nil {
			return err
		}
		return fn(&r.value)
	}, max)
}

// Close closes the ring reader.
func (r *Receiver[T]) Close() error { return r.r.Close() }

// Mux dispatches records of several message types from one ring to their handlers, by the
// record's type id, without decoding records it has no handler for. For one goroutine at a
// time.
type Mux struct {
	handlers map[uint32]func([]byte) error
	// Unknown, if set, receives records of unhandled type ids (return nil to skip them);
	// if nil, Dispatch returns ErrUnknownType for them.
	Unknown func(ring.Record) error
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
				return err
			}
			return fn(p)
		}
		return
	}
	var v T
	m.handlers[id] = func(b []byte) error {
		if err := codec.Decode(b, &v); err != nil {
			return err
		}
		return fn(&v)
	}
}

// Dispatch hands rec to the handler of its type id and returns the handler's (or the
// decoder's) error.
func (m *Mux) Dispatch(rec ring.Record) error {
	h, ok := m.handlers[rec.Type]
	if !ok {
		if m.Unknown != nil {
			return m.Unknown(rec)
		}
		return fmt.Errorf("%w %d", ErrUnknownType, rec.Type)
	}
	return h(rec.Data)
}

// Serve dispatches records from r until ctx ends, the ring ends (ErrClosed, ErrPeerDead), or
// a handler fails; it returns that error. Records are handled in place and released in
// batches.
func (m *Mux) Serve(ctx context.Context, r RecordReader) error {
	for {
		if _, err := r.Drain(ctx, m.Dispatch, 0); err != nil {
			return err
		}
	}
}
