package bus

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/shmq/shmq/envelope"
)

// FullPolicy is what Publish does when a Reliable subscription's queue is full.
type FullPolicy uint8

const (
	// FullDefault is the zero value: FailWhenFull unless SHMQ_BUS_QUEUE_FULL says otherwise.
	FullDefault FullPolicy = iota
	// FailWhenFull makes Publish return ErrQueueFull at once.
	FailWhenFull
	// BlockWhenFull makes Publish wait for room until its context ends.
	BlockWhenFull
)

// Retry is a Reliable subscription's retry policy: the delay after failed attempt n is
// min(Cap, Base × Factor^(n-1)), of which the fraction Jitter is random (drawn uniformly
// from [d × (1-Jitter), d]). After MaxAttempts failed attempts the event goes to the
// dead-letter queue.
type Retry struct {
	MaxAttempts int
	Base        time.Duration
	Factor      float64
	Cap         time.Duration
	Jitter      float64
}

// Config is a bus's configuration. Its zero value is valid: each zero field takes the
// value of its SHMQ_* environment variable if set, else its default (listed on each field
// and in the README's table). Open validates the result and says which field is wrong.
//
// The geometry fields (LaneSlots, QueueSlots, MaxEvent) are fixed when the bus's segments
// are created: every process must use the same values, or Open fails (shm.ErrMismatch).
type Config struct {
	// Dir is the directory of the bus's segments. Default: SHMQ_DIR, else /dev/shm.
	Dir string
	// Source is this process's name in the envelopes it publishes. Env SHMQ_BUS_SOURCE;
	// default: the executable's base name.
	Source string
	// LaneSlots is how many events each best-effort priority lane holds (a power of two):
	// a best-effort subscriber further behind than that loses events (counted as drops).
	// Env SHMQ_BUS_LANE_SLOTS; default 4096.
	LaneSlots uint64
	// QueueSlots bounds each Reliable subscription's queue, per priority lane, in events (a
	// power of two). Env SHMQ_BUS_QUEUE_SLOTS; default 1024.
	QueueSlots uint64
	// MaxEvent is the largest envelope in bytes (header, type, source, metadata and payload).
	// Each slot is MaxEvent+16 rounded up to a power of two, so a queue is bounded in bytes
	// by QueueSlots × slot. Env SHMQ_BUS_MAX_EVENT; default 1008 (1 KiB slots).
	MaxEvent int
	// Weights are the draining weights of the Critical, Normal and Low lanes: of a run of
	// Weights[0]+Weights[1]+Weights[2] events taken while all lanes are busy, each lane gets
	// its weight. Each at least 1. Env SHMQ_BUS_WEIGHTS ("8,4,1"); default 8, 4, 1.
	Weights [envelope.Priorities]int
	// QueueBytes bounds each Reliable subscription's queue in envelope bytes as well (all
	// lanes; the count is shared by every process, bus_queue_bytes): a publish that would
	// pass it finds the queue full. Each publishing process applies its own value. Env
	// SHMQ_BUS_QUEUE_BYTES; default 0, no bound but the slots (QueueSlots × slot bytes).
	QueueBytes int64
	// QueueFull is what Publish does when a Reliable queue is full. Env SHMQ_BUS_QUEUE_FULL
	// ("fail" or "block"); default FailWhenFull.
	QueueFull FullPolicy
	// Rate limits Publish in this process to Rate events per second (a token bucket of
	// Burst); Publish waits for a token until its context ends. Env SHMQ_BUS_RATE; default 0,
	// no limit.
	Rate float64
	// Burst is the token bucket's size. Env SHMQ_BUS_BURST; default max(1, Rate/10).
	Burst int
	// ShutdownTimeout bounds how long Shutdown drains in-flight events. Env
	// SHMQ_BUS_SHUTDOWN_TIMEOUT; default 5s.
	ShutdownTimeout time.Duration
	// Retry is the default retry policy of Reliable subscriptions. Env SHMQ_BUS_MAX_ATTEMPTS
	// (default 5) and SHMQ_BUS_BACKOFF ("base,factor,cap,jitter", default "10ms,2,1s,0.2").
	Retry Retry
	// SlowHandler is the handler duration above which a delivery counts as slow (metrics and
	// health). Env SHMQ_BUS_SLOW_HANDLER; default 100ms.
	SlowHandler time.Duration
	// NearFull is the queue utilisation (0 to 1) from which health reports a queue as nearly
	// full. Env SHMQ_BUS_NEAR_FULL; default 0.8.
	NearFull float64
	// MaxErrorRate is the fraction of failed deliveries (over the last health period) above
	// which health is degraded. Env SHMQ_BUS_MAX_ERROR_RATE; default 0.05.
	MaxErrorRate float64
	// DeadLetterLimit is the size of the dead-letter queue in events; health is degraded
	// while it grows. Env SHMQ_BUS_DLQ_SLOTS; default 1024.
	DeadLetterLimit uint64
}

