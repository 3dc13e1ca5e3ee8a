package watermill

import (
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/shmq/shmq/envelope"
)

// A Watermill message travels as one envelope (package envelope, the event bus's format):
//
//	type         the Watermill topic (so a reader can tell a message of another topic
//	             whose name hashed to the same segment, and the bus can filter by topic)
//	id           the message UUID when it is a canonical UUID string, else a fresh UUIDv7
//	source       PublisherConfig.Source
//	time         when Publish was called
//	correlation  the "correlation_id" metadata (Watermill's correlation middleware), if set
//	metadata     first {"uuid", ""} when the UUID is in id, {"uuid", "#" + UUID} otherwise; then
//	             every metadata entry but a non-empty "correlation_id"
//	payload      the payload
//
// Priority is Normal and attempt 1. The ring record's type is envelope.TypeID(topic).

// uuidKey is the key of the first metadata entry of every envelope this adapter writes.
const uuidKey = "uuid"

// idMark starts the value of the uuid entry when it holds the UUID (which may be empty),
// so that an empty value always means "the envelope's id".
const idMark = "#"

// correlationKey is the metadata key of Watermill's correlation middleware
// (middleware.CorrelationIDMetadataKey), carried in the envelope's correlation field.
const correlationKey = "correlation_id"

// encoder builds envelope headers for one topic. Not safe for concurrent use.
type encoder struct {
	topic  string
	typeID uint32
	source string
	ids    envelope.IDs
	meta   []envelope.KV // reused between messages
}

func newEncoder(topic, source string) *encoder {
	return &encoder{topic: topic, typeID: envelope.TypeID(topic), source: source}
}

// header returns msg's envelope header and its size. The header's Meta is reused by the
// next call.
func (e *encoder) header(msg *message.Message, now time.Time) (envelope.Header, int, error) {
	h := envelope.Header{Time: now, Type: e.topic, Source: e.source, Priority: envelope.Normal, Attempt: 1}
	idValue := ""
	if id, err := uuid.Parse(msg.UUID); err == nil && len(msg.UUID) == 36 && id.String() == msg.UUID {
		h.ID = id
	} else {
		id, err := e.ids.New(now)
		if err != nil {
			return h, 0, err
		}
		h.ID, idValue = id, idMark+msg.UUID
	}
	e.meta = append(e.meta[:0], envelope.KV{Key: uuidKey, Value: idValue})
	for k, v := range msg.Metadata {
		if k == correlationKey && v != "" {
			h.Correlation = v
			continue
		}
		e.meta = append(e.meta, envelope.KV{Key: k, Value: v})
	}
	h.Meta = e.meta
	n, err := h.Size(len(msg.Payload))
	if err != nil {
		return h, 0, fmt.Errorf("message %s: %w: %w", msg.UUID, ErrTooLarge, err)
	}
	return h, n, nil
}

// decode makes a Watermill message of the envelope b, which must be of topic: ErrForeign
// (or the envelope's error) otherwise. Everything is copied: the message outlives b.
func decode(b []byte, topic string) (*message.Message, error) {
	v, err := envelope.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrForeign, err)
	}
	if !v.IsType(topic) {
		return nil, fmt.Errorf("%w: envelope of type %q", ErrForeign, v.Type())
	}
	var id string
	first, md := true, make(message.Metadata, v.MetaLen())
	v.EachMeta(func(k, val []byte) bool {
		if first {
			first = false
			if string(k) != uuidKey {
				err = fmt.Errorf("%w: first metadata entry is %q, not %q", ErrForeign, k, uuidKey)
				return false
			}
			switch {
			case len(val) == 0:
				id = v.ID.String()
			case val[0] == idMark[0]:
				id = string(val[1:])
			default:
				err = fmt.Errorf("%w: first metadata entry %q is no uuid entry", ErrForeign, val)
				return false
			}
			return true
		}
		md[string(k)] = string(val)
		return true
	})
	if err == nil && first {
		err = fmt.Errorf("%w: no metadata", ErrForeign)
	}
	if err != nil {
		return nil, err
	}
	if c := v.Correlation(); len(c) > 0 {
		md[correlationKey] = string(c)
	}
	msg := message.NewMessage(id, append([]byte(nil), v.Payload()...))
	msg.Metadata = md
	return msg, nil
}
