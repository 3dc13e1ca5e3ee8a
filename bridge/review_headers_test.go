package bridge

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/envelope"
)

// reviewNATS starts an embedded core NATS server (opts adjusted by fn) and connects to it.
func reviewNATS(t *testing.T, fn func(*server.Options)) (*server.Server, *nats.Conn) {
	t.Helper()
	o := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir()}
	if fn != nil {
		fn(o)
	}
	s, err := server.NewServer(o)
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second))
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return s, nc
}

// An envelope's strings are bytes: every one must come back from NATS as it went, whatever
// it holds (spaces at the ends, CR LF, bytes that are not UTF-8).
func TestReviewHeaderStringsRoundTrip(t *testing.T) {
	_, nc := reviewNATS(t, nil)
	sub, err := nc.SubscribeSync("shmq.t")
	require.NoError(t, err)
	for _, s := range []string{"", " ", " lead", "trail ", "\ttab", "a\r\nShmq-Priority: low", "x\ny", "\xff\xfe\x00", "%41", "a+b c", "plain"} {
		h, err := envelope.NewHeader(s, "S"+s)
		require.NoError(t, err)
		h.Correlation = s
		h.Meta = []envelope.KV{{Key: "k" + s, Value: s}}
		rec, err := h.Append(nil, []byte("payload"))
		require.NoError(t, err)
		out := &outMsgs{subject: "shmq.t", origin: "a"}
		out.add(rec, envelope.TypeID(h.Type))
		require.NoError(t, nc.PublishMsg(out.batch()[0]))
		m, err := sub.NextMsg(5 * time.Second)
		require.NoError(t, err)
		var ids envelope.IDs
		got, err := fromNATS(m, &ids)
		require.NoError(t, err, "%q", s)
		assert.Equal(t, h.Type, got.Type, "type %q", s)
		assert.Equal(t, h.Source, got.Source, "source %q", s)
		assert.Equal(t, h.Correlation, got.Correlation, "correlation %q", s)
		assert.Equal(t, h.Priority, got.Priority, "priority %q", s)
		assert.Equal(t, append(h.Meta, envelope.KV{Key: OriginKey, Value: "a"}), got.Meta, "meta %q", s)
		assert.Equal(t, "payload", string(m.Data))
	}
}

// A NATS-native JetStream publisher sets Nats-Msg-Id to its own id (any string) for
// JetStream's de-duplication, and sends no Shmq-* headers: such a message is a foreign one
// (a new envelope), not a malformed bridge message to terminate.
func TestReviewForeignMsgIDIsNotAnEnvelope(t *testing.T) {
	for _, id := range []string{"order-1", "0190a6b2-7c1e-7def-8000-000000000001"} {
		m := &nats.Msg{Subject: "shmq.t", Header: nats.Header{nats.MsgIdHdr: {id}}, Data: []byte("x")}
		var ids envelope.IDs
		h, err := fromNATS(m, &ids)
		require.NoError(t, err, "Nats-Msg-Id %q", id)
		assert.Equal(t, "shmq.t", h.Type)
		assert.Equal(t, "nats:shmq.t", h.Source)
		assert.Equal(t, envelope.Normal, h.Priority)
		assert.Equal(t, uint32(1), h.Attempt)
	}
}
