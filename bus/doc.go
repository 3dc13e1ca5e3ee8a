// Package bus is an event bus between the processes of one machine, over shared memory:
// typed events in envelopes (package envelope), published to filtered subscriptions in any
// process, with three delivery modes, three priorities, retries, a dead-letter queue,
// worker pools and health.
//
//	b, _ := bus.Open("plant", bus.Config{Source: "capture"})
//	bus.Register(b, "reading", codec.Codec[Reading](fixed)) // in every process
//	id, _ := bus.Publish(ctx, b, &Reading{...}, bus.WithPriority(envelope.Critical))
//	sub, _ := bus.Subscribe(b, func(ctx context.Context, ev *envelope.View, r *Reading) error {
//		return store(r) // nil acknowledges
//	}, bus.Delivery(bus.Reliable{Name: "storage", Timeout: time.Second}), bus.Workers(4))
//
// # Delivery
//
// BestEffort and LatestOnly subscribers read one publish-subscribe topic per priority lane
// (ring.Overwrite): a publisher never waits for them; one that falls a lane behind loses
// events and counts them (Stats.Dropped; LatestOnly: Stats.Conflated). Reliable
// subscriptions each own a durable MPMC queue per lane, shared by every worker of that name
// in any process; publishers learn of a new subscription through the registry segment
// (format.go) before their next Publish. A worker holds an event in place until its handler
// succeeds (then releases it: the acknowledgement) or it is dead-lettered; retries happen in
// place, after the backoff, with the attempt number written into the record first, so that
// the event of a worker that dies comes again, to another worker, as the next attempt.
// Delivery is at least once: a handler may see an event again after a crash.
//
// # Priorities
//
// Each worker takes events from the Critical, Normal and Low lanes by weight (Config.Weights,
// 8:4:1 by default), Critical first on every take: a Critical event overtakes queued
// Normal ones, and under a flood of Critical events Low still gets its share.
//
// # Caveats
//
// A handler's *envelope.View, and with a codec.Fixed codec its *T, point into shared memory
// (Reliable) or into the subscription's buffer (BestEffort, LatestOnly): valid only during
// the call. Copy what must outlive it (View.Header).
//
// A Reliable handler that ignores its ctx and never returns holds its worker and its event:
// Timeout is checked when the handler returns, and health reports it as slow.
//
// # Metrics
//
// Every process records into shared-memory metrics sets (package metrics): NAME.metrics
// for the bus (events published by priority; BestEffort and LatestOnly deliveries summed
// by mode) and NAME.m.SUB for each Reliable subscription (delivered, failed, timeouts,
// retried, dead-lettered, queue full, queue depth by lane, bytes and utilisation, live
// workers, and HdrHistograms of publish → handler latency and handler duration, in
// nanoseconds). ReadMetrics, Health, `shmctl health` and `shmctl stat NAME.m.SUB` read
// them from any process. Subscription.Stats and Bus.Stats are this process's share.
package bus
