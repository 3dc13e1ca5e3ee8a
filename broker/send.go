package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/shmq/shmq/ring"
)

// ErrBufferReused is returned, with Options.Poison, by the Conn call after a buffer from
// Reserve was written after it was given back (by Commit, Abort or a later Reserve): a
// program error, which without Poison would silently change a message in the ring.
var ErrBufferReused = errors.New("broker: a buffer was written after it was sent (Reserve, then Commit: the buffer is the ring's from then on)")

// Reserve is the ownership-transferring send: it returns a buffer of n bytes for one
// record of type typ in the ring to the peer, waiting for room until ctx ends. Fill it in
// place, then Commit sends it; Abort drops it. The buffer is the caller's only until its
// next call on the sending side (Reserve, Commit, Abort, Send, Close): from then on it is
// the ring's, which may already have given it to the peer, and reading or writing it is a
// program error. Several records may be reserved and filled one after the other before
// one Commit (a batch); a Reserve that finds the ring full may send those before it.
//
// With Options.Poison the buffer is a private copy: Commit copies it into the ring and
// fills it with a poison pattern, and every later call on the sending side, Close
// included, checks that no buffer given back since was written (ErrBufferReused), so
// tests catch a buffer used after its send. Reads after the send see the poison.
//
// Errors: ring.ErrTooLarge, ring.ErrPeerDead (the rings' names are then removed), ctx's,
// ring.ErrClosed, ErrBufferReused (Poison).
func (c *Conn) Reserve(ctx context.Context, typ uint32, n int) ([]byte, error) {
	if c.poison != nil {
		return c.poison.reserve(ctx, c, typ, n)
	}
	p, err := c.w.Reserve(ctx, typ, n)
	return p, c.sendErr(err)
}

// Commit sends the records reserved since the last Commit (ring.ErrNotReserved if none);
// their buffers are the ring's from then on (see Reserve).
func (c *Conn) Commit() error {
	if c.poison != nil {
		return c.poison.commit(c)
	}
	return c.w.Commit()
}

// Abort drops the records reserved since the last Commit: the peer never sees them, and
// their buffers are no longer the caller's.
func (c *Conn) Abort() {
	if c.poison != nil {
		c.poison.abort(c)
		return
	}
	c.w.Abort()
}

// sendErr removes the connection's names when the peer died (as Send does).
func (c *Conn) sendErr(err error) error {
	if err != nil && errors.Is(err, ring.ErrPeerDead) {
		c.remove()
	}
	return err
}

// poisonPattern fills a buffer once it has been sent.
var poisonPattern = [4]byte{0xde, 0xad, 0xbe, 0xef}

// keptPoisoned is how many given-back buffers each check looks at (the newest).
const keptPoisoned = 64

// poisoner is a Conn's Poison mode: Reserve hands out fresh private buffers, never ring
// memory, and the ones given back stay poisoned and are checked. It is a debugging aid:
// an allocation and a copy per record.
type poisoner struct {
	mu      sync.Mutex // Close may check from another goroutine
	pending []shadow   // reserved, not yet given back
	given   [][]byte   // given back and poisoned, newest last
}

// shadow is one reserved record: what the caller fills, and its room in the ring.
type shadow struct {
	buf, room []byte
}

func (p *poisoner) reserve(ctx context.Context, c *Conn, typ uint32, n int) ([]byte, error) {
	p.mu.Lock()
	if err := p.check(); err != nil {
		p.mu.Unlock()
		return nil, err
	}
	// A Reserve may send what is reserved (the ring being full), so those buffers are
	// copied into the ring and given back first.
	p.settle(true)
	p.mu.Unlock()
	// Not under mu: the wait for room must not keep Close from closing the ring.
	room, err := c.w.Reserve(ctx, typ, n)
	if err != nil {
		return nil, c.sendErr(err)
	}
	buf := make([]byte, n)
	p.mu.Lock()
	p.pending = append(p.pending, shadow{buf: buf, room: room})
	p.mu.Unlock()
	return buf, nil
}

func (p *poisoner) commit(c *Conn) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.check(); err != nil {
		p.settle(false)
		c.w.Abort()
		return err
	}
	p.settle(true)
	return c.w.Commit()
}

func (p *poisoner) abort(c *Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.settle(false)
	c.w.Abort()
}

// settle gives the pending buffers back: copied into their rooms in the ring (unless the
// records are being dropped), then poisoned.
func (p *poisoner) settle(copyIn bool) {
	for _, s := range p.pending {
		if copyIn {
			copy(s.room, s.buf)
		}
		poisonFill(s.buf)
		p.given = append(p.given, s.buf)
	}
	p.pending = p.pending[:0]
	if extra := len(p.given) - keptPoisoned; extra > 0 {
		p.given = append(p.given[:0], p.given[extra:]...)
	}
}

// check reports ErrBufferReused when a given-back buffer is no longer all poison, and
// poisons it again, so that each misuse is reported once.
func (p *poisoner) check() error {
	var err error
	for _, b := range p.given {
		for i, v := range b {
			if v != poisonPattern[i%len(poisonPattern)] {
				if err == nil {
					err = fmt.Errorf("%w: byte %d of a %d-byte buffer changed after it was given back", ErrBufferReused, i, len(b))
				}
				poisonFill(b)
				break
			}
		}
	}
	return err
}

func poisonFill(b []byte) {
	for i := range b {
		b[i] = poisonPattern[i%len(poisonPattern)]
	}
}

// checkClose is Close's check, after the rings closed: pending buffers were dropped with
// the ring's Close.
func (p *poisoner) checkClose() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.check()
	p.settle(false)
	return err
}

// checkSend is Send's check (and Stream's Write).
func (p *poisoner) checkSend() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.check()
}
