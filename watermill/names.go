package watermill

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/shmq/shmq/shm"
)

// A Watermill topic is any string; a segment name is [A-Za-z0-9._-]{1,200} and never starts
// with a dot. The mapping, one home for it:
//
//	segment of a topic            Prefix + enc(topic)
//	queue of a consumer group     Prefix + enc(topic) + "__" + enc(group)
//
// enc keeps A-Z a-z 0-9 . - as they are (a leading dot excepted) and writes every other
// byte, '_' included, as '_' and two lower-case hex digits: "orders.created" stays
// "orders.created", "a/b c" becomes "a_2fb_20c", "" becomes "_". Since '_' is always
// followed by a hex digit, "__" never occurs inside an encoding and separates topic and group
// without ambiguity. An encoding longer than maxPart bytes is cut and ends in "_h" and 32
// hex digits of the SHA-256 of the whole string ('h' is no hex digit, so no escape reads
// like it); such a name is no longer reversible, and the subscriber checks every message's
// envelope type, which holds the whole topic name, against the topic it subscribed to.

// maxPart is the longest encoded topic or group: Prefix (at most maxPrefix) + topic + "__" +
// group stays within shm.MaxNameLen.
const maxPart = 80

// maxPrefix is the longest Config.Prefix.
const maxPrefix = shm.MaxNameLen - 2*maxPart - 2

// hashedMark starts the hash of an encoding too long for a segment name.
const hashedMark = "_h"

// hashHex is how many hex digits of the SHA-256 a cut encoding keeps (128 bits).
const hashHex = 32

// groupSep separates the encoded topic and group in a group queue's name.
const groupSep = "__"

func keep(c byte, first bool) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' ||
		c == '.' && !first
}

// encodePart is enc above, with the cut and hash of long encodings.
func encodePart(s string) string {
	if s == "" {
		return "_"
	}
	var b strings.Builder
	b.Grow(len(s))
	const digits = "0123456789abcdef"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if keep(c, i == 0) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('_')
		b.WriteByte(digits[c>>4])
		b.WriteByte(digits[c&15])
	}
	e := b.String()
	if len(e) <= maxPart {
		return e
	}
	cut := maxPart - len(hashedMark) - hashHex
	for cut > 0 && strings.LastIndexByte(e[:cut], '_') > cut-3 {
		cut-- // never cut inside an escape
	}
	sum := sha256.Sum256([]byte(s))
	return e[:cut] + hashedMark + hex.EncodeToString(sum[:])[:hashHex]
}

// decodePart inverts encodePart. ok is false for a hashed encoding (which cannot be
// inverted) and for a string no encoding produces.
func decodePart(e string) (s string, ok bool) {
	if e == "_" {
		return "", true
	}
	if e == "" {
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(e); i++ {
		c := e[i]
		if c != '_' {
			if !keep(c, i == 0) {
				return "", false
			}
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(e) || !isLowerHex(e[i+1]) || !isLowerHex(e[i+2]) {
			return "", false
		}
		v := unhex(e[i+1])<<4 | unhex(e[i+2])
		if keep(v, i == 0) {
			return "", false // kept bytes are never escaped: one string, one encoding
		}
		b.WriteByte(v)
		i += 2
	}
	return b.String(), true
}

func isLowerHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'a' + 10
}

// checkPrefix validates Config.Prefix: segment-name characters, no leading dot, no "__"
// (which would make a topic's segment read as a group's), at most maxPrefix bytes.
func checkPrefix(p string) error {
	if p == "" {
		return nil
	}
	if len(p) > maxPrefix {
		return fmt.Errorf("%w: prefix of %d bytes, at most %d", ErrInvalidConfig, len(p), maxPrefix)
	}
	if strings.Contains(p, groupSep) {
		return fmt.Errorf("%w: prefix %q contains %q", ErrInvalidConfig, p, groupSep)
	}
	if err := shm.ValidateName(p); err != nil {
		return fmt.Errorf("%w: prefix: %w", ErrInvalidConfig, err)
	}
	return nil
}

// TopicSegment is the name of the segment that carries the Watermill topic under prefix.
func TopicSegment(prefix, topic string) string { return prefix + encodePart(topic) }

// GroupSegment is the name of the MPMC queue segment through which the consumer group
// group shares the topic under prefix.
func GroupSegment(prefix, topic, group string) string {
	return prefix + encodePart(topic) + groupSep + encodePart(group)
}

// TopicOf returns the Watermill topic whose segment is name under prefix: ok is false for
// a name that is not a topic segment of that prefix (a group queue, another program's
// segment) or whose topic was too long and hashed.
func TopicOf(prefix, name string) (topic string, ok bool) {
	rest, found := strings.CutPrefix(name, prefix)
	if !found || strings.Contains(rest, groupSep) {
		return "", false
	}
	return decodePart(rest)
}

// maxDurableName is the longest durable subscription name a topic holds.
const maxDurableName = 63

// durableName is the name of the topic's durable subscription that the consumer group
// group reads through: the group itself when it fits and does not start with '#', else '#'
// and 62 hex digits of its SHA-256.
func durableName(group string) string {
	if len(group) <= maxDurableName && !strings.HasPrefix(group, "#") {
		return group
	}
	sum := sha256.Sum256([]byte(group))
	return "#" + hex.EncodeToString(sum[:])[:maxDurableName-1]
}
