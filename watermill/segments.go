package watermill

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
	"github.com/shmq/shmq/topic"
)

// A process maps each segment once, however many publishers, subscriptions and group
// members use it: a segment has 64 peer entries, one per process that has it open, and
// the Watermill suite alone opens a topic from dozens of Subscribers in one process.

type segKey struct{ dir, name string }

// sharedSeg is one mapped segment and the number of users in this process.
type sharedSeg struct {
	key  segKey
	seg  *shm.Segment
	refs int // guarded by segsMu
}

var (
	segsMu sync.Mutex
	segs   = map[segKey]*sharedSeg{}
)

// acquire returns the mapped segment name, opening it with open when this process has not.
func acquire(opts shm.Options, name string, open func() (*shm.Segment, error)) (*sharedSeg, error) {
	key := segKey{filepath.Clean(opts.ResolvedDir()), name}
	segsMu.Lock()
	defer segsMu.Unlock()
	if s := segs[key]; s != nil {
		s.refs++
		return s, nil
	}
	seg, err := open()
	if err != nil {
		return nil, err
	}
	s := &sharedSeg{key: key, seg: seg, refs: 1}
	segs[key] = s
	return s, nil
}

// release drops one use; the last unmaps the segment (which stays for other processes).
// Every endpoint made on it must be closed first.
func (s *sharedSeg) release() {
	segsMu.Lock()
	defer segsMu.Unlock()
	if s.refs--; s.refs > 0 {
		return
	}
	delete(segs, s.key)
	_ = s.seg.Close() // ErrBorrowed cannot happen: every endpoint is closed, nothing is borrowed
}

func topicConfig(t TopicConfig) topic.Config {
	return topic.Config{Policy: t.Policy, Slots: t.Slots, MaxMessage: t.MaxMessage}
}

// acquireTopic maps the topic segment of the Watermill topic name, creating it with the
// configured shape if it does not exist; an existing one is joined whatever its shape
// (ErrInvalidConfig for one with the latest policy).
func acquireTopic(r resolved, name string) (*sharedSeg, error) {
	seg := TopicSegment(r.Prefix, name)
	return acquire(r.opts, seg, func() (*shm.Segment, error) {
		for try := 0; ; try++ {
			t, err := topic.Open(seg, topicConfig(r.Topic), r.opts)
			if err == nil {
				return t.Segment(), nil
			}
			if errors.Is(err, topic.ErrMismatch) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel() // Join opens once without waiting
				t, err = topic.Join(ctx, seg, r.opts)
				if err == nil && t.Policy() == ring.Latest {
					t.Close()
					return nil, fmt.Errorf("topic %q: %w: segment %s has the latest policy, which keeps only the newest message", name, ErrInvalidConfig, seg)
				}
				if err == nil {
					return t.Segment(), nil
				}
			}
			// It existed with another shape and went before it could be joined: create it
			// again, a few times at most.
			if !errors.Is(err, shm.ErrNotExist) || try == 3 {
				return nil, fmt.Errorf("topic %q: %w", name, err)
			}
		}
	})
}

// groupSpec is the shape of a consumer group's queue for a topic whose records are up to
// maxMessage bytes: MPMC slots of the topic's slot size, GroupSlots of them.
func groupSpec(t TopicConfig) (ring.Spec, error) {
	spec, err := topicConfig(t).Spec()
	if err != nil {
		return ring.Spec{}, err
	}
	return groupSpecFor(spec.SlotSize, t.GroupSlots)
}

func groupSpecFor(slot uint32, slots uint64) (ring.Spec, error) {
	if slots < 2 || slots&(slots-1) != 0 {
		return ring.Spec{}, fmt.Errorf("%w: %d group slots is not a power of two of at least 2", shm.ErrInvalidSpec, slots)
	}
	size := max(uint64(slot)*slots, 4096)
	spec := ring.Spec{Kind: ring.MPMC, Size: size, SlotSize: slot}
	if _, err := spec.SegmentSpec(); err != nil {
		return ring.Spec{}, err
	}
	return spec, nil
}

// acquireGroup maps the MPMC queue of a consumer group of a topic whose records are up to
// maxMessage bytes, creating it if it does not exist. An existing queue with smaller slots
// than the topic's is an error: the pump could not move the topic's largest messages.
func acquireGroup(r resolved, topicName, group string, maxMessage int) (*sharedSeg, error) {
	name := GroupSegment(r.Prefix, topicName, group)
	return acquire(r.opts, name, func() (*shm.Segment, error) {
		spec, err := groupSpecFor(uint32(maxMessage+16), r.Topic.GroupSlots)
		if err != nil {
			return nil, err
		}
		seg, _, err := ring.OpenOrCreate(name, spec, r.opts)
		if errors.Is(err, shm.ErrMismatch) {
			seg, err = shm.Open(name, r.opts)
			if err == nil {
				have, serr := ring.SpecOf(seg.Descriptor())
				switch {
				case serr != nil:
					err = serr
				case have.Kind != ring.MPMC:
					err = fmt.Errorf("%w: %s is a %v segment, not a group queue", ring.ErrKind, name, have.Kind)
				case ring.MPMCMaxMessage(have.SlotSize) < maxMessage:
					err = fmt.Errorf("%w: group queue %s carries %d bytes, the topic %d", shm.ErrMismatch, name, ring.MPMCMaxMessage(have.SlotSize), maxMessage)
				}
				if err != nil {
					seg.Close()
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("consumer group %q of topic %q: %w", group, topicName, err)
		}
		return seg, nil
	})
}
