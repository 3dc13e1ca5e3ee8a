package bus

import "errors"

// ErrQueueFull is returned by Publish when a Reliable subscription's queue has no room for
// the event and the bus was configured not to wait (Config.QueueFull == FailWhenFull). The
// event reached every other subscription; the error names the one that was full.
var ErrQueueFull = errors.New("bus: subscription queue is full")

// ErrDeliveryTimeout is the error a Reliable delivery is failed with when its handler did
// not return within the subscription's Timeout. The event is delivered again (attempt + 1)
// after the backoff, like an event whose handler returned an error.
var ErrDeliveryTimeout = errors.New("bus: handler did not acknowledge in time")

// ErrSubscriberUnavailable is returned by Publish when the bus was configured to require a
// live worker (Config.RequireWorkers) and a matching Reliable subscription has none, and by
// Subscription methods used after Unsubscribe.
var ErrSubscriberUnavailable = errors.New("bus: subscriber unavailable")

// ErrShuttingDown is returned by Publish and Subscribe once Shutdown or Close has begun.
var ErrShuttingDown = errors.New("bus: shutting down")

// ErrNotRegistered is returned by Publish and Subscribe for a Go type that no Register call
// named on this bus.
var ErrNotRegistered = errors.New("bus: type not registered")

// ErrConfig is returned by Open for a Config (or SHMQ_* environment variable) that is not
// valid; the message says which field and why.
var ErrConfig = errors.New("bus: invalid configuration")

// ErrCorrupt is returned when the bus registry segment holds values no correct process
// wrote (a bad version, a length out of range).
var ErrCorrupt = errors.New("bus: registry is corrupt")

// ErrRegistryFull is returned by Subscribe when the registry has no free entry for another
// Reliable subscription (MaxReliable of them per bus).
var ErrRegistryFull = errors.New("bus: registry is full")
