package bridge

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
	"github.com/shmq/shmq/topic"
)

// ErrConfig is returned by Run for a Config it cannot run, wrapped with what is wrong.
var ErrConfig = errors.New("bridge: invalid config")

// Config says which NATS server to use and which topics to forward each way. The zero value
// of every optional field is the documented default.
type Config struct {
	// Name identifies this bridge: its durable subscriptions and consumers are named after it,
	// and it marks what it sends to NATS with it. Required: letters, digits, '-' and '_'.
	Name string
	// URL is the NATS server, as nats.Connect takes it. Required.
	URL string
	// Dir is the directory of the local topics (shm.Options.Dir; empty: $SHMQ_DIR or /dev/shm).
	Dir string
	// Out forwards local topics to NATS; In forwards NATS subjects into local topics. A
	// route may appear once; a topic may have one reliable route out (its durable
	// subscription is named after the bridge) and one reliable route in (the JetStream
	// consumer is named after the bridge and the topic). ErrConfig otherwise.
	Out, In []Route
	// Buses forward event buses (package bus) both or one way.
	Buses []BusRoute
	// Stream is the JetStream stream that carries reliable routes, created or updated to
	// hold StreamSubjects. Default "SHMQ".
	Stream string
	// StreamSubjects are the subjects of Stream. Default ["shmq.>"]: every reliable route's
	// subject must match one of them.
	StreamSubjects []string
	// Dedup is Stream's de-duplication window. Default 2 minutes.
	Dedup time.Duration
	// AckTimeout is how long the bridge waits for JetStream to acknowledge a batch before it
	// counts a retry and sends the batch again. Default 5 s.
	AckTimeout time.Duration
	// Window is how many reliable messages the bridge has unacknowledged at once per route.
	// Default 256.
	Window int
	// RetryWait is the pause after a failed send or a lost connection before trying again.
	// Default 250 ms.
	RetryWait time.Duration
	// AckWait is how long JetStream waits for an inbound reliable route to acknowledge a
	// message before it delivers it again (to this bridge after a restart). Default 5 s; a
	// message stays unacknowledged while its local topic is full.
	AckWait time.Duration
	// Wait is how the bridge's topic subscriptions and publishers wait (ring.Options.Wait):
	// the default, adaptive, spins briefly and then sleeps in the kernel; ring.Spin() keeps
	// a core busy and takes the kernel's wake-up out of the added latency.
	Wait ring.Wait
	// Seen is how many ids of messages it wrote into each local topic an inbound reliable
	// route remembers, and reads back from the topic's history when it starts, to drop
	// messages JetStream delivers again. Default 65,536.
	Seen int
}

// Route is one forwarded topic.
type Route struct {
	// Topic is the local topic's name.
	Topic string
	// Subject is the NATS subject. Default "shmq." + Topic. Wildcards ('*', '>' last) only
	// on routes in.
	Subject string
	// Reliable sends through JetStream (acknowledged, de-duplicated, durable); otherwise
	// core NATS (best effort).
	Reliable bool
	// Config is used to create the local topic when it does not exist; the zero value creates
	// it with topic.Config{Policy: ring.Block} for reliable inbound routes and ring.Overwrite
	// otherwise. An existing topic is used whatever its shape.
	Config topic.Config
}

