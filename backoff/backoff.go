// Package backoff computes retry delays: exponential growth from a base, capped, with
// jitter, and a bound on the number of attempts. It only computes; it never sleeps, so a
// caller that retries on a timer or an event loop uses it as well as one that sleeps.
//
// Attempts are numbered from 1: attempt 1 is the first try. Delay(n) is the wait after
// attempt n failed and before attempt n+1:
//
//	d(n)  = min(Cap, Base × Factor^(n-1))
//	Delay = d(n) × (1 - Jitter × u),  u uniform in [0, 1)
//
// so every delay lies in [d(n) × (1-Jitter), d(n)] and never above Cap. Jitter spreads the
// retries of many failing consumers apart instead of letting them retry in lockstep (the
// "equal jitter" family; Jitter 1 is "full jitter").
package backoff

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// Defaults for the zero fields of a Policy.
const (
	DefaultBase   = 100 * time.Millisecond
	DefaultFactor = 2.0
	DefaultCap    = 30 * time.Second
)

// ErrInvalid is returned by New (and Policy.Validate) for a policy whose fields are out of
// range; the message names the field.
var ErrInvalid = errors.New("invalid backoff policy")

// Policy describes a backoff. Its zero value is valid: Base DefaultBase, Factor
// DefaultFactor, Cap DefaultCap, no jitter, unlimited attempts.
type Policy struct {
	// Base is the delay after the first failed attempt; 0 means DefaultBase.
	Base time.Duration
	// Factor multiplies the delay after each further failure; 0 means DefaultFactor,
	// otherwise at least 1 (1 is a constant delay).
	Factor float64
	// Cap bounds every delay; 0 means DefaultCap (or Base, if Base is larger). It must not
	// be below Base.
	Cap time.Duration
	// Jitter is the fraction of each delay that is random, from 0 (none) to 1: a delay
	// d becomes a value drawn uniformly from [d × (1-Jitter), d].
	Jitter float64
	// MaxAttempts bounds the attempts, the first included (1 means no retry); 0 means
	// unlimited. It must not be negative.
	MaxAttempts int
}

// withDefaults fills the zero fields.
func (p Policy) withDefaults() Policy {
	if p.Base == 0 {
		p.Base = DefaultBase
	}
	if p.Factor == 0 {
		p.Factor = DefaultFactor
	}
	if p.Cap == 0 {
		p.Cap = max(DefaultCap, p.Base)
	}
	return p
}

// Validate reports whether p, its zero fields taken as their defaults, is usable: an error
// wrapping ErrInvalid naming the first bad field, or nil.
func (p Policy) Validate() error {
	p = p.withDefaults()
	switch {
	case p.Base < 0:
		return fmt.Errorf("%w: Base %v is negative", ErrInvalid, p.Base)
	case math.IsNaN(p.Factor) || math.IsInf(p.Factor, 0) || p.Factor < 1:
		return fmt.Errorf("%w: Factor %v is not a finite number >= 1", ErrInvalid, p.Factor)
	case p.Cap < p.Base:
		return fmt.Errorf("%w: Cap %v is below Base %v", ErrInvalid, p.Cap, p.Base)
	case math.IsNaN(p.Jitter) || p.Jitter < 0 || p.Jitter > 1:
		return fmt.Errorf("%w: Jitter %v is not in [0, 1]", ErrInvalid, p.Jitter)
	case p.MaxAttempts < 0:
		return fmt.Errorf("%w: MaxAttempts %d is negative", ErrInvalid, p.MaxAttempts)
	}
	return nil
}

// Backoff hands out the delays of one Policy. Its methods are safe for concurrent use by
// multiple goroutines; none blocks (they share one random source under a mutex).
type Backoff struct {
	p  Policy
	mu sync.Mutex
	r  *rand.Rand // guarded by mu
}

// New returns a Backoff for p, drawing its jitter from src; a nil src means a source
// seeded at random. A seeded source (rand.NewPCG(1, 2), say) makes the delays
// reproducible, for tests. It returns an error wrapping ErrInvalid if p is not valid.
func New(p Policy, src rand.Source) (*Backoff, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if src == nil {
		src = rand.NewPCG(rand.Uint64(), rand.Uint64())
	}
	return &Backoff{p: p.withDefaults(), r: rand.New(src)}, nil
}

// Policy returns the policy in use, with its defaults filled in.
func (b *Backoff) Policy() Policy { return b.p }

// Ceiling is the delay after attempt n without jitter: min(Cap, Base × Factor^(n-1)).
// Attempts below 1 count as 1.
func (b *Backoff) Ceiling(attempt int) time.Duration {
	attempt = max(attempt, 1)
	d := float64(b.p.Base) * math.Pow(b.p.Factor, float64(attempt-1))
	if math.IsInf(d, 0) || math.IsNaN(d) || d >= float64(b.p.Cap) {
		return b.p.Cap
	}
	return time.Duration(d)
}

// Delay is the wait after attempt n failed (n from 1), jittered: a value in
// [Ceiling(n) × (1-Jitter), Ceiling(n)]. Attempts below 1 count as 1.
func (b *Backoff) Delay(attempt int) time.Duration {
	d := b.Ceiling(attempt)
	if b.p.Jitter == 0 || d == 0 {
		return d
	}
	b.mu.Lock()
	u := b.r.Float64() // [0, 1)
	b.mu.Unlock()
	return d - time.Duration(b.p.Jitter*u*float64(d))
}

// Next says what to do after attempt n failed: retry after the returned delay (true), or
// give up (false, delay 0) because n reached MaxAttempts.
func (b *Backoff) Next(attempt int) (time.Duration, bool) {
	if b.Exhausted(attempt) {
		return 0, false
	}
	return b.Delay(attempt), true
}

// Exhausted reports whether attempt n was the last one MaxAttempts allows.
func (b *Backoff) Exhausted(attempt int) bool {
	return b.p.MaxAttempts > 0 && attempt >= b.p.MaxAttempts
}
