//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/shmq/shmq/codec"
	"github.com/shmq/shmq/ring"
)

// The scenarios move messages as fields (sequence number, writer, send time); a msgSender
// and a msgReceiver carry them either as raw bytes (--codec raw, and always on the kernel's
// transports) or as typed values through package codec (--codec fixed or json, rings only).
type msgSender interface {
	sendMsg(ctx context.Context, seq uint64, writer uint32, sendNs int64) error
	// sendBatch sends messages seq0 .. seq0+n-1 (send time 0) as one batch.
	sendBatch(ctx context.Context, seq0 uint64, n int, writer uint32) error
	close() error
}

type msgReceiver interface {
	// recvMsg hands fn one message's fields, or ok=false for a corrupt one; io.EOF at the end.
	recvMsg(ctx context.Context, fn func(seq uint64, writer uint32, sendNs int64, ok bool)) error
	// recvBatch is recvMsg for every message that has arrived, up to max, as one batch.
	recvBatch(ctx context.Context, max int, fn func(seq uint64, writer uint32, sendNs int64, ok bool)) error
	close() error
}

var codecs = []string{"raw", "fixed", "json"}

// fixedSizes are the message sizes --codec fixed supports: its message is a Go struct,
// whose size is fixed when shmbench is compiled.
var fixedSizes = []int{64, 256, 1024, 4096}

// rawMsg carries messages as the bytes of message.go.
type rawMsg struct {
	s       sender
	r       receiver
	size    int
	pattern []byte
}

func (m *rawMsg) sendMsg(ctx context.Context, seq uint64, writer uint32, sendNs int64) error {
	return m.s.send(ctx, m.size, func(p []byte) { encode(p, seq, writer, sendNs, m.pattern) })
}

func (m *rawMsg) recvMsg(ctx context.Context, fn func(uint64, uint32, int64, bool)) error {
	return m.r.recv(ctx, func(p []byte) {
		seq, writer, sent, err := decode(p)
		fn(seq, writer, sent, err == nil)
	})
}

func (m *rawMsg) sendBatch(ctx context.Context, seq0 uint64, n int, writer uint32) error {
	return m.s.sendN(ctx, m.size, n, func(i int, p []byte) { encode(p, seq0+uint64(i), writer, 0, m.pattern) })
}

func (m *rawMsg) recvBatch(ctx context.Context, max int, fn func(uint64, uint32, int64, bool)) error {
	return m.r.recvN(ctx, max, func(p []byte) {
		seq, writer, sent, err := decode(p)
		fn(seq, writer, sent, err == nil)
	})
}

func (m *rawMsg) close() error {
	if m.s != nil {
		return m.s.close()
	}
	return m.r.close()
}

// fieldsCRC is the checksum of a typed message: the same fields and payload that the raw
// format covers.
func fieldsCRC(seq uint64, writer uint32, sendNs int64, payload []byte) uint32 {
	var h [20]byte
	binary.LittleEndian.PutUint64(h[0:], seq)
	binary.LittleEndian.PutUint64(h[8:], uint64(sendNs))
	binary.LittleEndian.PutUint32(h[16:], writer)
	return crc32.Update(crc32.Checksum(h[:], castagnoli), castagnoli, payload)
}

// fixedMsg is the --codec fixed message: P is a byte array that makes the struct size bytes.
type fixedMsg[P any] struct {
	Seq     uint64
	SendNs  int64
	Writer  uint32
	CRC     uint32
	Payload P
}

// jsonMsg is the --codec json message.
type jsonMsg struct {
	Seq     uint64 `json:"seq"`
	SendNs  int64  `json:"send_ns"`
	Writer  uint32 `json:"writer"`
	CRC     uint32 `json:"crc"`
	Payload []byte `json:"payload"`
}

// typedMsg carries messages as values of T through a codec.
type typedMsg[T any] struct {
	s       *codec.Sender[T]
	r       *codec.Receiver[T]
	v       T
	make    func(v *T, seq uint64, writer uint32, sendNs int64) // fills v, checksum included
	check   func(v *T) (seq uint64, writer uint32, sendNs int64, ok bool)
	closeFn func() error
	batchFn func(uint64, uint32, int64, bool) // recvBatch's fn, for batchOne and rejected
	batchCb func(*T) error                    // batchOne, made once
}

func (m *typedMsg[T]) sendMsg(ctx context.Context, seq uint64, writer uint32, sendNs int64) error {
	m.make(&m.v, seq, writer, sendNs)
	return m.s.Send(ctx, &m.v)
}