func (c *Config) withDefaults() (Config, error) {
	d := *c
	if d.Name == "" || strings.IndexFunc(d.Name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}) >= 0 {
		return d, fmt.Errorf("%w: name %q: letters, digits, '-' and '_' only", ErrConfig, d.Name)
	}
	if d.URL == "" {
		return d, fmt.Errorf("%w: no NATS URL", ErrConfig)
	}
	if len(d.Out)+len(d.In)+len(d.Buses) == 0 {
		return d, fmt.Errorf("%w: no routes", ErrConfig)
	}
	if d.Stream == "" {
		d.Stream = "SHMQ"
	}
	if len(d.StreamSubjects) == 0 {
		d.StreamSubjects = []string{"shmq.>"}
	}
	if d.Dedup == 0 {
		d.Dedup = 2 * time.Minute
	}
	if d.AckTimeout == 0 {
		d.AckTimeout = 5 * time.Second
	}
	if d.Window == 0 {
		d.Window = 256
	}
	if d.RetryWait == 0 {
		d.RetryWait = 250 * time.Millisecond
	}
	if d.AckWait == 0 {
		d.AckWait = 5 * time.Second
	}
	if d.Seen == 0 {
		d.Seen = 1 << 16
	}
	if d.Dedup < 0 || d.AckTimeout < 0 || d.Window < 0 || d.RetryWait < 0 || d.AckWait < 0 || d.Seen < 0 {
		return d, fmt.Errorf("%w: negative duration or count", ErrConfig)
	}
	fix := func(rs []Route, out bool) ([]Route, error) {
		rs2 := make([]Route, len(rs))
		for i, r := range rs {
			if err := shm.ValidateName(r.Topic); err != nil {
				return nil, fmt.Errorf("%w: route %d: %w", ErrConfig, i, err)
			}
			if r.Subject == "" {
				r.Subject = "shmq." + r.Topic
			}
			if !validSubject(r.Subject) {
				return nil, fmt.Errorf("%w: route %d: subject %q", ErrConfig, i, r.Subject)
			}
			// Wildcards are whole tokens; '>' only last; none where messages are published.
			toks := strings.Split(r.Subject, ".")
			for j, tok := range toks {
				if tok == "*" && out || tok == ">" && (out || j != len(toks)-1) {
					return nil, fmt.Errorf("%w: route %d: subject %q: wildcard %q where it cannot be", ErrConfig, i, r.Subject, tok)
				}
			}
			rs2[i] = r
		}
		return rs2, nil
	}
	var err error
	if d.Out, err = fix(d.Out, true); err != nil {
		return d, err
	}
	if d.In, err = fix(d.In, false); err != nil {
		return d, err
	}
	for _, r := range append(append([]Route(nil), d.Out...), d.In...) {
		if r.Reliable && !matchesAny(r.Subject, d.StreamSubjects) {
			return d, fmt.Errorf("%w: reliable subject %q is not in stream %s %v", ErrConfig, r.Subject, d.Stream, d.StreamSubjects)
		}
	}
	// Routes that would share a counter set's series or a durable position: the second
	// reliable outbound route of a topic waited forever for the durable subscription the
	// first holds, and two reliable inbound routes with one consumer name took turns
	// rewriting its filter.
	used := map[string]bool{}
	claim := func(k string) error {
		if used[k] {
			return fmt.Errorf("%w: two routes share %s", ErrConfig, k)
		}
		used[k] = true
		return nil
	}
	for _, r := range d.Out {
		if err := claim(RouteKey(true, r)); err != nil {
			return d, err
		}
		if r.Reliable {
			if err := claim(fmt.Sprintf("the durable subscription of topic %s (one reliable route out per topic)", r.Topic)); err != nil {
				return d, err
			}
		}
	}
	for _, r := range d.In {
		if err := claim(RouteKey(false, r)); err != nil {
			return d, err
		}
		if r.Reliable {
			if err := claim("the JetStream consumer " + durableName(d.Name, r.Topic)); err != nil {
				return d, err
			}
		}
	}
	d.Buses = append([]BusRoute(nil), d.Buses...)
	for i := range d.Buses {
		if err := d.Buses[i].check(i, d.StreamSubjects); err != nil {
			return d, err
		}
	}
	return d, nil
}

// validSubject reports whether s can be published to: no whitespace, no empty token.
func validSubject(s string) bool {
	return s != "" && !strings.ContainsAny(s, " \t\r\n") && !strings.Contains(s, "..") && !strings.HasSuffix(s, ".") && !strings.HasPrefix(s, ".")
}

// matchesAny reports whether subject matches one of the NATS subject patterns.
func matchesAny(subject string, patterns []string) bool {
	for _, p := range patterns {
		if subjectMatch(strings.Split(subject, "."), strings.Split(p, ".")) {
			return true
		}
	}
	return false
}

func subjectMatch(s, p []string) bool {
	for i, tok := range p {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(s) == len(p)
}
