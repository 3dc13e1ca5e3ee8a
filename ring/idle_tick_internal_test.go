package ring

import (
	"testing"
	"time"
)

// TestUntilIdleTick: idle sleeps end on one grid of idleSleep per process: whenever a
// sleep begins, it lasts at most idleSleep and ends on the same instant as every other
// sleep begun in the same period.
func TestUntilIdleTick(t *testing.T) {
	base := time.Now()
	end := base.Add(untilIdleTick(base))
	for _, d := range []time.Duration{0, time.Millisecond, time.Second, idleSleep / 2} {
		now := base.Add(d)
		got := untilIdleTick(now)
		if got <= 0 || got > idleSleep {
			t.Fatalf("untilIdleTick at +%v = %v, want (0, %v]", d, got, idleSleep)
		}
		if tick := now.Add(got); !tick.Equal(end) && !tick.Equal(end.Add(idleSleep)) {
			t.Fatalf("a sleep begun at +%v ends at %v, not on the grid (%v, or one period later)", d, tick.Sub(base), end.Sub(base))
		}
	}
}