func (m *typedMsg[T]) recvMsg(ctx context.Context, fn func(uint64, uint32, int64, bool)) error {
	v, err := m.r.Next(ctx)
	if err == ring.ErrEndOfStream {
		return io.EOF
	}
	if err != nil {
		fn(0, 0, 0, false)
		if errors.Is(err, ring.ErrPeerDead) || errors.Is(err, ring.ErrCorrupt) || errors.Is(err, context.Canceled) {
			return err
		}
		return nil // a record the codec refused: counted as corrupt
	}
	fn(m.check(v))
	m.r.Release()
	return nil
}

// sendBatch stages n values and publishes them with one Flush (one Commit).
func (m *typedMsg[T]) sendBatch(ctx context.Context, seq0 uint64, n int, writer uint32) error {
	for i := range n {
		m.make(&m.v, seq0+uint64(i), writer, 0)
		if err := m.s.Stage(ctx, &m.v); err != nil {
			return err
		}
	}
	return m.s.Flush()
}

// recvBatch hands fn up to max values through ReceiveBatch (the ring's Drain); a record the
// codec refuses reaches fn as corrupt through the receiver's Rejected hook.
func (m *typedMsg[T]) recvBatch(ctx context.Context, max int, fn func(uint64, uint32, int64, bool)) error {
	m.batchFn = fn
	_, err := m.r.ReceiveBatch(ctx, m.batchCb, max)
	return err // io.EOF at the end of the stream
}

func (m *typedMsg[T]) close() error { return m.closeFn() }

// newTypedMsg wraps a ring endpoint (from openRingSender or openRingReceiver) in the codec.
func newTypedMsg(codecName string, size int, s sender, r receiver) (msgSender, msgReceiver, error) {
	pattern := make([]byte, size)
	for i := range pattern {
		pattern[i] = byte(i)
	}
	if codecName == "json" {
		m := &typedMsg[jsonMsg]{
			make: func(v *jsonMsg, seq uint64, writer uint32, sendNs int64) {
				*v = jsonMsg{Seq: seq, SendNs: sendNs, Writer: writer, Payload: pattern[:max(size-msgHeader, 0)]}
				v.CRC = fieldsCRC(seq, writer, sendNs, v.Payload)
			},
			check: func(v *jsonMsg) (uint64, uint32, int64, bool) {
				return v.Seq, v.Writer, v.SendNs, v.CRC == fieldsCRC(v.Seq, v.Writer, v.SendNs, v.Payload)
			},
		}
		return wireTyped(m, codec.JSON[jsonMsg](), s, r)
	}
	switch size {
	case 64:
		return newFixedMsg[[40]byte](pattern, s, r)
	case 256:
		return newFixedMsg[[232]byte](pattern, s, r)
	case 1024:
		return newFixedMsg[[1000]byte](pattern, s, r)
	case 4096:
		return newFixedMsg[[4072]byte](pattern, s, r)
	}
	return nil, nil, fmt.Errorf("--codec fixed supports sizes %v, not %d", fixedSizes, size)
}

func newFixedMsg[P any](pattern []byte, s sender, r receiver) (msgSender, msgReceiver, error) {
	c, err := codec.NewFixed[fixedMsg[P]]()
	if err != nil {
		return nil, nil, err
	}
	m := &typedMsg[fixedMsg[P]]{}
	payload := func(v *fixedMsg[P]) []byte { return payloadBytes(&v.Payload) }
	copy(payload(&m.v), pattern[msgHeader:]) // the payload is constant; m.v is reused
	m.make = func(v *fixedMsg[P], seq uint64, writer uint32, sendNs int64) {
		v.Seq, v.SendNs, v.Writer = seq, sendNs, writer
		v.CRC = fieldsCRC(seq, writer, sendNs, payload(v))
	}
	m.check = func(v *fixedMsg[P]) (uint64, uint32, int64, bool) {
		return v.Seq, v.Writer, v.SendNs, v.CRC == fieldsCRC(v.Seq, v.Writer, v.SendNs, payload(v))
	}
	return wireTyped(m, codec.Codec[fixedMsg[P]](c), s, r)
}

func wireTyped[T any](m *typedMsg[T], c codec.Codec[T], s sender, r receiver) (msgSender, msgReceiver, error) {
	if s != nil {
		rs, ok := s.(*ringSender)
		if !ok {
			return nil, nil, errors.New("typed codecs run on the rings only")
		}
		m.s = codec.NewSender(rs.w, 1, c)
		m.closeFn = rs.close
		return m, nil, nil
	}
	rr, ok := r.(*ringReceiver)
	if !ok {
		return nil, nil, errors.New("typed codecs run on the rings only")
	}
	m.r = codec.NewReceiver(rr.r, 1, c)
	m.closeFn = rr.close
	m.batchCb = func(v *T) error { m.batchFn(m.check(v)); return nil }
	m.r.Rejected = func(ring.Record, error) { m.batchFn(0, 0, 0, false) }
	return nil, m, nil
}
