package watermill

import (
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// TopicConfig is the shape of the topics this process creates. A topic that exists already
// is joined as it is, whatever its shape: the first process to use a topic decides it.
type TopicConfig struct {
	// Policy is ring.Block (the default: a publisher waits for the slowest live subscriber,
	// so nothing is lost while subscribers live) or ring.Overwrite (a publisher never waits;
	// a subscriber that falls a whole ring behind loses the oldest messages, logs how many
	// and counts them in Stats.Lost). ring.Latest is refused: it delivers only the newest
	// value.
	Policy ring.Policy
	// Slots is how many messages a topic holds: the history that new subscribers, and
	// consumer groups that were away, can still receive. A power of two; 0 means 1024.
	Slots uint64
	// MaxMessage is the largest envelope in bytes: payload, metadata, UUID and topic name
	// plus 56 bytes of header (see package envelope). 0 means 4080 (4 KiB slots). A message
	// that does not fit is refused with ErrTooLarge.
	MaxMessage int
	// GroupSlots is how many messages a consumer group's queue holds: the messages taken
	// from the topic and not yet handed to a member. A power of two; 0 means 64.
	GroupSlots uint64
}

// Config is what publishers and subscribers share.
type Config struct {
	// Dir is the directory of the segments: "" means $SHMQ_DIR, else /dev/shm. Processes
	// that talk to each other use the same Dir and Prefix.
	Dir string
	// Prefix starts the name of every segment this adapter makes, so that Watermill topics
	// do not meet other users of the directory: "" means "wm.". Set NoPrefix for none.
	Prefix string
	// NoPrefix names segments after the topics alone.
	NoPrefix bool
	// Topic is the shape of topics this process creates.
	Topic TopicConfig
	// Wait is how endpoints wait: the zero value is ring.Adaptive (spin a little, then sleep
	// in the kernel until woken: no polling).
	Wait ring.Wait
	// Shm is passed to package shm when segments are opened and created (Mode,
	// TrustedOwners); its Dir is replaced by Dir.
	Shm shm.Options
}

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	Config
	// Source is the envelope's source field of every message published ("" by default):
	// the name of the publishing program, for consumers that read envelopes.
	Source string
	// Timeout bounds how long one Publish waits for room under ring.Block (a subscriber
	// that does not keep up); 0 waits until Close.
	Timeout time.Duration
}

// SubscriberConfig configures a Subscriber.
type SubscriberConfig struct {
	Config
	// ConsumerGroup, when set, makes every Subscribe a member of this group: each message
	// of the topic is handled by one member of the group (in any process), and the group
	// keeps its place in the topic while no member runs. Empty: every Subscribe receives
	// every message.
	ConsumerGroup string
	// FromLatest makes a Subscribe outside a group, and a group that does not exist yet,
	// start with the next message published instead of the oldest one the topic holds.
	FromLatest bool
	// InFlight is how many messages one Subscribe hands out before the first is acked or
	// nacked: 1 (the default) delivers in order, each message only after the previous one
	// was acked, a nacked one again before any later one. With more, messages may be
	// handled and redelivered out of order.
	InFlight int
	// NackDelay is how long a nacked message waits before it is delivered again: 0, at
	// once.
	NackDelay time.Duration
}

const (
	defaultPrefix     = "wm."
	defaultSlots      = 1024
	defaultMaxMessage = 4096 - 16
	defaultGroupSlots = 64
)

// resolved is a Config with its defaults filled in and checked.
type resolved struct {
	Config
	opts shm.Options
}

func (c Config) resolve() (resolved, error) {
	if c.Prefix == "" && !c.NoPrefix {
		c.Prefix = defaultPrefix
	}
	if c.NoPrefix && c.Prefix != "" {
		return resolved{}, fmt.Errorf("%w: Prefix %q with NoPrefix", ErrInvalidConfig, c.Prefix)
	}
	if err := checkPrefix(c.Prefix); err != nil {
		return resolved{}, err
	}
	t := &c.Topic
	if t.Policy == 0 {
		t.Policy = ring.Block
	}
	if t.Policy != ring.Block && t.Policy != ring.Overwrite {
		return resolved{}, fmt.Errorf("%w: topic policy %v (block or overwrite)", ErrInvalidConfig, t.Policy)
	}
	if t.Slots == 0 {
		t.Slots = defaultSlots
	}
	if t.MaxMessage == 0 {
		t.MaxMessage = defaultMaxMessage
	}
	if t.GroupSlots == 0 {
		t.GroupSlots = defaultGroupSlots
	}
	if _, err := topicConfig(*t).Spec(); err != nil {
		return resolved{}, fmt.Errorf("%w: topic: %w", ErrInvalidConfig, err)
	}
	if _, err := groupSpec(*t); err != nil {
		return resolved{}, fmt.Errorf("%w: group queue: %w", ErrInvalidConfig, err)
	}
	opts := c.Shm
	opts.Dir = c.Dir
	opts.Kind = 0
	opts.RemoveOnClose = false
	return resolved{Config: c, opts: opts}, nil
}

func (c PublisherConfig) resolve() (resolved, error) {
	if c.Timeout < 0 {
		return resolved{}, fmt.Errorf("%w: negative Timeout", ErrInvalidConfig)
	}
	return c.Config.resolve()
}

func (c *SubscriberConfig) resolve() (resolved, error) {
	if c.InFlight == 0 {
		c.InFlight = 1
	}
	if c.InFlight < 0 || c.NackDelay < 0 {
		return resolved{}, fmt.Errorf("%w: negative InFlight or NackDelay", ErrInvalidConfig)
	}
	return c.Config.resolve()
}

// orNop returns l, or a logger that discards everything.
func orNop(l watermill.LoggerAdapter) watermill.LoggerAdapter {
	if l == nil {
		return watermill.NopLogger{}
	}
	return l
}
