// Package bridge joins shmq topics on several machines through NATS: it forwards chosen
// local topics to NATS subjects and chosen subjects back into local topics, so publishers
// and subscribers keep their code when an application outgrows one host.
//
//	err := bridge.Run(ctx, bridge.Config{
//		Name: "host-a",
//		URL:  "nats://nats.example:4222",
//		Out:  []bridge.Route{{Topic: "orders", Reliable: true}},
//		In:   []bridge.Route{{Topic: "orders", Reliable: true}},
//	})
//
// # Delivery
//
// A best-effort route uses core NATS: the bridge reads its local topic with an anonymous
// subscription and publishes each message; while NATS is unreachable or slow, messages are
// dropped and counted, and local publishers never wait for the bridge (put best-effort
// routes on Overwrite topics, so a stalled bridge cannot hold a Block topic's publishers).
//
// A reliable route uses JetStream. Outbound, the bridge reads its topic with a durable
// subscription (named "bridge.NAME") and releases a record only after JetStream
// acknowledged it, with the envelope's id as Nats-Msg-Id: a bridge killed between the two
// publishes the record again when it restarts, and JetStream drops the copy inside its
// de-duplication window. Inbound, the bridge pulls from a durable consumer and acknowledges
// a message only after it is in the local topic; on start it reads the ids of what earlier
// runs delivered from the topic's history, so a message delivered and not acknowledged
// before a kill is not written twice. While JetStream is unreachable the outbound
// subscription stops advancing: on a Block topic, local publishers wait once the ring is
// full and their context's deadline gives them context.DeadlineExceeded.
//
// # Envelope and loops
//
// Each local message is an envelope (package envelope). Its fields travel as NATS headers
// (headers.go is the one home of that mapping) and its payload as the message data, so a
// NATS-native subscriber sees a plain message and a subscriber on another host sees the
// envelope a local one sees. A message that came in from NATS carries the metadata entry
// OriginKey; the bridge never sends such a message out again, and drops inbound messages it
// sent itself. Local records that are not envelopes travel as raw data (header
// Shmq-Record-Type); NATS messages without envelope headers get a new envelope on the way in.
//
// # Counters
//
// Forwarded, received, dropped, retried and duplicate counts are kept per route (Stats).
package bridge