// Defaults.
const (
	DefaultLaneSlots       = 4096
	DefaultQueueSlots      = 1024
	DefaultMaxEvent        = 1008
	DefaultShutdownTimeout = 5 * time.Second
	DefaultMaxAttempts     = 5
	DefaultSlowHandler     = 100 * time.Millisecond
	DefaultNearFull        = 0.8
	DefaultMaxErrorRate    = 0.05
	DefaultDeadLetterLimit = 1024
)

// DefaultWeights are the default lane weights: Critical 8, Normal 4, Low 1.
var defaultWeights = [envelope.Priorities]int{8, 4, 1}

var defaultRetry = Retry{MaxAttempts: DefaultMaxAttempts, Base: 10 * time.Millisecond, Factor: 2, Cap: time.Second, Jitter: 0.2}

// resolve fills c's zero fields from the environment (getenv) and the defaults, then
// validates it. Errors wrap ErrConfig and name the field or variable.
func (c Config) resolve(getenv func(string) string) (Config, error) {
	env := func(name string, set func(string) error) error {
		if v := getenv(name); v != "" {
			if err := set(v); err != nil {
				return fmt.Errorf("%w: %s=%q: %v", ErrConfig, name, v, err)
			}
		}
		return nil
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if c.Source == "" {
		add(env("SHMQ_BUS_SOURCE", func(v string) error { c.Source = v; return nil }))
		if c.Source == "" {
			c.Source = filepath.Base(os.Args[0])
		}
	}
	if c.LaneSlots == 0 {
		add(env("SHMQ_BUS_LANE_SLOTS", parseUint(&c.LaneSlots)))
		if c.LaneSlots == 0 {
			c.LaneSlots = DefaultLaneSlots
		}
	}
	if c.QueueSlots == 0 {
		add(env("SHMQ_BUS_QUEUE_SLOTS", parseUint(&c.QueueSlots)))
		if c.QueueSlots == 0 {
			c.QueueSlots = DefaultQueueSlots
		}
	}
	if c.MaxEvent == 0 {
		add(env("SHMQ_BUS_MAX_EVENT", parseInt(&c.MaxEvent)))
		if c.MaxEvent == 0 {
			c.MaxEvent = DefaultMaxEvent
		}
	}
	if c.Weights == [envelope.Priorities]int{} {
		add(env("SHMQ_BUS_WEIGHTS", func(v string) error {
			parts := strings.Split(v, ",")
			if len(parts) != envelope.Priorities {
				return fmt.Errorf("want %d weights separated by commas", envelope.Priorities)
			}
			for i, p := range parts {
				n, err := strconv.Atoi(strings.TrimSpace(p))
				if err != nil {
					return err
				}
				c.Weights[i] = n
			}
			return nil
		}))
		if c.Weights == [envelope.Priorities]int{} {
			c.Weights = defaultWeights
		}
	}
	if c.QueueBytes == 0 {
		add(env("SHMQ_BUS_QUEUE_BYTES", func(v string) (err error) { c.QueueBytes, err = strconv.ParseInt(v, 10, 64); return err }))
	}
	if c.QueueFull == FullDefault {
		add(env("SHMQ_BUS_QUEUE_FULL", func(v string) error {
			switch v {
			case "fail":
				c.QueueFull = FailWhenFull
			case "block":
				c.QueueFull = BlockWhenFull
			default:
				return fmt.Errorf(`want "fail" or "block"`)
			}
			return nil
		}))
		if c.QueueBytes == 0 {
			add(env("SHMQ_BUS_QUEUE_BYTES", func(v string) (err error) { c.QueueBytes, err = strconv.ParseInt(v, 10, 64); return err }))
		}
		if c.QueueFull == FullDefault {
			c.QueueFull = FailWhenFull
		}
	}
	if c.Rate == 0 {
		add(env("SHMQ_BUS_RATE", parseFloat(&c.Rate)))
	}
	if c.Burst == 0 {
		add(env("SHMQ_BUS_BURST", parseInt(&c.Burst)))
		if c.Burst == 0 {
			c.Burst = max(1, int(c.Rate/10))
		}
	}
	if c.ShutdownTimeout == 0 {
		add(env("SHMQ_BUS_SHUTDOWN_TIMEOUT", parseDuration(&c.ShutdownTimeout)))
		if c.ShutdownTimeout == 0 {
			c.ShutdownTimeout = DefaultShutdownTimeout
		}
	}
	if c.Retry == (Retry{}) {
		c.Retry = defaultRetry
		add(env("SHMQ_BUS_MAX_ATTEMPTS", parseInt(&c.Retry.MaxAttempts)))
		add(env("SHMQ_BUS_BACKOFF", func(v string) error { return parseBackoff(v, &c.Retry) }))
	}
	if c.SlowHandler == 0 {
		add(env("SHMQ_BUS_SLOW_HANDLER", parseDuration(&c.SlowHandler)))
		if c.SlowHandler == 0 {
			c.SlowHandler = DefaultSlowHandler
		}
	}
	if c.NearFull == 0 {
		add(env("SHMQ_BUS_NEAR_FULL", parseFloat(&c.NearFull)))
		if c.NearFull == 0 {
			c.NearFull = DefaultNearFull
		}
	}
	if c.MaxErrorRate == 0 {
		add(env("SHMQ_BUS_MAX_ERROR_RATE", parseFloat(&c.MaxErrorRate)))
		if c.MaxErrorRate == 0 {
			c.MaxErrorRate = DefaultMaxErrorRate
		}
	}
	if c.DeadLetterLimit == 0 {
		add(env("SHMQ_BUS_DLQ_SLOTS", parseUint(&c.DeadLetterLimit)))
		if c.DeadLetterLimit == 0 {
			c.DeadLetterLimit = DefaultDeadLetterLimit
		}
	}
	if len(errs) > 0 {
		return c, errs[0]
	}
	return c, c.validate()
}

func (c Config) validate() error {
	pow2 := func(x uint64) bool { return x >= 2 && x&(x-1) == 0 }
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	switch {
	case !pow2(c.LaneSlots) || c.LaneSlots > 1<<24:
		return bad("LaneSlots %d is not a power of two from 2 to 2^24", c.LaneSlots)
	case !pow2(c.QueueSlots) || c.QueueSlots > 1<<24:
		return bad("QueueSlots %d is not a power of two from 2 to 2^24", c.QueueSlots)
	case c.MaxEvent < envelope.HeaderSize || c.MaxEvent > 1<<20:
		return bad("MaxEvent %d is not from %d to 1 MiB", c.MaxEvent, envelope.HeaderSize)
	case c.QueueBytes < 0 || c.QueueBytes > 0 && c.QueueBytes < int64(c.MaxEvent):
		return bad("QueueBytes %d is not 0 (none) or at least MaxEvent (%d)", c.QueueBytes, c.MaxEvent)
	case c.QueueFull != FailWhenFull && c.QueueFull != BlockWhenFull:
		return bad("QueueFull %d is not FailWhenFull or BlockWhenFull", c.QueueFull)
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return bad("Rate %v is not a finite number >= 0", c.Rate)
	case c.Burst < 1:
		return bad("Burst %d is below 1", c.Burst)
	case c.ShutdownTimeout < 0:
		return bad("ShutdownTimeout %v is negative", c.ShutdownTimeout)
	case c.SlowHandler < 0:
		return bad("SlowHandler %v is negative", c.SlowHandler)
	case !(c.NearFull > 0 && c.NearFull <= 1):
		return bad("NearFull %v is not in (0, 1]", c.NearFull)
	case !(c.MaxErrorRate > 0 && c.MaxErrorRate <= 1):
		return bad("MaxErrorRate %v is not in (0, 1]", c.MaxErrorRate)
	case !pow2(c.DeadLetterLimit) || c.DeadLetterLimit > 1<<24:
		return bad("DeadLetterLimit %d is not a power of two from 2 to 2^24", c.DeadLetterLimit)
	}
	for i, w := range c.Weights {
		if w < 1 || w > 1<<16 {
			return bad("Weights[%v] %d is not from 1 to 65536", envelope.Priority(i), w)
		}
	}
	if err := c.Retry.validate(); err != nil {
		return err
	}
	if c.Source == "" || len(c.Source) > 255 {
		return bad("Source %q is not 1 to 255 bytes", c.Source)
	}
	return nil
}

func (r Retry) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: Retry."+format, append([]any{ErrConfig}, args...)...)
	}
	switch {
	case r.MaxAttempts < 1:
		return bad("MaxAttempts %d is below 1", r.MaxAttempts)
	case r.Base < 0:
		return bad("Base %v is negative", r.Base)
	case !(r.Factor >= 1) || math.IsInf(r.Factor, 0):
		return bad("Factor %v is not a finite number >= 1", r.Factor)
	case r.Cap < r.Base:
		return bad("Cap %v is below Base %v", r.Cap, r.Base)
	case !(r.Jitter >= 0 && r.Jitter <= 1):
		return bad("Jitter %v is not in [0, 1]", r.Jitter)
	}
	return nil
}

