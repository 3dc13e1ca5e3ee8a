package backoff

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCeiling(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name    string
		p       Policy
		attempt int
		want    time.Duration
	}{
		{"defaults first", Policy{}, 1, DefaultBase},
		{"defaults second", Policy{}, 2, 2 * DefaultBase},
		{"defaults capped", Policy{}, 40, DefaultCap},
		{"attempt 0 is 1", Policy{Base: 10 * ms}, 0, 10 * ms},
		{"negative attempt is 1", Policy{Base: 10 * ms}, -5, 10 * ms},
		{"factor 3", Policy{Base: 10 * ms, Factor: 3, Cap: time.Hour}, 4, 270 * ms},
		{"factor 1 is constant", Policy{Base: 10 * ms, Factor: 1}, 1000, 10 * ms},
		{"cap reached exactly", Policy{Base: 10 * ms, Factor: 2, Cap: 80 * ms}, 4, 80 * ms},
		{"cap passed", Policy{Base: 10 * ms, Factor: 2, Cap: 80 * ms}, 5, 80 * ms},
		{"overflow to inf is cap", Policy{Base: time.Second, Factor: 10, Cap: time.Hour}, 1 << 20, time.Hour},
		{"huge attempt, factor 2", Policy{Base: time.Nanosecond, Factor: 2, Cap: math.MaxInt64}, math.MaxInt, time.Duration(math.MaxInt64)},
		{"cap zero takes base if larger", Policy{Base: time.Minute}, 3, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(tt.p, rand.NewPCG(1, 2))
			require.NoError(t, err)
			assert.Equal(t, tt.want, b.Ceiling(tt.attempt))
		})
	}
}

func TestDelayBounds(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name string
		p    Policy
	}{
		{"no jitter", Policy{Base: 10 * ms, Factor: 2, Cap: time.Second}},
		{"quarter jitter", Policy{Base: 10 * ms, Factor: 2, Cap: time.Second, Jitter: 0.25}},
		{"full jitter", Policy{Base: 10 * ms, Factor: 1.5, Cap: 300 * ms, Jitter: 1}},
		{"tiny base", Policy{Base: 1, Factor: 2, Cap: 100, Jitter: 0.5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(tt.p, rand.NewPCG(7, 11))
			require.NoError(t, err)
			for attempt := 1; attempt <= 40; attempt++ {
				ceil := b.Ceiling(attempt)
				lo := ceil - time.Duration(tt.p.Jitter*float64(ceil))
				distinct := map[time.Duration]bool{}
				for range 200 {
					d := b.Delay(attempt)
					require.GreaterOrEqual(t, d, lo, "attempt %d", attempt)
					require.LessOrEqual(t, d, ceil, "attempt %d", attempt)
					require.LessOrEqual(t, d, tt.p.Cap, "attempt %d", attempt)
					distinct[d] = true
				}
				if tt.p.Jitter == 0 {
					assert.Len(t, distinct, 1, "no jitter: one value, attempt %d", attempt)
				} else if ceil >= time.Millisecond {
					assert.Greater(t, len(distinct), 50, "jitter spreads the delays, attempt %d", attempt)
				}
			}
		})
	}
}

func TestJitterUsesWholeRange(t *testing.T) {
	b, err := New(Policy{Base: time.Second, Factor: 1, Jitter: 0.5}, rand.NewPCG(3, 4))
	require.NoError(t, err)
	var lowHalf, highHalf int
	for range 1000 {
		d := b.Delay(1)
		if d < 750*time.Millisecond {
			lowHalf++
		} else {
			highHalf++
		}
	}
	// Uniform on [500ms, 1s]: each half gets about 500 of 1000.
	assert.InDelta(t, 500, lowHalf, 100)
	assert.InDelta(t, 500, highHalf, 100)
}

func TestSeededIsDeterministic(t *testing.T) {
	p := Policy{Base: 10 * time.Millisecond, Cap: 10 * time.Second, Jitter: 0.8}
	a, err := New(p, rand.NewPCG(42, 43))
	require.NoError(t, err)
	b, err := New(p, rand.NewPCG(42, 43))
	require.NoError(t, err)
	c, err := New(p, rand.NewPCG(1, 1))
	require.NoError(t, err)
	same, differ := true, false
	for n := 1; n <= 20; n++ {
		da, db, dc := a.Delay(n), b.Delay(n), c.Delay(n)
		same = same && da == db
		differ = differ || da != dc
	}
	assert.True(t, same, "same seed, same delays")
	assert.True(t, differ, "another seed, other delays")
}

func TestNextAndMaxAttempts(t *testing.T) {
	tests := []struct {
		max       int
		attempt   int
		wantRetry bool
	}{
		{0, 1, true}, {0, 1000, true}, // unlimited
		{1, 1, false}, // one attempt: no retry
		{3, 1, true}, {3, 2, true}, {3, 3, false}, {3, 4, false},
	}
	for _, tt := range tests {
		b, err := New(Policy{Base: time.Millisecond, MaxAttempts: tt.max}, nil)
		require.NoError(t, err)
		d, retry := b.Next(tt.attempt)
		assert.Equal(t, tt.wantRetry, retry, "max %d attempt %d", tt.max, tt.attempt)
		assert.Equal(t, !tt.wantRetry, b.Exhausted(tt.attempt))
		if retry {
			assert.Equal(t, b.Ceiling(tt.attempt), d)
		} else {
			assert.Zero(t, d)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		p     Policy
		field string
	}{
		{"negative base", Policy{Base: -1}, "Base"},
		{"factor below 1", Policy{Factor: 0.5}, "Factor"},
		{"factor NaN", Policy{Factor: math.NaN()}, "Factor"},
		{"factor inf", Policy{Factor: math.Inf(1)}, "Factor"},
		{"cap below base", Policy{Base: time.Second, Cap: time.Millisecond}, "Cap"},
		{"negative cap", Policy{Cap: -1}, "Cap"},
		{"jitter above 1", Policy{Jitter: 1.5}, "Jitter"},
		{"negative jitter", Policy{Jitter: -0.1}, "Jitter"},
		{"jitter NaN", Policy{Jitter: math.NaN()}, "Jitter"},
		{"negative attempts", Policy{MaxAttempts: -1}, "MaxAttempts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.p, nil)
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrInvalid))
			assert.Contains(t, err.Error(), tt.field)
		})
	}
	b, err := New(Policy{}, nil)
	require.NoError(t, err)
	assert.Equal(t, Policy{Base: DefaultBase, Factor: DefaultFactor, Cap: DefaultCap}, b.Policy())
}

func TestConcurrentDelay(t *testing.T) {
	b, err := New(Policy{Base: time.Millisecond, Jitter: 1}, nil)
	require.NoError(t, err)
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for n := range 1000 {
				if d := b.Delay(n); d < 0 || d > DefaultCap {
					t.Errorf("delay %v out of range", d)
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}
