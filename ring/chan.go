package ring

import (
	"context"
	"sync"
)

// Message is a record copied out of a ring: its memory is the caller's.
type Message struct {
	Type uint32
	Data []byte
}

// Messages reads r on a goroutine of its own and sends a copy of each record to the
// returned channel, for code that selects over channels. The channel has room for size
// messages (0: unbuffered); it is closed when r ends (io.EOF at the end of a stream,
// ErrPeerDead, ErrClosed, ...), or when ctx ends. Then err returns why (ctx's error, or
// r's). r belongs to the goroutine until the channel is closed: do not use it meanwhile.
// Each message costs an allocation, the copy: read the ring directly on hot paths.
func Messages(ctx context.Context, r Reader, size int) (_ <-chan Message, err func() error) {
	ch := make(chan Message, size)
	var mu sync.Mutex
	var final error
	go func() {
		defer close(ch)
		for {
			rec, e := r.Next(ctx)
			if e == nil {
				m := Message{Type: rec.Type, Data: append([]byte(nil), rec.Data...)}
				r.Release()
				select {
				case ch <- m:
					continue
				case <-ctx.Done():
					e = ctx.Err()
				}
			}
			mu.Lock()
			final = e
			mu.Unlock()
			return
		}
	}()
	return ch, func() error {
		mu.Lock()
		defer mu.Unlock()
		return final
	}
}
