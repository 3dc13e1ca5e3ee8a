package promshmq

import (
	"strconv"
	"strings"

	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func init() {
	r := ringKind{}
	registerKind(ring.SPSC, r)
	registerKind(ring.MPMC, r)
	registerKind(ring.Topic, r)
}

// ringKind exports the counters of SPSC and MPMC rings and topics (ring.ReadStats) and the
// subscriptions of topics (ring.ReadTopicStats).
type ringKind struct{}

var (
	descWriteMessages = newDesc("shmq_write_messages_total", "Messages written to the ring.")
	descReadMessages  = newDesc("shmq_read_messages_total", "Messages read from the ring (a topic: by all subscribers).")
	descWriteBytes    = newDesc("shmq_write_bytes_total", "Payload bytes written to the ring.")
	descReadBytes     = newDesc("shmq_read_bytes_total", "Payload bytes read from the ring.")
	descFull          = newDesc("shmq_write_full_total", "Times a writer found the ring full.")
	descEmpty         = newDesc("shmq_read_empty_total", "Times a reader found the ring empty.")
	descRejected      = newDesc("shmq_read_rejected_total", "Records readers rejected.")
	descDrops         = newDesc("shmq_drops_total", "MPMC slots skipped for a writer that died or aborted.")
	descFutexWaits    = newDesc("shmq_futex_waits_total", "Sleeps in the kernel, by side (write or read).", "side")
	descFutexWakes    = newDesc("shmq_futex_wakes_total", "Wake-up system calls made for the other side, by the side that made them.", "side")
	descLateWakes     = newDesc("shmq_futex_late_wakes_total", "Sleeps that timed out although the condition already held (a lost wake-up), by side.", "side")
	descUsed          = newDesc("shmq_ring_used_ratio", "Fill level from 0 to 1; a topic's is its slowest live subscriber's lag over its slots.")
	descEndpoints     = newDesc("shmq_ring_endpoints", "Writer and reader endpoints held by running processes, by side.", "side")
	descAsleep        = newDesc("shmq_ring_asleep", "Running processes with a writer or reader asleep, by side.", "side")
	descDeadSleepers  = newDesc("shmq_ring_dead_sleepers", "Waiting marks left by processes that died asleep, not yet cleared by a live peer.")
	descWriterState   = newDesc("shmq_ring_writer_state", "1 for the ring's stream state (none, attached, dead, ended), 0 for the others.", "state")

	subLabels     = []string{"subscription", "subscriber"}
	descSubLag    = newDesc("shmq_topic_subscriber_lag_messages", "Records published that the subscription has not released.", subLabels...)
	descSubMissed = newDesc("shmq_topic_subscriber_missed_messages_total", "Records the subscription missed: lapped under Overwrite, skipped under Latest.", subLabels...)
	descSubAlive  = newDesc("shmq_topic_subscriber_alive", "1 if a running process holds the subscription.", subLabels...)
	writerStates  = []string{ring.WriterNone, ring.WriterAttached, ring.WriterDead, ring.WriterEnded}
)

func (ringKind) collect(seg *shm.Segment, _ shm.Options, e emitter) error {
	st, err := ring.ReadStats(seg)
	if err != nil {
		return err
	}
	w, r := &st.Writers, &st.Readers
	e.counter(descWriteMessages, float64(w.Messages))
	e.counter(descReadMessages, float64(r.Messages))
	e.counter(descWriteBytes, float64(w.Bytes))
	e.counter(descReadBytes, float64(r.Bytes))
	e.counter(descFull, float64(w.Full))
	e.counter(descEmpty, float64(r.Empty))
	e.counter(descRejected, float64(r.Rejected))
	e.counter(descDrops, float64(w.Drops+r.Drops))
	for _, s := range []struct {
		side string
		c    *ring.Counters
	}{{"write", w}, {"read", r}} {
		e.counter(descFutexWaits, float64(s.c.FutexWaits), s.side)
		e.counter(descFutexWakes, float64(s.c.FutexWakes), s.side)
		e.counter(descLateWakes, float64(s.c.LateWakes), s.side)
	}
	e.gauge(descEndpoints, float64(st.WritersOpen), "write")
	e.gauge(descEndpoints, float64(st.ReadersOpen), "read")
	e.gauge(descAsleep, float64(st.WritersAsleep), "write")
	e.gauge(descAsleep, float64(st.ReadersAsleep), "read")
	e.gauge(descDeadSleepers, float64(st.DeadSleepers))
	for _, s := range writerStates {
		v := 0.0
		if s == st.WriterState {
			v = 1
		}
		e.gauge(descWriterState, v, s)
	}
	if seg.Descriptor().Kind != ring.Topic {
		e.gauge(descUsed, float64(st.Used)/float64(max(st.Capacity, 1)))
		return nil
	}
	ts, err := ring.ReadTopicStats(seg)
	if err != nil {
		return err
	}
	var lag uint64 // the slowest live subscriber's, at most a ring
	for _, sub := range ts.Subscriptions {
		name := ""
		if sub.Durable {
			name = strings.ToValidUTF8(sub.Name, "\uFFFD") // written by peers: any bytes
		}
		idx := strconv.Itoa(sub.Index)
		alive := 0.0
		if sub.Held && sub.Alive {
			alive = 1
			lag = max(lag, min(sub.Lag, ts.Slots))
		}
		e.gauge(descSubLag, float64(sub.Lag), idx, name)
		e.counter(descSubMissed, float64(sub.Missed), idx, name)
		e.gauge(descSubAlive, alive, idx, name)
	}
	e.gauge(descUsed, float64(lag)/float64(max(ts.Slots, 1)))
	return nil
}
