// Package broker connects processes by name: a server binds a name with Listen and accepts
// connections, a client connects with Dial. A connection is a pair of SPSC rings made for
// it, one each way; request-response runs on top (NewClient, Serve).
//
// Names. Listen creates an MPMC "accept" ring segment named after the server. Dial creates
// the connection's rings, NAME.PID.N.c2s (client to server) and NAME.PID.N.s2c, attaches
// its ends (the c2s writer, the s2c reader), announces NAME.PID.N with one record in the
// accept ring and waits for the server's first record on s2c, which says it attached.
//
// Liveness. The server holds an exclusive role lock on the accept segment (an OFD lock that
// the kernel drops when the process dies): a second server gets ErrInUse, a client finds
// out there is no live server (ErrNoServer), and a server restarted under the same name
// takes over what a dead one left (pending dials included). A connection's peer that dies
// is the rings' business: ring.ErrPeerDead from Recv and Send after about 200 ms.
//
// Cleanup. The connection's ring names are removed by the first side that closes its Conn,
// or by a side that finds its peer dead (Recv, Send); the other side keeps its mapping until
// its own Close. So nothing is left in the directory once a connection ends, however it
// ends, as long as one side lives to see it. A client that dies inside Dial before the
// server attached leaves its two rings with a dead peer and no live one: the server removes
// them if it reaches their announcement, and shmctl gc removes them otherwise.
package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shmq/shmq/loop"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// Options configures Listen and Dial. The zero value means the defaults.
type Options struct {
	// Dir is the segment directory (shm.Options.Dir): $SHMQ_DIR or /dev/shm by default.
	Dir string
	// RingSize is the data size of each of a connection's two SPSC rings, a power of two
	// from 4 KiB (Dial only; the client makes the rings). Default DefaultRingSize.
	RingSize uint64
	// Wait is the wait strategy of the connection's ring ends (ring.Adaptive by default).
	Wait ring.Wait
	// Poison is a debugging mode for tests: Conn.Reserve hands out private buffers, and a
	// buffer written after its send is reported as ErrBufferReused (see Conn.Reserve). It
	// costs an allocation and a copy per reserved record. Building with the tag shmqpoison
	// turns it on for every connection (go test -tags shmqpoison).
	Poison bool
}

// DefaultRingSize is the data size of a connection's rings when Options.RingSize is 0.
const DefaultRingSize = 256 << 10

// maxServerName leaves room in a segment name for ".PID.N.c2s".
const maxServerName = shm.MaxNameLen - 40

// serverRole is the exclusive role the live server holds on its accept segment. Rings use
// roles 1 and 2 on SPSC segments; the accept ring is MPMC and uses none.
const serverRole shm.Role = 100

// Record types the broker itself writes. The accept ring carries typeDial records; the first
// record on a connection's s2c ring is typeAccepted and Dial consumes it, so a Conn's user
// sees only what the peer sent with Send.
const (
	typeDial     uint32 = 0xB0B0_0001
	typeAccepted uint32 = 0xB0B0_0002
)

var acceptSpec = ring.Spec{Kind: ring.MPMC, Size: 64 << 10, SlotSize: 256}

var (
	// ErrInUse is returned by Listen when a live server holds the name (it wraps shm.ErrBusy).
	ErrInUse = fmt.Errorf("broker: name held by a live server: %w", shm.ErrBusy)
	// ErrNoServer is returned by Dial when no live server holds the name. It wraps
	// shm.ErrNotExist.
	ErrNoServer = fmt.Errorf("broker: no server: %w", shm.ErrNotExist)
	// ErrForeign is returned by Listen when name is a segment that is not an accept ring
	// and that a live process has open: it is left alone (it wraps shm.ErrExist).
	ErrForeign = fmt.Errorf("broker: name held by a segment that is not an accept ring, in use: %w", shm.ErrExist)
	// ErrClosed is returned by Accept after the Listener's Close (it matches os.ErrClosed).
	ErrClosed = fmt.Errorf("broker: closed: %w", os.ErrClosed)
)

func (o Options) shm() shm.Options { return shm.Options{Dir: o.Dir} }

func (o Options) ring() ring.Options { return ring.Options{Wait: o.Wait} }

// poisoner returns the Poison mode's state for a new connection, nil when it is off.
func (o Options) poisoner() *poisoner {
	if o.Poison || poisonAlways {
		return &poisoner{}
	}
	return nil
}

