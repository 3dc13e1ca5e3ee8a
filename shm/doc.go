// Package shm manages named shared-memory segments: files in /dev/shm (or another
// directory) that cooperating processes map to exchange messages. It knows segments, peers
// and liveness, and nothing of what the data region holds: the layer above (package ring)
// defines the segment kinds, registers their names with RegisterKind, keeps its parameters
// in Spec.Params and its shared words in the kind header and the peers' user words.
//
// A segment is created atomically (built under a temporary name, then renamed into place
// without replacing anything), mode 0600 by default, and validated on every open: file type,
// owner and link count, magic, layout version, descriptor checksum, file length and kind,
// each failure with its own error for errors.Is. The validated descriptor is copied into Go
// memory once; nothing immutable is read from shared memory again.
//
// Every open Segment (from Create, Open, OpenOrCreate or WaitOpen) owns exactly one entry of
// the peer table (Segment.Peer) through an open-file-description lock (F_OFD_SETLK) on a byte
// of the file. The kernel drops the lock when the process dies, so Alive tells a dead peer at
// once, zombie or not, without trusting pids. Exclusive roles (a ring's single writer, say)
// are held the same way. A peer that holds work a survivor must repair sets its hold flag
// (Peer.SetHold); its entry is then not reused after its death until a live peer has
// repaired the work and called Segment.ClearHold.
//
// # Removal
//
// Nobody removes a segment implicitly: not Close, not the death of its last peer. The
// process that should remove it (usually its creator) says so, with Options.RemoveOnClose or
// Segment.Remove, both of which remove the name only while it still refers to the same file,
// never a successor created under the same name. Leftovers of crashed processes are for
// `shmctl rm` and `shmctl gc` (GC).
//
// # Caveats
//
// Memory returned by Segment.Header, Segment.Data, Segment.PeerWords and Peer.Words is a
// live mapping of shared memory: valid only until the segment is unmapped (by Close, or by
// the last Unpin when Close returned ErrBorrowed), and written by other processes at any
// time. Read a shared value once, check it, then use the copy.
//
// If another process shrinks the file after it was validated, touching the missing pages
// raises SIGBUS, which kills the process. Only processes of the segment's owner (or its
// trusted owners) can do that. This package's own accesses to the mapping (claiming and
// releasing the peer entry, Peers, SetHold, ClearHold) run under debug.SetPanicOnFault and
// report ErrTruncated instead; code that uses Header, Data or the peer words does the same
// with Segment.Fault, or checks Segment.Intact.
//
// Each open Segment holds one file descriptor and one of the 64 peer entries.
// Segments work on little-endian Linux only; elsewhere the functions return ErrNotSupported.
package shm
