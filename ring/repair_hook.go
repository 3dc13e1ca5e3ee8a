package ring

// repairPoint names a moment of the MPMC repair slow path at which a test may hold a
// repairer (see repairHook).
type repairPoint int

const (
	// repairDeadScanned: repair listed the dead claim cells and has not acted on them yet.
	repairDeadScanned repairPoint = iota + 1
	// repairSkipDecided: repair found a slot no live writer can own and has not locked it yet.
	repairSkipDecided
	// repairOnDeath: a blocked reader repairs because a writer whose claim it waits behind
	// died (or was found dead), not because its periodic liveness check came round.
	repairOnDeath
	// repairStallWatched: a blocked reader began to watch the processes of the writers
	// whose claims it waits behind.
	repairStallWatched
)

// repairHook, when not nil, is called at each repairPoint. Only tests set it (in a child
// process, before any endpoint attaches), to hold a repairer at the moments that the races
// between repairers, dead owners and new endpoints turn on while other processes act; the
// cost otherwise is one load of a package variable on the slow path.
var repairHook func(p repairPoint)

func atRepairPoint(p repairPoint) {
	if h := repairHook; h != nil {
		h(p)
	}
}
