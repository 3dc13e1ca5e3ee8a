//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shmq/shmq/shm"
)

// The floor transport is the simplest shared-memory code that moves the benchmark's
// messages between two processes, with no shmq code at all: the hardware's floor to
// compare the rings with. It only spins (its wait is "spin"), trusts its peer, and checks
// nothing beyond the message checksum that every transport's reader verifies.
//
//   - throughput, latency, idle: a single-producer single-consumer ring of fixed-size
//     records (layout in floor_unsafe.go). The writer encodes records in place, one
//     position store per batch; the reader spins on the write position, copies each record
//     out, verifies it, and stores its position once per batch. At large sizes (>= 64 KiB)
//     the ring is a handful of message-sized buffers: a plain memcpy in, memcpy out.
//   - pingpong: two words on their own cache lines, each side spinning on a load of the
//     other's word and answering with a store; no payload moves.

// floorEnd is the ping that ends a floor ping-pong.
const floorEnd = ^uint64(0)

// errStalled is returned by a floor endpoint whose peer made no progress for far longer
// than a case lasts: the peer died (the floor has no liveness checks of its own).
var errStalled = errors.New("floor: peer made no progress")

// spinRingBytes is the data size of the SPSC ring segment shmbench makes for messages of
// size bytes; the floor's ring has the same number of bytes.
func spinRingBytes(size int) uint64 {
	return max(1<<20, shm.NextPow2(uint64(4*(size+8))))
}

// floorCapacity is how many records of size bytes the floor's ring holds (at least 2, so
// that the writer fills one while the reader copies the other).
func floorCapacity(size int) int {
	return max(int(spinRingBytes(size)/uint64(size)), 2)
}

