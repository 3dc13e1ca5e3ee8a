// Package topic opens publish-subscribe topics by name: a topic is a ring.Topic segment
// that any number of publishers write and up to 64 subscribers read, each message written
// once and read in place by every subscriber (see ring.Publisher and ring.Subscriber for
// the delivery rules of each overflow policy).
//
//	t, err := topic.Open("prices", topic.Config{Policy: ring.Overwrite, Slots: 1024, MaxMessage: 240}, shm.Options{})
//	pub, err := t.Publisher(ring.Options{})
//	sub, err := t.Subscribe(ctx, ring.SubscribeOptions{Name: "audit", Start: ring.FromOldest})
//
// Every process that opens a topic by name with the same Config gets the same topic; the
// first creates it. List finds the topics of a directory with their publishers and
// subscribers, as shmctl ls does.
package topic

import (
	"context"
	"errors"
	"fmt"
	"math/bits"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// Config is a topic's shape, fixed when it is created.
type Config struct {
	// Policy is what a publisher does when the ring is full: ring.Block, ring.Overwrite or
	// ring.Latest. Required.
	Policy ring.Policy
	// Slots is how many messages the ring holds (the history a late joiner can get): a power
	// of two, at least 2. Zero means 1024.
	Slots uint64
	// MaxMessage is the largest payload in bytes; the slot is that plus a 16-byte header,
	// rounded up to a power of two. Zero means 240 (256-byte slots).
	MaxMessage int
}

// ErrMismatch is returned by Open when the topic exists with another Config. It wraps
// shm.ErrMismatch.
var ErrMismatch = fmt.Errorf("topic exists with another configuration: %w", shm.ErrMismatch)

// Spec is the ring spec that lays out c, after checking it: shm.ErrInvalidSpec when the
// sizes do not fit.
func (c Config) Spec() (ring.Spec, error) {
	if c.Slots == 0 {
		c.Slots = 1024
	}
	if c.MaxMessage == 0 {
		c.MaxMessage = 240
	}
	if c.Slots < 2 || c.Slots&(c.Slots-1) != 0 {
		return ring.Spec{}, fmt.Errorf("%w: %d slots is not a power of two of at least 2", shm.ErrInvalidSpec, c.Slots)
	}
	if c.MaxMessage < 0 || c.MaxMessage > 1<<30 {
		return ring.Spec{}, fmt.Errorf("%w: largest message of %d bytes", shm.ErrInvalidSpec, c.MaxMessage)
	}
	slot := shm.NextPow2(uint64(c.MaxMessage) + 16)
	slot = max(slot, ring.MinSlotSize)
	if bits.Len64(c.Slots)+bits.Len64(slot) > 64 {
		return ring.Spec{}, fmt.Errorf("%w: %d slots of %d bytes", shm.ErrInvalidSpec, c.Slots, slot)
	}
	size := max(c.Slots*slot, 4096) // the smallest data region; slots grow to fill it
	slot = size / c.Slots
	spec := ring.Spec{Kind: ring.Topic, Size: size, SlotSize: uint32(slot), Policy: c.Policy}
	if _, err := spec.SegmentSpec(); err != nil {
		return ring.Spec{}, err
	}
	return spec, nil
}

// Topic is an open topic: a segment mapped in this process. Close it when done; that
// closes the publishers and subscribers made from it.
type Topic struct {
	seg  *shm.Segment
	spec ring.Spec
}

// Open opens the topic name, creating it with c if it does not exist. ErrMismatch when it
// exists with another Config; ring.ErrKind when name is a segment of another kind;
// shm.ErrInvalidName, shm.ErrInvalidSpec and the errors of shm.Open otherwise.
func Open(name string, c Config, opts shm.Options) (*Topic, error) {
	spec, err := c.Spec()
	if err != nil {
		return nil, err
	}
	seg, _, err := ring.OpenOrCreate(name, spec, opts)
	if errors.Is(err, shm.ErrMismatch) {
		return nil, mismatch(name, spec, opts, err)
	}
	if err != nil {
		return nil, err
	}
	return &Topic{seg: seg, spec: spec}, nil
}

// mismatch says how the existing topic differs from the one asked for.
func mismatch(name string, want ring.Spec, opts shm.Options, cause error) error {
	seg, err := shm.Inspect(name, opts)
	if err != nil {
		return cause
	}
	defer seg.Close()
	have, err := ring.SpecOf(seg.Descriptor())
	if err != nil || have.Kind != ring.Topic {
		return fmt.Errorf("%w: %s is a %v segment, not a topic", ring.ErrKind, name, seg.Descriptor().Kind)
	}
	return fmt.Errorf("%w: %s is %s, asked for %s", ErrMismatch, name, describe(have), describe(want))
}

func describe(s ring.Spec) string {
	return fmt.Sprintf("%v with %d slots of %d bytes", s.Policy, s.Size/uint64(s.SlotSize), s.SlotSize)
}

// Join opens the existing topic name, waiting until ctx ends for it to be created (see
// shm.WaitOpen). ring.ErrKind when name is not a topic.
func Join(ctx context.Context, name string, opts shm.Options) (*Topic, error) {
	seg, err := shm.WaitOpen(ctx, name, opts)
	if err != nil {
		return nil, err
	}
	spec, err := ring.SpecOf(seg.Descriptor())
	if err == nil && spec.Kind != ring.Topic {
		err = fmt.Errorf("%w: %s is a %v segment, not a topic", ring.ErrKind, name, spec.Kind)
	}
	if err != nil {
		seg.Close()
		return nil, err
	}
	return &Topic{seg: seg, spec: spec}, nil
}

// Name is the topic's name.
func (t *Topic) Name() string { return t.seg.Name() }

// Policy is the topic's overflow policy.
func (t *Topic) Policy() ring.Policy { return t.spec.Policy }

// MaxMessage is the largest payload the topic carries.
func (t *Topic) MaxMessage() int { return ring.MPMCMaxMessage(t.spec.SlotSize) }

// Segment is the topic's segment, for ring functions that take one (ring.ReadStats).
func (t *Topic) Segment() *shm.Segment { return t.seg }

// Publisher attaches a publisher (see ring.NewPublisher).
func (t *Topic) Publisher(opts ring.Options) (*ring.Publisher, error) {
	return ring.NewPublisher(t.seg, opts)
}

// Subscribe attaches a subscriber (see ring.Subscribe).
func (t *Topic) Subscribe(ctx context.Context, opts ring.SubscribeOptions) (*ring.Subscriber, error) {
	return ring.Subscribe(ctx, t.seg, opts)
}

// Close closes every publisher and subscriber of this Topic value and unmaps the topic
// (see shm.Segment.Close). The topic itself stays for other processes; Remove deletes it.
func (t *Topic) Close() error { return t.seg.Close() }

// Remove deletes the topic's name: processes that have it open keep using it, new Opens
// create a new topic.
func (t *Topic) Remove() error { return t.seg.Remove() }

// Info describes a topic found by List.
type Info struct {
	Name          string `json:"name"`
	Policy        string `json:"policy"`
	Slots         uint64 `json:"slots"`
	MaxMessage    int    `json:"max_message"`
	Published     uint64 `json:"published"`
	Publishers    int    `json:"publishers"`    // publisher endpoints of live processes
	Subscribers   int    `json:"subscribers"`   // subscriber endpoints of live processes
	Subscriptions int    `json:"subscriptions"` // entries in use, durable ones without a holder included
}

// List returns the topics in the options' directory, read without changing anything
// (shm.Inspect). Segments of other kinds and files that are not segments are passed over;
// a topic that cannot be read ends the list with its error.
func List(opts shm.Options) ([]Info, error) {
	names, err := shm.List(opts)
	if err != nil {
		return nil, err
	}
	out := []Info{}
	for _, name := range names {
		seg, err := shm.Inspect(name, opts)
		if err != nil {
			continue // removed meanwhile, not a segment, or not ours to read
		}
		info, ok, err := describeTopic(seg)
		seg.Close()
		if err != nil {
			return out, fmt.Errorf("topic %s: %w", name, err)
		}
		if ok {
			out = append(out, info)
		}
	}
	return out, nil
}

func describeTopic(seg *shm.Segment) (Info, bool, error) {
	if seg.Descriptor().Kind != ring.Topic {
		return Info{}, false, nil
	}
	st, err := ring.ReadTopicStats(seg)
	if err != nil {
		return Info{}, true, err
	}
	rs, err := ring.ReadStats(seg)
	if err != nil {
		return Info{}, true, err
	}
	return Info{Name: seg.Name(), Policy: st.Policy, Slots: st.Slots, MaxMessage: ring.MPMCMaxMessage(uint32(st.SlotSize)),
		Published: st.Published, Publishers: rs.WritersOpen, Subscribers: rs.ReadersOpen,
		Subscriptions: len(st.Subscriptions)}, true, nil
}
