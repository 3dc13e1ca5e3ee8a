package bus

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/shmq/shmq/shm"
)

var getenv = os.Getenv

func isBusy(err error) bool { return errors.Is(err, shm.ErrBusy) }

func sleepBriefly() { time.Sleep(100 * time.Microsecond) }

func isTimeout(err error) bool { return errors.Is(err, ErrDeliveryTimeout) }

// delay is the wait after failed attempt n (from 1): min(Cap, Base × Factor^(n-1)), less a
// random fraction of up to Jitter of it.
func (r Retry) delay(n int) time.Duration {
	d := float64(r.Base) * math.Pow(r.Factor, float64(max(n, 1)-1))
	if math.IsInf(d, 0) || math.IsNaN(d) || d > float64(r.Cap) {
		d = float64(r.Cap)
	}
	if r.Jitter > 0 {
		d -= r.Jitter * rand.Float64() * d
	}
	return time.Duration(d)
}

// limiter is a token bucket: rate tokens a second, at most burst in hand.
type limiter struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int) *limiter {
	return &limiter{rate: rate, burst: float64(burst), tokens: float64(burst), last: time.Now()}
}

// wait takes a token, waiting for one until ctx ends.
func (l *limiter) wait(ctx context.Context) error {
	for {
		l.mu.Lock()
		now := time.Now()
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
		l.last = now
		if l.tokens >= 1 {
			l.tokens--
			l.mu.Unlock()
			return nil
		}
		need := time.Duration((1 - l.tokens) / l.rate * float64(time.Second))
		l.mu.Unlock()
		t := time.NewTimer(need)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}