// newFloorFile makes the floor's shared memory: an anonymous memfd of n zero bytes, which
// the parent hands to both children as file 3 and which disappears with the last of them.
func newFloorFile(n int) (*os.File, error) {
	fd, err := unix.MemfdCreate("shmbench-floor", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "floor")
	if err := f.Truncate(int64(n)); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// mapFloor maps all of f shared, read-write, and closes f (the mapping stays for the life
// of the process).
func mapFloor(f *os.File) ([]byte, error) {
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() < floorData {
		return nil, fmt.Errorf("floor: shared memory of %d bytes, want at least %d", st.Size(), floorData)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("floor: mmap: %w", err)
	}
	return mem, nil
}

// spinner bounds a spin: after stall without progress it gives up, so that a dead peer
// ends a case with an error instead of a hang. It reads the clock once every 64Ki spins.
type spinner struct {
	n        uint32
	deadline int64
	stall    time.Duration
}

func (s *spinner) spin() error {
	s.n++
	if s.n&0xffff != 0 {
		return nil
	}
	now := monotonicNow()
	if s.deadline == 0 {
		s.deadline = now + s.stall.Nanoseconds()
	} else if now > s.deadline {
		return errStalled
	}
	return nil
}

// floorRing is one end of the floor's record ring: a sender (writer) or a receiver
// (reader), used by one goroutine.
type floorRing struct {
	written, read, closed *uint64 // the shared words (floor_unsafe.go)
	data                  []byte  // capacity records of size bytes
	size                  int
	capacity              uint64
	writer                bool
	pos                   uint64 // records this end published (writer) or consumed (reader)
	idx                   uint64 // pos % capacity, kept without a division
	cached                uint64 // the other end's position as last loaded
	stall                 time.Duration
}

// newFloorRing maps f (see mapFloor) as a ring of size-byte records.
func newFloorRing(f *os.File, size int, writer bool, stall time.Duration) (*floorRing, error) {
	mem, err := mapFloor(f)
	if err != nil {
		return nil, err
	}
	capacity := (len(mem) - floorData) / size
	if capacity < 1 {
		return nil, fmt.Errorf("floor: %d bytes hold no record of %d bytes", len(mem), size)
	}
	return &floorRing{
		written: floorWord(mem, floorWritten), read: floorWord(mem, floorRead), closed: floorWord(mem, floorClosed),
		data: mem[floorData : floorData+capacity*size], size: size, capacity: uint64(capacity),
		writer: writer, stall: stall,
	}, nil
}

// slot returns the record at f.idx and moves f.idx on.
func (f *floorRing) slot() []byte {
	off := int(f.idx) * f.size
	if f.idx++; f.idx == f.capacity {
		f.idx = 0
	}
	return f.data[off : off+f.size : off+f.size]
}

// awaitRoom spins until k more records fit.
func (f *floorRing) awaitRoom(k uint64) error {
	s := spinner{stall: f.stall}
	for f.pos+k-f.cached > f.capacity {
		f.cached = f.loadRead()
		if f.pos+k-f.cached <= f.capacity {
			break
		}
		if err := s.spin(); err != nil {
			return err
		}
	}
	return nil
}

func (f *floorRing) send(ctx context.Context, size int, fill func([]byte)) error {
	if err := f.awaitRoom(1); err != nil {
		return err
	}
	fill(f.slot())
	f.pos++
	f.publish(f.pos)
	return nil
}

// sendN writes n records and publishes them with one store (a batch larger than the ring
// goes out in ring-sized pieces).
func (f *floorRing) sendN(ctx context.Context, size, n int, fill func(int, []byte)) error {
	for i := 0; i < n; {
		k := min(uint64(n-i), f.capacity)
		if err := f.awaitRoom(k); err != nil {
			return err
		}
		for j := range int(k) {
			fill(i+j, f.slot())
		}
		f.pos += k
		f.publish(f.pos)
		i += int(k)
	}
	return nil
}

// awaitData spins until a record is published, and returns io.EOF once the writer closed
// and everything was read.
func (f *floorRing) awaitData() error {
	s := spinner{stall: f.stall}
	for f.cached == f.pos {
		if f.cached = f.loadWritten(); f.cached != f.pos {
			break
		}
		if f.loadClosed() {
			// Closed after its last publish: this load sees the final position.
			if f.cached = f.loadWritten(); f.cached == f.pos {
				return io.EOF
			}
			break
		}
		if err := s.spin(); err != nil {
			return err
		}
	}
	return nil
}

func (f *floorRing) recv(ctx context.Context, fn func([]byte)) error {
	return f.recvN(ctx, 1, fn)
}

// recvN waits for records, then hands fn up to max of them (all that are published if
// max <= 0) in place, as the rings' readers do, and releases them with one store.
func (f *floorRing) recvN(_ context.Context, max int, fn func([]byte)) error {
	if err := f.awaitData(); err != nil {
		return err
	}
	n := f.cached - f.pos
	if max > 0 {
		n = min(n, uint64(max))
	}
	for range n {
		fn(f.slot()) // the writer cannot reuse it before the release below
	}
	f.pos += n
	f.release(f.pos)
	return nil
}

// close ends the stream (writer); a reader has nothing to let go.
func (f *floorRing) close() error {
	if f.writer {
		f.closeStream()
	}
	return nil
}

// runFloorPinger stores a sequence number in the ping word, spins until the echoer copied
// it to the pong word, and records half the round trip, for cfg.Duration; then it stores
// floorEnd.
func runFloorPinger(cfg childConfig, f *os.File) (childReport, error) {
	var rep childReport
	mem, err := mapFloor(f)
	if err != nil {
		return rep, err
	}
	ping, pong := floorWord(mem, floorPing), floorWord(mem, floorPong)
	stall := cfg.Duration + 30*time.Second
	hist := newHistogram()
	cpu0 := cpuSeconds()
	start := monotonicNow()
	end := start + cfg.Duration.Nanoseconds()
	seq := uint64(1)
	for ; monotonicNow() < end; seq++ {
		sent := monotonicNow()
		storeWord(ping, seq)
		s := spinner{stall: stall}
		for {
			v := loadWord(pong)
			if v == seq {
				break
			}
			if v != seq-1 {
				rep.Corrupt++
				return rep, fmt.Errorf("floor: pong %d for ping %d", v, seq)
			}
			if err := s.spin(); err != nil {
				return rep, err
			}
		}
		rep.Received++
		_ = hist.RecordValue(max((monotonicNow()-sent)/2, 1))
	}
	rep.Sent = seq - 1
	rep.Seconds = time.Duration(monotonicNow() - start).Seconds()
	rep.CPU = cpuSeconds() - cpu0
	rep.Latency = hist.Export()
	storeWord(ping, floorEnd)
	return rep, nil
}

// runFloorEchoer copies every new ping word to the pong word until it reads floorEnd.
func runFloorEchoer(cfg childConfig, f *os.File) (childReport, error) {
	var rep childReport
	mem, err := mapFloor(f)
	if err != nil {
		return rep, err
	}
	ping, pong := floorWord(mem, floorPing), floorWord(mem, floorPong)
	stall := cfg.Duration + 30*time.Second
	cpu0 := cpuSeconds()
	last := uint64(0)
	for {
		s := spinner{stall: stall}
		v := loadWord(ping)
		for v == last {
			if err := s.spin(); err != nil {
				return rep, err
			}
			v = loadWord(ping)
		}
		if v == floorEnd {
			break
		}
		storeWord(pong, v)
		last = v
		rep.Received++
	}
	rep.CPU = cpuSeconds() - cpu0
	return rep, nil
}
