package bridge

import (
	"errors"
	"fmt"

	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/shm"
)

// The bridge keeps its counters in shared memory, one metrics set per bridged topic and
// bridge, named TOPIC.bridge.NAME, so that any process sees them: shmctl stat TOPIC prints
// them with the topic, and the Prometheus collector exports them. Each series carries the
// labels direction (out, in) and subject.
var counterNames = [...]struct{ name, help string }{
	{"shmq_bridge_forwarded_total", "messages sent to NATS (acknowledged by JetStream on reliable routes)"},
	{"shmq_bridge_received_total", "messages written into the local topic from NATS"},
	{"shmq_bridge_dropped_total", "messages lost on best-effort routes, missed by a lapped subscription, or too large for NATS"},
	{"shmq_bridge_retried_total", "batches sent again or pulls started again after a failure"},
	{"shmq_bridge_duplicates_total", "inbound messages the topic had already"},
	{"shmq_bridge_looped_total", "messages not forwarded because they came from NATS or from this bridge"},
}

// counters are one route's counters: handles into its topic's set.
type counters struct {
	forwarded, received, dropped, retried, duplicates, looped *metrics.Counter
}

func (c *counters) snapshot() Stats {
	return Stats{
		Forwarded: c.forwarded.Load(), Received: c.received.Load(), Dropped: c.dropped.Load(),
		Retried: c.retried.Load(), Duplicates: c.duplicates.Load(), Looped: c.looped.Load(),
	}
}

// CountersName is the name of the metrics set that holds the counters of bridge's routes of
// topic.
func CountersName(topic, bridge string) string { return topic + ".bridge." + bridge }

func routeLabels(out bool, r Route) []metrics.Label {
	dir := "in"
	if out {
		dir = "out"
	}
	return []metrics.Label{{Key: "direction", Value: dir}, {Key: "subject", Value: r.Subject}}
}

// openCounters opens (or creates) the set of each bridged topic and the counters of each route.
// A set left by an earlier run with other routes is replaced: it is this bridge's own.
func (b *Bridge) openCounters() error {
	type route struct {
		out bool
		r   Route
		key string
	}
	byTopic := map[string][]route{}
	for _, r := range b.cfg.Out {
		byTopic[r.Topic] = append(byTopic[r.Topic], route{true, r, RouteKey(true, r)})
	}
	for _, r := range b.cfg.In {
		byTopic[r.Topic] = append(byTopic[r.Topic], route{false, r, RouteKey(false, r)})
	}
	// A bus route's counters are in the set named after the bus, as a topic's are.
	for _, br := range b.cfg.Buses {
		r := Route{Topic: br.Bus, Subject: br.Subject}
		if br.Out {
			byTopic[br.Bus] = append(byTopic[br.Bus], route{true, r, BusRouteKey(true, br)})
		}
		if br.In {
			byTopic[br.Bus] = append(byTopic[br.Bus], route{false, r, BusRouteKey(false, br)})
		}
	}
	opts := shm.Options{Dir: b.cfg.Dir}
	for topicName, routes := range byTopic {
		var schema []metrics.Desc
		for _, rt := range routes {
			for _, c := range counterNames {
				schema = append(schema, metrics.Desc{Name: c.name, Type: metrics.TypeCounter, Help: c.help, Unit: "messages", Labels: routeLabels(rt.out, rt.r)})
			}
		}
		name := CountersName(topicName, b.cfg.Name)
		set, _, err := metrics.OpenOrCreate(name, schema, opts)
		if errors.Is(err, metrics.ErrMismatch) {
			if err = shm.Remove(name, opts); err == nil {
				set, _, err = metrics.OpenOrCreate(name, schema, opts)
			}
		}
		if err != nil {
			return fmt.Errorf("bridge: counters %s: %w", name, err)
		}
		b.sets[topicName] = set
		for _, rt := range routes {
			c := &counters{}
			for i, h := range []**metrics.Counter{&c.forwarded, &c.received, &c.dropped, &c.retried, &c.duplicates, &c.looped} {
				if *h, err = set.Counter(counterNames[i].name, routeLabels(rt.out, rt.r)...); err != nil {
					return fmt.Errorf("bridge: counters %s: %w", name, err)
				}
			}
			b.stats[rt.key] = c
		}
	}
	return nil
}