func checkServerName(name string) error {
	if err := shm.ValidateName(name); err != nil {
		return &fs.PathError{Op: "broker", Path: name, Err: err}
	}
	if len(name) > maxServerName {
		return &fs.PathError{Op: "broker", Path: name,
			Err: fmt.Errorf("%w: a server name is at most %d bytes", shm.ErrInvalidName, maxServerName)}
	}
	return nil
}

// Listener is a bound server name. Accept is for one goroutine at a time; Close may be
// called from any goroutine, any number of times.
type Listener struct {
	name string
	opts Options
	seg  *shm.Segment
	role *shm.RoleLock
	r    *ring.MPMCReader
	// w keeps the accept ring's stream open: clients' writers come and go, and without a
	// writer of its own the reader would see the end of the stream between dials.
	w *ring.MPMCWriter

	skipped   atomic.Uint64
	closeOnce sync.Once
}

// Listen binds name: it creates the accept ring, or takes over the one a dead (or closed)
// server left, holding the server role on it. Errors: ErrInUse when a live server holds
// name, ErrForeign when name is another kind of segment that a live process has open, shm's
// errors otherwise (an invalid name, a file that is not a ring).
func Listen(name string, opts Options) (*Listener, error) {
	if err := checkServerName(name); err != nil {
		return nil, err
	}
	for tries := 0; ; tries++ {
		l, err := listen(name, opts, tries)
		if l != nil || err != nil {
			return l, err
		}
	}
}

// listen is one attempt of Listen: nil, nil means try again.
func listen(name string, opts Options, tries int) (*Listener, error) {
	seg, err := ring.Create(name, acceptSpec, opts.shm())
	if errors.Is(err, shm.ErrExist) {
		seg, err = shm.Open(name, opts.shm())
		if (errors.Is(err, shm.ErrNotExist) || errors.Is(err, shm.ErrUnsafe)) && tries < 100 {
			return nil, nil // removed in between (an unlinked file has no link): create it
		}
	}
	if err != nil {
		return nil, err
	}
	role, err := seg.AcquireRole(serverRole)
	if err != nil {
		seg.Close()
		if errors.Is(err, shm.ErrBusy) {
			return nil, &fs.PathError{Op: "listen", Path: name, Err: ErrInUse}
		}
		return nil, err
	}
	if !namesSegment(seg, name, opts) {
		// A server closing meanwhile removed the name before it gave the role up: ours is
		// an unlinked file nobody could reach. Start again.
		role.Release()
		seg.Close()
		if tries < 100 {
			return nil, nil
		}
		return nil, &fs.PathError{Op: "listen", Path: name, Err: ErrInUse}
	}
	if spec, err := ring.SpecOf(seg.Descriptor()); err != nil || spec.Kind != ring.MPMC || spec.SlotSize < acceptSpec.SlotSize {
		// Not an accept ring of ours, and no live server holds it: start afresh, unless
		// someone else lives on it (another application's segment of the same name).
		if n, err := seg.LivePeers(); err != nil || n > 1 {
			role.Release()
			seg.Close()
			return nil, &fs.PathError{Op: "listen", Path: name, Err: ErrForeign}
		}
		role.Release()
		seg.Remove()
		seg.Close()
		if seg, err = ring.Create(name, acceptSpec, opts.shm()); err != nil {
			return nil, err
		}
		if role, err = seg.AcquireRole(serverRole); err != nil {
			seg.Close()
			return nil, err
		}
	}
	l := &Listener{name: name, opts: opts, seg: seg, role: role}
	if l.w, err = ring.NewMPMCWriter(seg, ring.Options{Wait: ring.Futex()}); err == nil {
		l.r, err = ring.NewMPMCReader(seg, opts.ring())
	}
	if err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// namesSegment reports whether name (still) refers to the file seg has open: the file now
// under the name lists seg's own peer entry, with the same attach time.
func namesSegment(seg *shm.Segment, name string, opts Options) bool {
	now, err := shm.Open(name, opts.shm())
	if err != nil {
		return false
	}
	defer now.Close()
	mine, err := seg.Peers()
	if err != nil {
		return false
	}
	theirs, err := now.Peers()
	if err != nil {
		return false
	}
	me := seg.Peer().Index()
	for _, p := range mine {
		if p.Index != me {
			continue
		}
		for _, q := range theirs {
			if q.Index == me && q.PID == p.PID && q.Attached.Equal(p.Attached) {
				return true
			}
		}
	}
	return false
}

// Name is the bound name.
func (l *Listener) Name() string { return l.name }

// Skipped counts announcements Accept dropped: the client had gone (closed, died or removed
// its rings) before the server attached, the record was not a valid announcement, or it
// named a connection already attached (a client announces again when the server changed).
func (l *Listener) Skipped() uint64 { return l.skipped.Load() }

// Accept waits for the next client and returns its connection, attached. Announcements of
// clients that went away meanwhile are skipped (and their rings removed). Errors: ctx's,
// ErrClosed after Close.
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	for {
		rec, err := l.r.Next(ctx)
		if err != nil {
			if errors.Is(err, ring.ErrClosed) {
				return nil, ErrClosed
			}
			return nil, err
		}
		base, ok := l.announced(rec)
		if !ok {
			l.r.Release()
			l.skipped.Add(1)
			continue
		}
		// The record is given back only once attach is done: a server that dies in between
		// leaves it borrowed, and the ring hands it to the next server's reader.
		c, err := l.attach(ctx, base)
		l.r.Release()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			l.skipped.Add(1)
			continue
		}
		return c, nil
	}
}

