// Package ring provides lock-free message rings inside shm segments, shared between
// processes: SPSC (one writer, one reader, variable-length records), MPMC (any number of
// writers and readers, fixed slots, each record read once) and Topic (publish-subscribe:
// any number of publishers, each record read in place by every subscriber at its own
// position, with a Block, Overwrite or Latest policy), behind one contract, Writer and
// Reader. Package topic opens topics by name.
//
// Create a ring segment with Create or OpenOrCreate (a Spec names the kind and sizes), or
// wait for another process to create it with shm.WaitOpen; attach endpoints with NewWriter
// and NewReader, which pick the kind from the segment. The process that should remove the
// segment says so (shm.Options.RemoveOnClose).
//
// Writers reserve room in place, fill it and commit (Reserve/Commit), or copy (Write).
// Readers borrow records in place until they release them (Next/Release), or copy (Read).
// Reserving several records before one Commit, and Drain on the reader, batch the
// publication: one shared store and at most one wake-up per batch. Try forms never block;
// the others wait by the endpoint's Wait strategy (Spin, Sleep, Futex, Adaptive) and honour
// their context. Each record carries a 32-bit type chosen by the writer.
//
// A writer's attach opens the stream; the Close of the last live writer ends it: readers
// drain what was committed and then get io.EOF (ErrEndOfStream). A writer that attaches
// later starts a new stream. If every writer's process died instead, readers drain and then
// get ErrPeerDead, until a writer attaches again. A reader that cannot take a record rejects
// it (Reject, or ring.Reject from a Drain callback) and goes on. Topics differ: they have no
// end of stream, and under Overwrite a lapped subscriber gets a *LagError with the count it
// missed.
//
// An endpoint belongs to one goroutine at a time; Close may come from any goroutine, any
// number of times, and so may the Close of its segment, which closes the endpoint first.
// Neither takes a lock on the per-message path. Ready, Arm, Disarm and Maintain let an
// event loop (package loop) wait on many endpoints with one kernel wait.
//
// A waiter sleeps in the kernel (Futex, Adaptive) at most 100 ms at a time at first, to
// check that the other side's processes live; after 200 ms idle it watches their deaths
// instead (a pidfd each) and sleeps up to 30 s (an MPMC reader 10 s: it also repairs what
// dead readers left, and their deaths do not wake it), woken by a publish, a new peer or a
// death;
// the idle waiters of a process wake together, on one 30 s grid. A death is reported about
// 10 ms after the watch wakes the waiter (a second check confirms it).
//
// # Caveats
//
// A borrowed Record's Data is shared memory: valid until Release (or the reader's next
// Next), and only as trustworthy as the writing process. Under a topic's Overwrite and
// Latest policies a publisher may overwrite it while it is read: validate after use
// (Subscriber.Validate) or copy (Read). Records still borrowed when their endpoint or
// segment closes stay mapped until they are released; Segment.Close then returns
// shm.ErrBorrowed instead of waiting.
//
// A segment's file truncated by another process (of the same user) loses pages under the
// mapping, and touching one raises SIGBUS. This package turns that into an error wrapping
// shm.ErrTruncated where it can afford debug.SetPanicOnFault (a call to set it and one to
// restore it, per goroutine): in the views (ReadStats, Peek, ...), in the wait of a
// blocking call (a Reserve, Write, ReserveBatch or Next that had to wait, which also checks
// the file's size every 100 ms or, idle, at each wake-up: up to 30 s), in Read and Drain
// (once per call; a Drain callback's use of its records included), in Close, Arm, Disarm,
// Maintain and the constructors, and in package shm's own accesses to the peer table. The
// endpoint is then broken: every later call returns the same error without touching the
// mapping, Release and Abort give back what it held, and Close detaches what it can. Still
// exposed, and killed by SIGBUS if the pages they touch are gone: the single-record fast
// paths (TryReserve, TryWrite, Commit, Abort, TryNext, Release, Reject, Ready, and Reserve,
// Write or Next when they need not wait), which a guard would slow as it slows Read (one
// per call: +10-21% CPU time for a 64-byte record on the project's VM); a caller's
// own use of a reserved slice or of a borrowed Record outside Drain's callback; and a
// topic publisher's wait for its lock. A program that must survive a truncation anywhere runs the
// goroutine that uses its endpoints under debug.SetPanicOnFault(true) (set once: nothing
// per call) with a deferred recover, and asks shm's Segment.Fault whether what it
// recovered was a truncation of that segment (cmd/shmbench's children do).
//
// The race detector does not see memory outside the Go heap; this package's concurrency is
// proven by cross-process tests that check every message.
package ring
