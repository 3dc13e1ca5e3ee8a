package watermill

import (
	"errors"
	"fmt"

	"github.com/shmq/shmq/ring"
)

// ErrClosed is returned by Publish and Subscribe after Close. It matches ring.ErrClosed
// (and so os.ErrClosed).
var ErrClosed = fmt.Errorf("shmq watermill: closed: %w", ring.ErrClosed)

// ErrInvalidConfig is returned by NewPublisher and NewSubscriber for a Config they cannot
// use; the message says which field.
var ErrInvalidConfig = errors.New("shmq watermill: invalid config")

// ErrTooLarge is returned by Publish for a message whose envelope (UUID, metadata, topic
// name and payload) does not fit the topic's largest message (TopicConfig.MaxMessage of the
// process that created the topic). Nothing of that Publish call is published. It matches
// ring.ErrTooLarge.
var ErrTooLarge = fmt.Errorf("shmq watermill: message too large for the topic: %w", ring.ErrTooLarge)

// ErrForeign is what a subscriber logs (and counts in Stats.Rejected) for a record it
// passes over: bytes that are no envelope of this adapter, or an envelope of another
// topic whose name hashed to the same segment name.
var ErrForeign = errors.New("shmq watermill: record is not a message of this topic")