// announced returns the connection a dial record names, if it is one of ours: NAME.PID.N,
// as Dial makes them. Any local process that can open the accept ring can write a record, so
// the name is checked before anything is opened with it.
func (l *Listener) announced(rec ring.Record) (string, bool) {
	if rec.Type != typeDial {
		return "", false
	}
	base := string(rec.Data)
	rest, ok := strings.CutPrefix(base, l.name+".")
	if !ok {
		return "", false
	}
	pid, n, ok := strings.Cut(rest, ".")
	if !ok || !isDecimal(pid) || !isDecimal(n) || shm.ValidateName(base+".c2s") != nil {
		return "", false
	}
	return base, true
}

// isDecimal reports whether s is a non-empty string of ASCII digits.
func isDecimal(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// AddTo is Accept's non-blocking form: it registers the listener's accept ring with an event
// loop, which calls onAccept on its goroutine with each new connection, attached (clients
// that went away are skipped, as by Accept). onEnd, if not nil, gets the accept ring's end:
// ring.ErrClosed after Close. Attaching takes a few system calls on the loop's goroutine.
// Accept must not be called while the listener is on a loop; Remove on the returned source
// takes it off.
func (l *Listener) AddTo(lp *loop.Loop, onAccept func(*Conn), onEnd func(error)) (*loop.Source, error) {
	return lp.Add(l.r, func(rec ring.Record) error {
		base, ok := l.announced(rec)
		if !ok {
			l.skipped.Add(1)
			return nil
		}
		// A new connection's s2c ring is empty: writing the hello never waits.
		c, err := l.attach(context.Background(), base)
		if err != nil {
			l.skipped.Add(1)
			return nil
		}
		onAccept(c)
		return nil
	}, onEnd)
}

// attach opens the server's ends of connection base and tells the client. The rings' names
// are removed on failure only once this side attached both ends (so they are a
// connection's rings, the reader and writer roles were free, and this side took part): a
// record naming rings that are not SPSC, or whose roles are held (a live connection
// announced twice), is skipped and nothing is removed.
func (l *Listener) attach(ctx context.Context, base string) (_ *Conn, err error) {
	c := &Conn{name: base, server: true, poison: l.opts.poisoner()}
	tookPart := false
	defer func() {
		if err != nil {
			if !tookPart {
				c.removed.Store(true) // not ours to remove
			}
			c.Close()
		}
	}()
	sopts := shm.Options{Dir: l.opts.Dir, Kind: ring.SPSC}
	if c.rseg, err = shm.Open(base+".c2s", sopts); err != nil {
		return nil, err
	}
	if c.wseg, err = shm.Open(base+".s2c", sopts); err != nil {
		return nil, err
	}
	if c.r, err = ring.NewSPSCReader(c.rseg, l.opts.ring()); err != nil {
		return nil, err
	}
	if c.w, err = ring.NewSPSCWriter(c.wseg, l.opts.ring()); err != nil {
		return nil, err
	}
	tookPart = true
	st, err := ring.ReadStats(c.rseg)
	if err != nil {
		return nil, err
	}
	if st.WritersOpen == 0 {
		return nil, fmt.Errorf("broker: client of %s is gone", base)
	}
	var hello [8]byte
	binary.LittleEndian.PutUint64(hello[:], uint64(os.Getpid()))
	if err := c.w.Write(ctx, typeAccepted, hello[:]); err != nil {
		return nil, err
	}
	return c, nil
}

// Close unbinds the name: the accept ring is removed (announcements not yet accepted are
// lost; their clients get ErrNoServer) and Accept returns ErrClosed. Connections already
// accepted are not affected.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		if l.r != nil {
			l.r.Close()
		}
		if l.w != nil {
			l.w.Close()
		}
		l.seg.Remove() // we hold the role: the name is ours
		l.role.Release()
		l.seg.Close()
	})
	return nil
}

