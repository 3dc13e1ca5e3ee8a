// Package watermill is a Watermill (github.com/ThreeDotsLabs/watermill) Pub/Sub over shmq:
// a message.Publisher and message.Subscriber that move messages between processes on one
// machine through shared memory, so that a Watermill program changes one constructor and
// keeps its router, handlers and middleware.
//
//	pub, err := watermill.NewPublisher(watermill.PublisherConfig{}, logger)
//	sub, err := watermill.NewSubscriber(watermill.SubscriberConfig{ConsumerGroup: "billing"}, logger)
//	router.AddHandler("billing", "orders", sub, "orders.done", pub, handle)
//
// It lives in a module of its own (github.com/shmq/shmq/watermill), so that the shmq core
// does not depend on Watermill; import it under another name than Watermill's own package.
// It passes Watermill's universal Pub/Sub test suite (pubsub/tests.TestPubSub) with
// ConsumerGroups, GuaranteedOrder, Persistent and NewSubscriberReceivesOldMessages.
//
// # Topics
//
// A Watermill topic is a shmq topic segment (package topic) named Prefix + the topic, with
// every byte a segment name cannot hold escaped ("a/b" is "wm.a_2fb"; TopicSegment) and
// names too long hashed. A message is written once, by its publisher, into the topic's
// ring, and read in place by every subscribing process. The first process to use a topic
// creates it with its Config.Topic; the others join it as it is. A topic holds the last
// TopicConfig.Slots messages: the history that new subscribers and returning consumer
// groups receive. Topics outlive their processes until RemoveTopic (or shmctl rm).
//
// # Messages
//
// A message travels as the event envelope of package envelope: the topic name as its type,
// the UUID in its id (or, when the UUID is not a canonical UUID string, in its first
// metadata entry), the metadata, Watermill's correlation id in its correlation field, and
// the payload. Anything up to TopicConfig.MaxMessage bytes in all (4080 by default);
// larger ones are refused with ErrTooLarge. A message's context is not carried.
//
// # Delivery
//
// Without a consumer group every Subscribe reads the whole topic, from the oldest message
// the topic holds (or the next one, with FromLatest), in publish order. A message is handed
// out after the previous one was acked; Nack hands it out again (after NackDelay); with
// InFlight n, n messages are out at once and may be handled out of order. Delivery is at
// least once: a message is handed out again after a Nack, and a consumer group's message
// after its member or pump died or closed holding it.
//
// Under ring.Block (the default) a publisher waits while the slowest live subscription is
// a whole topic behind, so nothing is lost while subscribers live; a subscriber that does
// not ack holds publishers back. Under ring.Overwrite publishers never wait, and a lapped
// subscription loses the oldest messages (Stats.Lost, and an error logged).
//
// A topic has no end of stream: when every publisher is gone, subscriptions wait, asleep
// in the kernel (no polling), for the next one.
//
// # Consumer groups
//
// The members of a group, in any number of processes, share the topic: each message is
// handled by one of them. A group is a durable subscription of the topic named after it,
// which keeps the group's place while no member runs, and a queue segment (an MPMC ring,
// GroupSegment). A durable subscription has one reader at a time, so the members do not
// take turns on it; one of them, whichever took the subscription, pumps it into the queue,
// and every member reads the queue. When the pump goes (closes, or its process dies), the
// queue's stream ends and another member takes the subscription over. A member keeps the
// message it handed out borrowed in the queue until it is acked, so that if it dies the
// message goes to another member. Each member delivers in order; several members handle
// messages in parallel. DeleteGroup removes a group.
//
// # Limits
//
// 64 subscriptions per topic (each Subscribe without a group takes one, each group one,
// ring.ErrSubscriptionsFull beyond); 64 processes per segment (shm.ErrPeerTableFull); a
// group away longer than the topic's history loses what was overwritten (Stats.Lost).
package watermill
