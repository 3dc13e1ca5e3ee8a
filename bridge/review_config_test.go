package bridge

import (
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
)

// Routes that would share a durable position or a counter series are refused: before, the
// second reliable route out of a topic forwarded nothing, silently (it waited for the
// durable subscription bridge.NAME the first one held), and two reliable routes into
// topics "a.b" and "a_b", or into one topic from two subjects, shared one JetStream consumer
// whose filter each rewrote.
func TestReviewConfigRouteCollisions(t *testing.T) {
	for name, cfg := range map[string]Config{
		"two reliable out of one topic": {Out: []Route{{Topic: "t", Reliable: true}, {Topic: "t", Subject: "shmq.copy", Reliable: true}}},
		"one consumer for a.b and a_b":  {In: []Route{{Topic: "a.b", Reliable: true}, {Topic: "a_b", Reliable: true}}},
		"one consumer, two subjects":    {In: []Route{{Topic: "t", Reliable: true}, {Topic: "t", Subject: "shmq.u", Reliable: true}}},
		"the same route twice":          {Out: []Route{{Topic: "t"}, {Topic: "t", Subject: "shmq.t"}}},
	} {
		cfg.Name, cfg.URL = "a", "nats://127.0.0.1:1"
		cfg.Dir = t.TempDir()
		b, err := New(cfg)
		if b != nil {
			b.Close()
		}
		assert.True(t, errors.Is(err, ErrConfig), "%s: %v", name, err)
	}
	for name, cfg := range map[string]Config{
		"best effort out of one topic twice":  {Out: []Route{{Topic: "t"}, {Topic: "t", Subject: "shmq.copy"}}},
		"reliable and best effort":            {Out: []Route{{Topic: "t", Reliable: true}, {Topic: "t", Subject: "shmq.copy"}}},
		"out and in of one topic and subject": {Out: []Route{{Topic: "t", Reliable: true}}, In: []Route{{Topic: "t", Reliable: true}}},
	} {
		cfg.Name, cfg.URL = "a", "nats://127.0.0.1:1"
		cfg.Dir = t.TempDir()
		b, err := New(cfg)
		assert.NoError(t, err, name)
		if b != nil {
			b.Close()
		}
	}
}

// Close is safe from any goroutine, any number of times, also at once (run with -race: the
// map of counter sets was deleted from without a lock).
func TestReviewCloseConcurrently(t *testing.T) {
	for range 20 {
		b, err := New(Config{Name: "a", URL: "nats://127.0.0.1:1", Dir: t.TempDir(),
			Out: []Route{{Topic: "t1"}, {Topic: "t2"}, {Topic: "t3"}, {Topic: "t4"}}})
		assert.NoError(t, err)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { assert.NoError(t, b.Close()) })
		}
		wg.Wait()
		assert.NoError(t, b.Close())
	}
}

// An outbound subject is where messages are published: a wildcard there is no subject any
// subscriber listening on a literal subject receives (core NATS delivered nothing to
// "shmq.x"; JetStream stored the messages under "shmq.*"). An inbound subject may have
// wildcards, '>' only as its last token.
func TestReviewConfigWildcardSubjects(t *testing.T) {
	for name, cfg := range map[string]Config{
		"out *":         {Out: []Route{{Topic: "t", Subject: "shmq.*"}}},
		"out >":         {Out: []Route{{Topic: "t", Subject: "shmq.>", Reliable: true}}},
		"in > not last": {In: []Route{{Topic: "t", Subject: "shmq.>.x"}}},
	} {
		cfg.Name, cfg.URL, cfg.Dir = "a", "nats://127.0.0.1:1", t.TempDir()
		b, err := New(cfg)
		if b != nil {
			b.Close()
		}
		assert.True(t, errors.Is(err, ErrConfig), "%s: %v", name, err)
	}
	for name, cfg := range map[string]Config{
		"in *": {In: []Route{{Topic: "t", Subject: "shmq.*.x", Reliable: true}}},
		"in >": {In: []Route{{Topic: "t", Subject: "shmq.>"}}},
	} {
		cfg.Name, cfg.URL, cfg.Dir = "a", "nats://127.0.0.1:1", t.TempDir()
		b, err := New(cfg)
		assert.NoError(t, err, name)
		if b != nil {
			b.Close()
		}
	}
}
