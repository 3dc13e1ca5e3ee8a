// Package dlq is a dead-letter queue in shared memory: a named segment holding the events
// that failed every attempt, as opaque bytes (the bus's envelopes) with the last error,
// the attempt count, the time they were dead-lettered and the name of the ring they came
// from (Entry.Origin), which a replay writes them back to.
//
// Any number of processes Put entries (bounded: ErrFull when every slot is used) and take
// them out again (Take, Replay): an entry is removed only when the function it is handed
// to succeeds, so a replay that fails, or whose process dies, leaves it in the queue
// (at-least-once). List copies the entries without consuming anything and works on a
// segment opened read-only (Inspect), for operators (`shmctl dlq NAME list`).
//
// The package knows nothing of the bus or of envelopes: an entry's Data is bytes, its
// Type the 32-bit ring record type it travelled with, its Origin a ring segment's name.
// RingSink.Write is the function for Replay that writes entries back to their Origin ring.
//
// # Format
//
// A DLQ is an shm segment of kind Kind ("dlq"). Its data region is an array of
// fixed-size slots (a power of two, Descriptor.Params[0] low 32 bits; the format version in
// the high 32 bits); each slot holds a state word, a sequence number and one entry record
// (record.go has the record's layout, format.go the slot's). The kind header holds the
// sequence counter and the statistics. A slot is Free, Writing (a Put fills it), Ready, or
// Taken (handed to a Take); Writing and Taken name their holder (peer entry and pid), and
// a holder whose process died is repaired by the next Put, Take or Purge: its Writing slot
// becomes Free (the Put never returned nil), its Taken slot Ready again. Entries are taken
// oldest first (by sequence number). Operations scan the slots: a DLQ is for the rare
// event that failed, not for throughput.
//
// Why not an MPMC ring: a ring can list its records without consuming them (ring.Peek),
// but a record a reader has borrowed is behind the read position, so it vanishes from
// List and Len while a replay holds it, and after a replayer dies until some reader
// repairs it; and a record whose replay failed cannot go back to its place. Slots with a
// state word keep every entry visible, in order, until it is gone for good.
//
// Every record read from the segment is checked (lengths, CRC32-C) before use; a bad one
// gives an error wrapping ErrCorrupt, never a panic. A segment truncated under the mapping
// gives shm.ErrTruncated instead of a SIGBUS.
//
// # Caveats
//
// Entries returned by List, Take and Replay are copies, valid forever. Entry.Err is cut to
// MaxErrorLen bytes. Each open Queue holds one of the segment's 64 peer entries.
package dlq
