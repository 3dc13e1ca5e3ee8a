package bus

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync/atomic"

	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/internal/fence"
	"github.com/shmq/shmq/internal/layout"
	"github.com/shmq/shmq/shm"
)

// This file is the one home of the bus's own formats: the names of its segments and the
// registry segment's layout.
//
// A bus NAME is a set of segments in one directory:
//
//	NAME.bus                  the registry (kind "bus", this file)
//	NAME.be.critical|normal|low   one topic per priority lane (ring.Overwrite): best-effort
//	                          and latest-only subscribers read them; a publisher never waits
//	NAME.q.SUB.critical|normal|low  one MPMC ring per lane for each Reliable subscription SUB
//	NAME.dlq                  the dead-letter queue (package dlq; deadletter.go says what
//	                          its entries hold)
//	NAME.metrics, NAME.m.SUB  metrics sets (package metrics; metrics.go has their schemas)
//
// # Registry layout, version 1 (the data region; little-endian)
//
//	0    u32  format version (1)
//	8    u64  generation: even when stable, odd while a registrar writes an entry
//	64   entries, regEntries of regEntrySize bytes:
//	       0   u32  state: 0 free, 1 active
//	       4   u16  name length (1 to maxSubName)
//	       6   u8   type filter count (0: every type), at most maxFilter
//	       7   u8   source filter count (0: every source), at most maxFilter
//	       8   [64] name
//	       72  [16]u32 type ids (envelope.TypeID of each type name)
//	       136 [16]u32 source ids (envelope.TypeID of each source name)
//	       200 i64  creation time, Unix nanoseconds
//	       252 u32  CRC-32C of bytes 0 to 252
//
// Registrars (Subscribe and Unsubscribe of a Reliable subscription) take the registry's
// role lock (shm.AcquireRole(roleRegistrar)), make the generation odd, write one entry,
// and make it even again. Publishers load the generation once per Publish and reread the
// table only when it changed: a copy taken while the generation stayed even and the same,
// each entry checked by its CRC. A registrar that died mid-write leaves the generation odd
// and one entry with a bad CRC: readers skip that entry, and the next registrar clears it.
// The filters are hashes: a publisher may queue an event a subscription does not want
// (a hash collision), never skip one it wants; the worker compares the names.

// Kind is the shm kind of a bus registry segment.
const Kind shm.Kind = 16

func init() { shm.RegisterKind(Kind, "bus") }

const (
	regVersion      = 1
	regOffVersion   = 0
	regOffGen       = 8
	regOffEntries   = 64
	regEntrySize    = 256
	regEntries      = 64
	regDataSize     = 32 << 10
	maxSubName      = 64
	maxFilter       = 16
	entOffState     = 0
	entOffNameLen   = 4
	entOffTypes     = 6
	entOffSources   = 7
	entOffName      = 8
	entOffTypeIDs   = 72
	entOffSourceIDs = 136
	entOffCreated   = 200
	entOffCRC       = 252

	roleRegistrar shm.Role = 1
)

var _ [regDataSize - regOffEntries - regEntries*regEntrySize]struct{} // the entries fit
var _ [entOffCRC - entOffCreated - 8]struct{}                         // created ends before the CRC

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Segment names.
func registryName(bus string) string { return bus + ".bus" }
func dlqName(bus string) string      { return bus + ".dlq" }
func laneName(bus string, p envelope.Priority) string {
	return bus + ".be." + p.String()
}
func queueName(bus, sub string, p envelope.Priority) string {
	return bus + ".q." + sub + "." + p.String()
}

// subEntry is a Reliable subscription as the registry describes it.
type subEntry struct {
	name    string
	types   []uint32 // empty: every type
	sources []uint32 // empty: every source
	created int64
}

// wants reports whether the entry's filters let an event of typeID from sourceID through.
func (e *subEntry) wants(typeID, sourceID uint32) bool {
	return matchID(e.types, typeID) && matchID(e.sources, sourceID)
}

