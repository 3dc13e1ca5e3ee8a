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

// The NATS headers that carry an envelope. This file is their one home. Type, source and
// correlation are escaped (escapeHeader) where NATS would not carry them unchanged.
const (
	hdrID          = nats.MsgIdHdr // "Nats-Msg-Id": the envelope id, which JetStream de-duplicates by
	hdrType        = "Shmq-Type"
	hdrSource      = "Shmq-Source"
	hdrTime        = "Shmq-Time" // Unix nanoseconds, decimal
	hdrCorrelation = "Shmq-Correlation"
	hdrPriority    = "Shmq-Priority"    // critical or low; absent: normal
	hdrAttempt     = "Shmq-Attempt"     // absent: 1
	hdrOrigin      = "Shmq-Origin"      // the bridge that first sent the message to NATS
	hdrRecordType  = "Shmq-Record-Type" // a raw (non-envelope) record's type field
	hdrMeta        = "Shmq-Meta"        // metadata in order: key=value&key=value, each query-escaped
)

// OriginKey is the envelope metadata entry a bridge adds to a message it writes into a
// local topic from NATS: its value is the name of the bridge that sent it out. A bridge
// never forwards a message carrying it.
const OriginKey = "shmq.bridge.origin"

// outMsgs builds the NATS messages of outbound batches, reusing each message, its header
// map and its data buffer from one batch to the next (a batch's messages are released once
// NATS took them: PublishMsg copies, and JetStream keeps an asynchronous publish's message
// only until its acknowledgement, which the batch waits for), and the strings of type and
// source names while they repeat.
type outMsgs struct {
	subject, origin string
	msgs            []*nats.Msg
	n               int
	looped          int    // records of the batch not sent: they came from NATS
	typ, source     string // the last type and source names seen
	typHdr          string // their header values
	sourceHdr       string
}

// batch is the messages built since reset.
func (o *outMsgs) batch() []*nats.Msg { return o.msgs[:o.n] }

func (o *outMsgs) reset() { o.n, o.looped = 0, 0 }

// set puts a header's value, reusing its slice.
func set(h nats.Header, k, v string) {
	if s := h[k]; len(s) == 1 {
		s[0] = v
		return
	}
	h[k] = []string{v}
}

// internHeader returns b as a header value (escapeHeader), cached while b repeats (no
// allocation): cache holds the last bytes seen, hdr their header value.
func internHeader(cache, hdr *string, b []byte) string {
	if string(b) != *cache {
		*cache = string(b)
		*hdr = escapeHeader(*cache)
	}
	return *hdr
}

// escapeHeader makes an envelope string a header value that NATS carries unchanged: '%',
// control bytes and a space at either end (which the header parser trims) become %XX.
// Anything else, bytes that are not UTF-8 included, goes as it is, so the usual names need
// no escaping. unescapeHeader is the inverse.
func escapeHeader(s string) string {
	esc := func(i int) bool {
		c := s[i]
		return c == '%' || c < 0x20 || c == 0x7f || c == ' ' && (i == 0 || i == len(s)-1)
	}
	i := 0
	for i < len(s) && !esc(i) {
		i++
	}
	if i == len(s) {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, i, len(s)+8)
	copy(b, s)
	for ; i < len(s); i++ {
		if esc(i) {
			b = append(b, '%', hex[s[i]>>4], hex[s[i]&15])
		} else {
			b = append(b, s[i])
		}
	}
	return string(b)
}

// unescapeHeader undoes escapeHeader ('+' stays '+').
func unescapeHeader(v string) (string, error) {
	if !strings.Contains(v, "%") {
		return v, nil
	}
	return url.PathUnescape(v)
}

// add builds the next message of the batch from a local record: the envelope's fields as
// headers and its payload as data, or the raw record when it is not an envelope. The record
// is copied.
func (o *outMsgs) add(rec []byte, typ uint32) {
	if o.n == len(o.msgs) {
		o.msgs = append(o.msgs, &nats.Msg{Subject: o.subject, Header: nats.Header{}})
	}
	m := o.msgs[o.n]
	o.n++
	h := m.Header
	v, err := envelope.Parse(rec)
	if err != nil {
		clear(h)
		h[hdrRecordType] = []string{strconv.FormatUint(uint64(typ), 10)}
		h[hdrOrigin] = []string{o.origin}
		m.Data = append(m.Data[:0], rec...)
		return
	}
	delete(h, hdrRecordType)
	set(h, hdrID, v.ID.String())
	set(h, hdrType, internHeader(&o.typ, &o.typHdr, v.Type()))
	set(h, hdrSource, internHeader(&o.source, &o.sourceHdr, v.Source()))
	set(h, hdrTime, strconv.FormatInt(v.Time, 10))
	set(h, hdrOrigin, o.origin)
	// The common values go without a header: every header costs each subscriber a parse.
	if c := v.Correlation(); len(c) > 0 {
		set(h, hdrCorrelation, escapeHeader(string(c)))
	} else {
		delete(h, hdrCorrelation)
	}
	if v.Priority != envelope.Normal {
		set(h, hdrPriority, v.Priority.String())
	} else {
		delete(h, hdrPriority)
	}
	if v.Attempt != 1 {
		set(h, hdrAttempt, strconv.FormatUint(uint64(v.Attempt), 10))
	} else {
		delete(h, hdrAttempt)
	}
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
		set(h, hdrMeta, b.String())
	} else {
		delete(h, hdrMeta)
	}
	m.Data = append(m.Data[:0], v.Payload()...)
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
// envelope (Nats-Msg-Id and Shmq-Time) gets a new one: type from Shmq-Type or the subject,
// source "nats:SUBJECT".
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
	// A bridge sends Shmq-Time with every envelope id; a NATS-native publisher may set
	// Nats-Msg-Id to an id of its own, for JetStream's de-duplication, and no Shmq-Time.
	if s, ts := get(hdrID), get(hdrTime); s != "" && ts != "" {
		id, err := uuid.Parse(s)
		if err != nil {
			return h, fmt.Errorf("bridge: %s header %q: %w", hdrID, s, err)
		}
		h.ID = id
		ns, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return h, fmt.Errorf("bridge: %s header: %w", hdrTime, err)
		}
		h.Time = time.Unix(0, ns)
		h.Attempt, h.Priority = 1, envelope.Normal
		if s := get(hdrAttempt); s != "" {
			att, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return h, fmt.Errorf("bridge: %s header: %w", hdrAttempt, err)
			}
			h.Attempt = uint32(att)
		}
		if s := get(hdrPriority); s != "" {
			p, err := parsePriority(s)
			if err != nil {
				return h, err
			}
			h.Priority = p
		}
		for _, f := range []struct {
			dst *string
			key string
		}{{&h.Type, hdrType}, {&h.Source, hdrSource}, {&h.Correlation, hdrCorrelation}} {
			v, err := unescapeHeader(get(f.key))
			if err != nil {
				return h, fmt.Errorf("bridge: %s header: %w", f.key, err)
			}
			*f.dst = v
		}
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