func parseUint(dst *uint64) func(string) error {
	return func(v string) (err error) { *dst, err = strconv.ParseUint(v, 10, 64); return err }
}

func parseInt(dst *int) func(string) error {
	return func(v string) (err error) { *dst, err = strconv.Atoi(v); return err }
}

func parseFloat(dst *float64) func(string) error {
	return func(v string) (err error) { *dst, err = strconv.ParseFloat(v, 64); return err }
}

func parseDuration(dst *time.Duration) func(string) error {
	return func(v string) (err error) { *dst, err = time.ParseDuration(v); return err }
}

// parseBackoff reads "base,factor,cap[,jitter]".
func parseBackoff(v string, r *Retry) error {
	parts := strings.Split(v, ",")
	if len(parts) < 3 || len(parts) > 4 {
		return fmt.Errorf(`want "base,factor,cap[,jitter]"`)
	}
	var err error
	if r.Base, err = time.ParseDuration(strings.TrimSpace(parts[0])); err != nil {
		return err
	}
	if r.Factor, err = strconv.ParseFloat(strings.TrimSpace(parts[1]), 64); err != nil {
		return err
	}
	if r.Cap, err = time.ParseDuration(strings.TrimSpace(parts[2])); err != nil {
		return err
	}
	r.Jitter = 0
	if len(parts) == 4 {
		if r.Jitter, err = strconv.ParseFloat(strings.TrimSpace(parts[3]), 64); err != nil {
			return err
		}
	}
	return nil
}
