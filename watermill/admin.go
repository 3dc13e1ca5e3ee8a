package watermill

import (
	"errors"
	"fmt"
	"strings"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// Topics and consumer groups outlive the processes that use them (that is what makes them
// persistent); these remove them when they are no longer wanted.

// DeleteGroup deletes the consumer group group of topicName: its durable subscription (one
// of the topic's 64 entries) and its queue, with whatever messages the queue still holds.
// ring.ErrBusy while a member pumps the group; ring.ErrNoSubscription when the topic has
// no such group (its queue, if any, is removed all the same); shm.ErrNotExist when there
// is no topic. Members of the group that are still subscribed keep their mapping of the
// removed queue: close them first.
func DeleteGroup(c Config, topicName, group string) error {
	r, err := c.resolve()
	if err != nil {
		return err
	}
	seg, err := shm.Open(TopicSegment(r.Prefix, topicName), r.opts)
	if err != nil {
		return fmt.Errorf("topic %q: %w", topicName, err)
	}
	defer seg.Close()
	uerr := ring.Unsubscribe(seg, durableName(group))
	if errors.Is(uerr, ring.ErrBusy) {
		return fmt.Errorf("consumer group %q of %q: %w", group, topicName, uerr)
	}
	rerr := shm.Remove(GroupSegment(r.Prefix, topicName, group), r.opts)
	if errors.Is(rerr, shm.ErrNotExist) {
		rerr = nil
	}
	if uerr != nil {
		uerr = fmt.Errorf("consumer group %q of %q: %w", group, topicName, uerr)
	}
	return errors.Join(uerr, rerr)
}

// RemoveTopic removes the segments of topicName and of its consumer groups' queues.
// Processes that have them open keep using what they mapped; a later Publish or Subscribe
// creates the topic anew. shm.ErrNotExist when there is no such topic.
func RemoveTopic(c Config, topicName string) error {
	r, err := c.resolve()
	if err != nil {
		return err
	}
	name := TopicSegment(r.Prefix, topicName)
	names, err := shm.List(r.opts)
	if err != nil {
		return err
	}
	errs := []error{shm.Remove(name, r.opts)}
	for _, n := range names {
		if strings.HasPrefix(n, name+groupSep) {
			if err := shm.Remove(n, r.opts); err != nil && !errors.Is(err, shm.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
