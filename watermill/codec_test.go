package watermill

import (
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/envelope"
)

func encode(t testing.TB, topic string, msg *message.Message) []byte {
	t.Helper()
	e := newEncoder(topic, "test")
	h, n, err := e.header(msg, time.Now())
	require.NoError(t, err)
	b, err := h.Append(nil, msg.Payload)
	require.NoError(t, err)
	require.Len(t, b, n)
	return b
}

func TestCodecRoundTrip(t *testing.T) {
	ids := []string{
		watermill.NewUUID(),                  // canonical: in the envelope's id
		strings.ToUpper(watermill.NewUUID()), // parses as a UUID but is not canonical
		watermill.NewULID(),                  // not a UUID
		watermill.NewShortUUID(),
		"",
		"{" + watermill.NewUUID() + "}",
	}
	for _, id := range ids {
		msg := message.NewMessage(id, []byte("payload"))
		msg.Metadata.Set("k", "v")
		msg.Metadata.Set("empty", "")
		msg.Metadata.Set(correlationKey, "corr-1")
		msg.Metadata.Set(uuidKey, "a user's own uuid key") // user metadata may use the key too
		b := encode(t, "orders", msg)
		got, err := decode(b, "orders")
		require.NoError(t, err)
		assert.Equal(t, id, got.UUID)
		assert.Equal(t, msg.Metadata, got.Metadata)
		assert.Equal(t, []byte("payload"), []byte(got.Payload))

		v, err := envelope.Parse(b)
		require.NoError(t, err)
		assert.True(t, v.IsType("orders"))
		assert.Equal(t, "corr-1", string(v.Correlation()))
		assert.Equal(t, "test", string(v.Source()))
		idValue, _ := v.Meta(uuidKey)
		if len(id) == 36 && id == strings.ToLower(id) {
			assert.Equal(t, id, v.ID.String(), "a canonical UUID is the envelope's id")
			assert.Empty(t, idValue)
		} else {
			assert.Equal(t, idMark+id, string(idValue), "any other id travels in the first metadata entry")
		}
	}
	// An empty correlation_id is kept as metadata, not lost.
	msg := message.NewMessage(watermill.NewUUID(), nil)
	msg.Metadata.Set(correlationKey, "")
	got, err := decode(encode(t, "t", msg), "t")
	require.NoError(t, err)
	v, ok := got.Metadata[correlationKey]
	assert.True(t, ok)
	assert.Empty(t, v)
}

func TestDecodeRefusesForeignRecords(t *testing.T) {
	msg := message.NewMessage(watermill.NewUUID(), []byte("x"))
	_, err := decode(encode(t, "orders", msg), "payments")
	assert.ErrorIs(t, err, ErrForeign, "an envelope of another topic (a hash collision) is refused")

	_, err = decode([]byte("not an envelope at all, just bytes of some other writer........."), "orders")
	assert.ErrorIs(t, err, ErrForeign)

	h, err := envelope.NewHeader("orders", "bus")
	require.NoError(t, err)
	h.Meta = []envelope.KV{{Key: "other", Value: "x"}}
	b, err := h.Append(nil, []byte("x"))
	require.NoError(t, err)
	_, err = decode(b, "orders")
	assert.ErrorIs(t, err, ErrForeign, "an envelope whose first entry is no uuid is not ours")

	h.Meta = nil
	b, err = h.Append(nil, []byte("x"))
	require.NoError(t, err)
	_, err = decode(b, "orders")
	assert.ErrorIs(t, err, ErrForeign)
}

func TestHeaderTooLarge(t *testing.T) {
	msg := message.NewMessage(watermill.NewUUID(), nil)
	msg.Metadata.Set("big", strings.Repeat("v", 70000))
	_, _, err := newEncoder("t", "").header(msg, time.Now())
	assert.ErrorIs(t, err, ErrTooLarge)
	assert.ErrorIs(t, err, envelope.ErrTooLarge)
}

// FuzzDecode: no bytes make decode panic, and what it accepts it accepts as an envelope of
// the topic asked for.
func FuzzDecode(f *testing.F) {
	msg := message.NewMessage(watermill.NewULID(), []byte("payload"))
	msg.Metadata.Set("k", "v")
	f.Add(encode(f, "t", msg))
	f.Add(encode(f, "t", message.NewMessage(watermill.NewUUID(), nil)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decode(b, "t")
		if err != nil {
			if got != nil {
				t.Fatal("a message with an error")
			}
			return
		}
		v, err := envelope.Parse(b)
		if err != nil || !v.IsType("t") {
			t.Fatalf("accepted what is no envelope of the topic: %v", err)
		}
	})
}
