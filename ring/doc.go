// Package ring provides lock-free message rings inside shm segments, shared between
// processes: SPSC (one writer, one reader, variable-length records) and MPMC (any number of
// writers and readers, fixed slots).
//
// Writers reserve room in place, fill it and commit (Reserve/Commit), or copy (Write).
// Readers borrow records in place until they release them (Next/Release), or copy (Read).
// Reserving several records before one Commit, and Drain on the reader, batch the
// publication: one shared store and at most one wake-up per batch. Try forms never block;
// the others wait by the endpoint's Wait strategy (Spin, Sleep, Futex, Adaptive) and honour
// their context.
//
// A writer's Close ends the stream: readers drain what was committed and then get
// ErrClosed. If the writer's process dies instead, readers drain and then get ErrPeerDead,
// and a new writer may take the role over. Each record carries a 32-bit type chosen by the
// writer.
//
// # Caveats
//
// A borrowed Record's Data is shared memory: valid until Release, never after the reader
// or its segment is closed, and only as trustworthy as the writing process. Closing the
// segment waits until borrowed records are released, so release before closing.
//
// The race detector does not see memory outside the Go heap; this package's concurrency is
// proven by cross-process tests that check every message.
package ring
