package bus

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// deadLetters is where events that failed every attempt go. It is an interface so that the
// dead-letter queue's segment format has one home (package dlq, when it lands); localDLQ
// is the stand-in until then.
type deadLetters interface {
	// Put stores env (an envelope) with the subscription's name, the last error and the
	// attempt count. Safe for concurrent use.
	Put(sub string, env []byte, cause error, attempts uint32) error
	Close() error
}

// localDLQ is an MPMC ring NAME.dlq whose records are
//
//	0  u32 attempts
//	4  u16 subscription name length
//	6  u16 error text length
//	8  subscription name, error text, zero padding to a multiple of 8, envelope
type localDLQ struct {
	seg *shm.Segment
	mu  chanMutex
	w   *ring.MPMCWriter
}

type chanMutex chan struct{}

func (m chanMutex) lock()   { m <- struct{}{} }
func (m chanMutex) unlock() { <-m }

const dlqHeader = 8

func openDeadLetters(bus string, cfg Config, opts shm.Options) (deadLetters, error) {
	slot := shm.NextPow2(uint64(cfg.MaxEvent) + 16 + dlqHeader + 64 + 256)
	spec := ring.Spec{Kind: ring.MPMC, Size: max(slot*cfg.DeadLetterLimit, 4096, 2*slot), SlotSize: uint32(slot)}
	seg, _, err := ring.OpenOrCreate(dlqName(bus), spec, opts)
	if err != nil {
		return nil, err
	}
	return &localDLQ{seg: seg, mu: make(chanMutex, 1)}, nil
}

func (d *localDLQ) Put(sub string, env []byte, cause error, attempts uint32) error {
	msg := ""
	if cause != nil {
		msg = cause.Error()
	}
	msg = msg[:min(len(msg), 256)]
	sub = sub[:min(len(sub), 64)]
	off := (dlqHeader + len(sub) + len(msg) + 7) &^ 7
	d.mu.lock()
	defer d.mu.unlock()
	if d.w == nil {
		w, err := ring.NewMPMCWriter(d.seg, ring.Options{})
		if err != nil {
			return err
		}
		d.w = w
	}
	rec, err := d.w.TryReserve(0, off+len(env))
	if errors.Is(err, ring.ErrFull) {
		return fmt.Errorf("bus: dead-letter queue full: %w", err)
	}
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(rec[0:], attempts)
	binary.LittleEndian.PutUint16(rec[4:], uint16(len(sub)))
	binary.LittleEndian.PutUint16(rec[6:], uint16(len(msg)))
	p := dlqHeader + copy(rec[dlqHeader:], sub)
	p += copy(rec[p:], msg)
	clear(rec[p:off])
	copy(rec[off:], env)
	return d.w.Commit()
}

func (d *localDLQ) Close() error {
	d.mu.lock()
	if d.w != nil {
		d.w.Close()
	}
	d.mu.unlock()
	return d.seg.Close()
}

// DeadLetter is an event in the dead-letter queue.
type DeadLetter struct {
	Subscription string
	Error        string
	Attempts     uint32
	Envelope     []byte
}

// parseDeadLetter decodes a record of the local dead-letter queue (a copy).
func parseDeadLetter(b []byte) (DeadLetter, error) {
	if len(b) < dlqHeader {
		return DeadLetter{}, fmt.Errorf("%w: dead letter of %d bytes", ErrCorrupt, len(b))
	}
	ns, ne := int(binary.LittleEndian.Uint16(b[4:])), int(binary.LittleEndian.Uint16(b[6:]))
	off := (dlqHeader + ns + ne + 7) &^ 7
	if off > len(b) {
		return DeadLetter{}, fmt.Errorf("%w: dead letter of %d bytes says %d", ErrCorrupt, len(b), off)
	}
	return DeadLetter{Attempts: binary.LittleEndian.Uint32(b), Subscription: string(b[dlqHeader : dlqHeader+ns]),
		Error: string(b[dlqHeader+ns : dlqHeader+ns+ne]), Envelope: append([]byte(nil), b[off:]...)}, nil
}

// countDeadLetters is the number of events in the dead-letter queue of the bus name.
func countDeadLetters(name string, opts shm.Options) (uint64, error) {
	ds, err := shm.Inspect(dlqName(name), opts)
	if err != nil {
		return 0, err
	}
	defer ds.Close()
	st, err := ring.ReadStats(ds)
	return st.Used, err
}
