// Package shm manages named shared-memory segments: files in /dev/shm (or another
// directory) that cooperating processes map to exchange messages.
//
// A segment is created atomically (built under a temporary name, then renamed into place
// without replacing anything), mode 0600 by default, and validated on every open: file type,
// owner and link count, magic, layout version, descriptor checksum, file length and kind,
// each failure with its own error for errors.Is. The validated descriptor is copied into Go
// memory once; nothing immutable is read from shared memory again.
//
// Every process attached to a segment owns an entry of its peer table through an
// open-file-description lock (F_OFD_SETLK) on a byte of the file. The kernel drops the lock
// when the process dies, so Alive tells a dead peer at once, zombie or not, without trusting
// pids. Exclusive roles (a ring's single writer, say) are held the same way.
//
// # Caveats
//
// Memory returned by Segment.Header, Segment.Data and Peer.Words is a live mapping of shared
// memory: valid only until the Segment is closed, and written by other processes at any
// time. Read a shared value once, check it, then use the copy.
//
// If another process shrinks the file after it was validated, touching the missing pages
// raises SIGBUS. Only processes of the segment's owner (or its trusted owners) can do that.
//
// Each open Segment holds one file descriptor. Segments work on little-endian Linux only;
// elsewhere the functions return ErrNotSupported.
package shm