// connSeq numbers this process's connections.
var connSeq atomic.Uint64

// Dial connects to the server bound to name and returns the connection once the server
// has attached to it. With no live server, Dial fails at once with ErrNoServer if ctx can
// never end (no deadline, no cancellation); otherwise it waits for one until ctx ends, and
// then returns an error matching both ErrNoServer and ctx's error. A server that dies
// before it accepted gives ErrNoServer too.
func Dial(ctx context.Context, name string, opts Options) (*Conn, error) {
	if err := checkServerName(name); err != nil {
		return nil, err
	}
	acc, err := openServer(ctx, name, opts)
	if err != nil {
		return nil, err
	}
	defer acc.Close()
	size := opts.RingSize
	if size == 0 {
		size = DefaultRingSize
	}
	spec := ring.Spec{Kind: ring.SPSC, Size: size}
	c := &Conn{poison: opts.poisoner()}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	for tries := 0; ; tries++ {
		c.name = name + "." + strconv.Itoa(os.Getpid()) + "." + strconv.FormatUint(connSeq.Add(1), 10)
		c.wseg, err = ring.Create(c.name+".c2s", spec, opts.shm())
		if errors.Is(err, shm.ErrExist) && tries < 100 {
			continue // left by an earlier process with our pid
		}
		if err != nil {
			return nil, err
		}
		break
	}
	if c.rseg, err = ring.Create(c.name+".s2c", spec, opts.shm()); err != nil {
		return nil, err
	}
	if c.w, err = ring.NewSPSCWriter(c.wseg, opts.ring()); err != nil {
		return nil, err
	}
	if c.r, err = ring.NewSPSCReader(c.rseg, opts.ring()); err != nil {
		return nil, err
	}
	announce := func() error {
		aw, err := ring.NewMPMCWriter(acc, ring.Options{Wait: ring.Futex()})
		if err != nil {
			return err
		}
		err = aw.Write(ctx, typeDial, []byte(c.name))
		aw.Close()
		return err
	}
	server := acceptReader(acc)
	if err := announce(); err != nil {
		return nil, err
	}
	// Wait for the server's first record, looking every 100 ms whether it still lives, and
	// whether another server took the name over: the one that died may have taken the
	// announcement with it, so it is made again (a duplicate is skipped by the server).
	for {
		sub, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		rec, err := c.r.Next(sub)
		cancel()
		if err == nil {
			typ := rec.Type
			c.r.Release()
			if typ != typeAccepted {
				return nil, fmt.Errorf("broker: dial %s: protocol error: first record of type %#x", name, typ)
			}
			ok = true
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("broker: dial %s: not accepted: %w", name, ctx.Err())
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		if held, err := acc.RoleHeld(serverRole); err != nil || !held {
			return nil, &fs.PathError{Op: "dial", Path: name, Err: fmt.Errorf("%w (it died or closed before accepting)", ErrNoServer)}
		}
		if now := acceptReader(acc); now != server {
			server = now
			if err := announce(); err != nil {
				return nil, err
			}
		}
	}
}

// acceptReader identifies the server reading the accept ring of seg: the live peers with a
// reader attached (only a server reads it), by entry, pid and attach time.
func acceptReader(seg *shm.Segment) string {
	peers, err := seg.Peers()
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, p := range peers {
		if !p.Alive {
			continue
		}
		if _, readers, err := ring.PeerEndpoints(seg, p.Index); err == nil && readers > 0 {
			fmt.Fprintf(&b, "%d/%d/%d/%d;", p.Index, p.PID, p.StartTicks, p.Attached.UnixNano())
		}
	}
	return b.String()
}

// openServer opens name's accept segment once a live server holds it.
func openServer(ctx context.Context, name string, opts Options) (*shm.Segment, error) {
	pause := time.Millisecond
	for {
		seg, err := shm.Open(name, shm.Options{Dir: opts.Dir, Kind: ring.MPMC})
		if err == nil {
			held, herr := seg.RoleHeld(serverRole)
			if herr == nil && held {
				return seg, nil
			}
			seg.Close()
			err = fmt.Errorf("%w (the accept ring has no live server)", ErrNoServer)
		} else if errors.Is(err, shm.ErrNotExist) {
			err = ErrNoServer
		} else {
			return nil, err
		}
		if ctx.Done() == nil {
			return nil, &fs.PathError{Op: "dial", Path: name, Err: err}
		}
		select {
		case <-ctx.Done():
			return nil, &fs.PathError{Op: "dial", Path: name, Err: fmt.Errorf("%w while waiting for one: %w", err, ctx.Err())}
		case <-time.After(pause):
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// Conn is one end of a connection: a ring to send on and a ring to receive from. Send is
// for one goroutine at a time and Recv/Release for one goroutine at a time (they may be two
// different goroutines); Close may be called from any goroutine, any number of times, and
// wakes blocked calls (ring.ErrClosed).
type Conn struct {
	name       string // NAME.PID.N
	server     bool
	wseg, rseg *shm.Segment
	w          *ring.SPSCWriter
	r          *ring.SPSCReader
	poison     *poisoner // Options.Poison; nil when off

	removed   atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// Name is the connection's name, NAME.PID.N: its rings are NAME.PID.N.c2s and .s2c.
func (c *Conn) Name() string { return c.name }

// Send copies p into one record of type typ on the ring to the peer, waiting for room
// until ctx ends. ring.ErrPeerDead when the peer died (the rings' names are then removed),
// ring.ErrPending while records are reserved (Reserve), ErrBufferReused (Options.Poison).
func (c *Conn) Send(ctx context.Context, typ uint32, p []byte) error {
	if c.poison != nil {
		if err := c.poison.checkSend(); err != nil {
			return err
		}
	}
	return c.sendErr(c.w.Write(ctx, typ, p))
}

// Recv borrows the next record from the peer, waiting until ctx ends; it stays valid until
// Release or the next Recv. io.EOF once the peer closed and everything was read,
// ring.ErrPeerDead once it died (the rings' names are then removed).
func (c *Conn) Recv(ctx context.Context) (ring.Record, error) {
	rec, err := c.r.Next(ctx)
	if err != nil && errors.Is(err, ring.ErrPeerDead) {
		c.remove()
	}
	return rec, err
}

// Release gives back the record Recv returned.
func (c *Conn) Release() { c.r.Release() }

// Writer is the connection's sending ring end (for Reserve/Commit in place, or codec).
func (c *Conn) Writer() ring.Writer { return c.w }

// Reader is the connection's receiving ring end (for an event loop's Add, or codec).
func (c *Conn) Reader() ring.Reader { return c.r }

// remove deletes the connection's ring names (once; never a successor's file).
func (c *Conn) remove() {
	if c.removed.Swap(true) {
		return
	}
	for _, s := range []*shm.Segment{c.wseg, c.rseg} {
		if s != nil {
			s.Remove() // ErrNotExist when the peer removed it first
		}
	}
}

// Close detaches this side: the peer's Recv drains what was sent and then gets io.EOF. The
// rings' names are removed (if the peer has not done so already); the peer keeps its
// mapping until it closes too. Records reserved and not committed are dropped. With
// Options.Poison the first Close returns ErrBufferReused if a sent buffer was written
// since the last check; otherwise nil.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		defer func() {
			if c.poison != nil {
				c.closeErr = c.poison.checkClose() // after the rings: a blocked Reserve wakes first
			}
		}()
		if c.w != nil {
			c.w.Close()
		}
		if c.r != nil {
			c.r.Close()
		}
		c.remove()
		for _, s := range []*shm.Segment{c.wseg, c.rseg} {
			if s != nil {
				s.Close()
			}
		}
	})
	return c.closeErr
}
