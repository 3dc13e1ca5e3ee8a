package bridge

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/shmq/shmq/envelope"
)

// The NATS headers that carry an envelope. This file is their one home.
const (
	hdrMsgID       = nats.MsgIdHdr // "Nats-Msg-Id": JetStream de-duplication
	hdrID          = "Shmq-Id"
	hdrType        = "Shmq-Type"
	hdrSource      = "Shmq-Source"
	hdrTime        = "Shmq-Time" // Unix nanoseconds, decimal
	hdrCorrelation = "Shmq-Correlation"
	hdrPriority    = "Shmq-Priority" // critical, normal, low
	hdrAttempt     = "Shmq-Attempt"
	hdrOrigin      = "Shmq-Origin"      // the bridge that first sent the message to NATS
	hdrRecordType  = "Shmq-Record-Type" // a raw (non-envelope) record's type field
	hdrMeta        = "Shmq-Meta"        // metadata in order: key=value&key=value, each query-escaped
)

// OriginKey is the envelope metadata entry a bridge adds to a message it writes into a
// local topic from NATS: its value is the name of the bridge that sent it out. A bridge
// never forwards a message carrying it.
const OriginKey = "shmq.bridge.origin"

// toNATS builds the NATS message for a local record: the envelope's fields as headers and
// its payload as data, or the raw record when it is not an envelope. data is copied.
func toNATS(subject, origin string, rec []byte, typ uint32) *nats.Msg {
	m := &nats.Msg{Subject: subject, Header: nats.Header{}}
	v, err := envelope.Parse(rec)
	if err != nil {
		m.Header[hdrRecordType] = []string{strconv.FormatUint(uint64(typ), 10)}
		m.Header[hdrOrigin] = []string{origin}
		m.Data = append([]byte(nil), rec...)
		return m
	}
	id := v.ID.String()
	h := m.Header
	h[hdrMsgID] = []string{id}
	h[hdrID] = []string{id}
	h[hdrType] = []string{string(v.Type())}
	h[hdrSource] = []string{string(v.Source())}
	h[hdrTime] = []string{strconv.FormatInt(v.Time, 10)}
	if c := v.Correlation(); len(c) > 0 {
		h[hdrCorrelation] = []string{string(c)}
	}
	h[hdrPriority] = []string{v.Priority.String()}
	h[hdrAttempt] = []string{strconv.FormatUint(uint64(v.Attempt), 10)}
	h[hdrOrigin] = []string{origin}
	if v.MetaLen() > 0 {
		var b strings.Builder
		v.EachMeta(func(k, val []byte) bool {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(url.QueryEscape(string(k)))
			b.WriteByte('=')
			b.WriteString(url.QueryEscape(string(val)))
			return true
		})
		h[hdrMeta] = []string{b.String()}
	}
	m.Data = append([]byte(nil), v.Payload()...)
	return m
}

// cameFromNATS reports whether rec is an envelope a bridge wrote into a local topic from NATS.
func cameFromNATS(rec []byte) bool {
	v, err := envelope.Parse(rec)
	if err != nil {
		return false
	}
	_, ok := v.Meta(OriginKey)
	return ok
}

// fromNATS is the envelope header for a message that came in from NATS, with OriginKey set
// to the sending bridge (or "nats" for a message no bridge sent). A message without an
// envelope id gets a new one: type from Shmq-Type or the subject, source "nats:SUBJECT".
func fromNATS(m *nats.Msg, ids *envelope.IDs) (envelope.Header, error) {
	get := func(k string) string {
		if v := m.Header[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	origin := get(hdrOrigin)
	if origin == "" {
		origin = "nats"
	}
	var h envelope.Header
	if s := get(hdrID); s != "" {
		id, err := uuid.Parse(s)
		if err != nil {
			return h, fmt.Errorf("bridge: %s header %q: %w", hdrID, s, err)
		}
		h.ID = id
		ns, err := strconv.ParseInt(get(hdrTime), 10, 64)
		if err != nil {
			return h, fmt.Errorf("bridge: %s header: %w", hdrTime, err)
		}
		h.Time = time.Unix(0, ns)
		att, err := strconv.ParseUint(get(hdrAttempt), 10, 32)
		if err != nil {
			return h, fmt.Errorf("bridge: %s header: %w", hdrAttempt, err)
		}
		h.Attempt = uint32(att)
		p, err := parsePriority(get(hdrPriority))
		if err != nil {
			return h, err
		}
		h.Priority = p
		h.Type, h.Source, h.Correlation = get(hdrType), get(hdrSource), get(hdrCorrelation)
	} else {
		now := time.Now()
		id, err := ids.New(now)
		if err != nil {
			return h, err
		}
		h = envelope.Header{ID: id, Time: now, Type: get(hdrType), Source: "nats:" + m.Subject, Priority: envelope.Normal, Attempt: 1}
		if h.Type == "" {
			h.Type = m.Subject
		}
	}
	if meta := get(hdrMeta); meta != "" {
		for _, kv := range strings.Split(meta, "&") {
			k, v, _ := strings.Cut(kv, "=")
			key, err := url.QueryUnescape(k)
			if err != nil {
				return h, fmt.Errorf("bridge: %s header: %w", hdrMeta, err)
			}
			val, err := url.QueryUnescape(v)
			if err != nil {
				return h, fmt.Errorf("bridge: %s header: %w", hdrMeta, err)
			}
			if key != OriginKey { // set below, once
				h.Meta = append(h.Meta, envelope.KV{Key: key, Value: val})
			}
		}
	}
	h.Meta = append(h.Meta, envelope.KV{Key: OriginKey, Value: origin})
	return h, nil
}

func parsePriority(s string) (envelope.Priority, error) {
	for p := envelope.Priority(0); p < envelope.Priorities; p++ {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("bridge: %s header %q", hdrPriority, s)
}
