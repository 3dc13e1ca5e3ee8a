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
// events and counts them (Stats.Dropped, of any type: the lane no longer says which; LatestOnly also counts the events of its types replaced by newer ones, Stats.Conflated). Reliable
// subscriptions each own a durable MPMC queue per lane, shared by every worker of that name
// in any process; publishers learn of a new subscription through the registry segment
// (format.go) before their next Publish. A worker holds an event in place until its handler
// succeeds (then releases it: the acknowledgement) or it is dead-lettered; retries happen in
// place, after the backoff, with the attempt number written into the record first, so that
// the event of a worker that dies comes again, to another worker, as the next attempt.
// Delivery is at least once: a handler may see an event again after a crash.
//
// A Reliable queue is bounded in events (Config.QueueSlots per lane) and, with
// Config.QueueBytes, in envelope bytes, counted by every process in the subscription's
// metrics set (bus_queue_bytes); when it is full, Publish returns ErrQueueFull or waits
// (Config.QueueFull). Config.Rate limits a process's publishing.
//
// SubscribeEnvelopes and Bus.PublishEnvelope are the untyped forms, for infrastructure
// (the NATS bridge, dead-letter replays): envelopes of any type, handed over and
// published unchanged (id, source, time, attempt).
//
// # Worker processes
//
// StartWorkers runs N processes that serve one Reliable subscription (package supervise):
// a crashed one is restarted after PoolConfig.RestartDelay and its event delivered again
// to another worker; WorkerPool.ScaleWorkers changes N at run time, the stopped ones
// finishing the event in hand (Serve). A subscription made with Fallback, in the
// publishing process, handles the events while no worker process is alive.
//
// # Dead letters
//
// An event that failed its last attempt goes to the bus's dead-letter queue (package dlq,
// segment NAME.dlq) with its last error and attempt count, tagged with the queue lane it
// came from. DeadLetters lists it; ReplayDeadLetters (and `shmctl dlq NAME.dlq replay`)
// puts each event back into the queue of the subscription that failed it, at attempt 1;
// Bus.ReplayDeadLetters can also republish to the whole bus. While the dead-letter queue
// is full, a worker keeps its failed event (nothing is dropped) and health is unhealthy.
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
// A Reliable handler that ignores its ctx cannot be stopped: at twice its Timeout its
// worker is abandoned (a watchdog gives the event to a new worker, as the next attempt),
// and its goroutine stays blocked until the handler returns, still pointing into the
// queue's memory, which may by then hold another event. Without a Timeout such a handler
// holds its worker and its event for good (health: slow_handlers).
//
// # Metrics
//
// Every process records into shared-memory metrics sets (package metrics): NAME.metrics
// for the bus (events published by priority; BestEffort and LatestOnly deliveries summed
// by mode) and NAME.m.SUB for each Reliable subscription (delivered, failed, timeouts,
// retried, dead-lettered, queue full, queue depth by lane, bytes and utilisation, live
// workers, and HdrHistograms of publish → handler latency and handler duration, in
// nanoseconds). ReadMetrics, Health, `shmctl health` and `shmctl stat NAME.m.SUB` read
// them from any process; metrics.go lists the series. Subscription.Stats and Bus.Stats
// are this process's share.
package bus