func matchID(ids []uint32, id uint32) bool {
	if len(ids) == 0 {
		return true
	}
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// registry is an open registry segment.
type registry struct {
	seg *shm.Segment
	gen *uint64
}

func registrySpec() shm.Spec {
	return shm.Spec{Kind: Kind, DataSize: regDataSize, Params: [2]uint64{regVersion}}
}

func openRegistry(bus string, opts shm.Options) (*registry, error) {
	seg, created, err := shm.OpenOrCreate(registryName(bus), registrySpec(), opts)
	if err != nil {
		return nil, err
	}
	d := seg.Data()
	if created {
		binary.LittleEndian.PutUint32(d[regOffVersion:], regVersion)
	}
	if v := binary.LittleEndian.Uint32(d[regOffVersion:]); v != regVersion && !created {
		// A creator writes the version right after creating; zero means it has not yet.
		if v != 0 {
			seg.Close()
			return nil, fmt.Errorf("%w: %s has format version %d, this build reads %d", ErrCorrupt, seg.Name(), v, regVersion)
		}
	}
	return &registry{seg: seg, gen: layout.Uint64(d, regOffGen)}, nil
}

// generation is the registry's generation word (acquire load: a copy of the table taken
// after it reflects every entry written before the registrar's release store of it).
func (r *registry) generation() uint64 { return atomic.LoadUint64(r.gen) }

// read copies the active entries. It retries while a registrar writes (odd or changed
// generation), up to a bound after which it reads anyway and trusts only entries whose
// CRC holds (a registrar died mid-write). It returns the generation the copy belongs to.
func (r *registry) read() ([]subEntry, uint64) {
	var buf [regEntries * regEntrySize]byte
	d := r.seg.Data()
	var gen uint64
	for try := 0; ; try++ {
		gen = atomic.LoadUint64(r.gen)
		copy(buf[:], d[regOffEntries:])
		fence.LoadLoad() // the copy's loads come before the second load of the generation
		if gen%2 == 0 && atomic.LoadUint64(r.gen) == gen || try > 10000 {
			break
		}
	}
	var out []subEntry
	for i := range regEntries {
		if e, ok := parseEntry(buf[i*regEntrySize : (i+1)*regEntrySize]); ok {
			out = append(out, e)
		}
	}
	return out, gen
}

// readOnly is read for a registry mapped read-only (shm.Inspect), whose generation word is
// not set up: the same copy-and-check loop.
func (r *registry) readOnly() ([]subEntry, uint64) {
	r.gen = layout.Uint64(r.seg.Data(), regOffGen)
	return r.read()
}

// parseEntry checks and decodes one entry copied out of shared memory.
func parseEntry(b []byte) (subEntry, bool) {
	le := binary.LittleEndian
	if le.Uint32(b[entOffState:]) != 1 || le.Uint32(b[entOffCRC:]) != crc32.Checksum(b[:entOffCRC], castagnoli) {
		return subEntry{}, false
	}
	n, nt, ns := int(le.Uint16(b[entOffNameLen:])), int(b[entOffTypes]), int(b[entOffSources])
	if n < 1 || n > maxSubName || nt > maxFilter || ns > maxFilter {
		return subEntry{}, false
	}
	e := subEntry{name: string(b[entOffName : entOffName+n]), created: int64(le.Uint64(b[entOffCreated:]))}
	for i := range nt {
		e.types = append(e.types, le.Uint32(b[entOffTypeIDs+4*i:]))
	}
	for i := range ns {
		e.sources = append(e.sources, le.Uint32(b[entOffSourceIDs+4*i:]))
	}
	return e, true
}

// putEntry encodes e into b (regEntrySize bytes), CRC included.
func putEntry(b []byte, e subEntry) {
	le := binary.LittleEndian
	clear(b)
	le.PutUint32(b[entOffState:], 1)
	le.PutUint16(b[entOffNameLen:], uint16(len(e.name)))
	b[entOffTypes], b[entOffSources] = byte(len(e.types)), byte(len(e.sources))
	copy(b[entOffName:], e.name)
	for i, id := range e.types {
		le.PutUint32(b[entOffTypeIDs+4*i:], id)
	}
	for i, id := range e.sources {
		le.PutUint32(b[entOffSourceIDs+4*i:], id)
	}
	le.PutUint64(b[entOffCreated:], uint64(e.created))
	le.PutUint32(b[entOffCRC:], crc32.Checksum(b[:entOffCRC], castagnoli))
}

// update runs fn with the registry's entries region while holding the registrar role and
// an odd generation; fn returns whether it changed anything. It waits (polling) while
// another registrar holds the role.
func (r *registry) update(fn func(entries []byte) (bool, error)) error {
	var lock *shm.RoleLock
	for {
		var err error
		lock, err = r.seg.AcquireRole(roleRegistrar)
		if err == nil {
			break
		}
		if !isBusy(err) {
			return err
		}
		sleepBriefly()
	}
	defer lock.Release()
	d := r.seg.Data()
	entries := d[regOffEntries : regOffEntries+regEntries*regEntrySize]
	gen := atomic.LoadUint64(r.gen)
	if gen%2 == 1 { // a registrar died mid-write: clear its torn entry
		for i := range regEntries {
			b := entries[i*regEntrySize : (i+1)*regEntrySize]
			if _, ok := parseEntry(b); !ok && binary.LittleEndian.Uint32(b) != 0 {
				clear(b)
			}
		}
		gen++
		atomic.StoreUint64(r.gen, gen)
	}
	atomic.StoreUint64(r.gen, gen+1) // odd: readers retry; pairs with their loads around the copy
	fence.StoreStore()               // the odd generation is visible before any entry byte changes
	changed, err := fn(entries)
	if !changed {
		atomic.StoreUint64(r.gen, gen)
		return err
	}
	atomic.StoreUint64(r.gen, gen+2) // even and new: the change is visible to the next Publish
	return err
}

// add registers e unless an entry of its name exists (then it is replaced if its filters
// differ). ErrRegistryFull when no entry is free.
func (r *registry) add(e subEntry) error {
	return r.update(func(entries []byte) (bool, error) {
		free := -1
		for i := range regEntries {
			b := entries[i*regEntrySize : (i+1)*regEntrySize]
			old, ok := parseEntry(b)
			if !ok {
				if free < 0 {
					free = i
				}
				continue
			}
			if old.name == e.name {
				if sameIDs(old.types, e.types) && sameIDs(old.sources, e.sources) {
					return false, nil
				}
				e.created = old.created
				putEntry(b, e)
				return true, nil
			}
		}
		if free < 0 {
			return false, fmt.Errorf("%w: %d Reliable subscriptions", ErrRegistryFull, regEntries)
		}
		putEntry(entries[free*regEntrySize:(free+1)*regEntrySize], e)
		return true, nil
	})
}

// remove deletes the entry named name; it reports whether there was one.
func (r *registry) remove(name string) (bool, error) {
	found := false
	err := r.update(func(entries []byte) (bool, error) {
		for i := range regEntries {
			b := entries[i*regEntrySize : (i+1)*regEntrySize]
			if old, ok := parseEntry(b); ok && old.name == name {
				clear(b)
				found = true
			}
		}
		return found, nil
	})
	return found, err
}

func sameIDs(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
