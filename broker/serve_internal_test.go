//go:build linux

package broker

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestServeKeptTurnHandedOnWhenBlocked: with every request served by the worker that read
// it (as when handlers are quick: here forced), three calls whose handlers each wait until
// all three run at once still complete: a handler that runs long hands the reading turn
// on, so the other workers read the requests behind it. Without that it would deadlock.
func TestServeKeptTurnHandedOnWhenBlocked(t *testing.T) {
	defer func(v int64) { inPlaceBelow = v }(inPlaceBelow)
	inPlaceBelow = math.MaxInt64
	_, cc, sc := reviewPair(t, Options{Dir: reviewDir(t)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var arrived sync.WaitGroup
	arrived.Add(3)
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, sc, func(req []byte) ([]byte, error) {
			if string(req) == "wait" {
				arrived.Done()
				arrived.Wait() // returns once all three handlers run at once
			}
			return req, nil
		}, 4)
	}()
	cl := NewClient(cc)
	defer func() { cl.Close(); <-served }() // before inPlaceBelow is restored
	for range 100 {
		_, err := cl.Call(ctx, []byte("quick"))
		require.NoError(t, err)
	}
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := cl.Call(ctx, []byte("wait"))
			errs <- err
		}()
	}
	for range 3 {
		require.NoError(t, <-errs, "the three handlers never ran at once")
	}
}
