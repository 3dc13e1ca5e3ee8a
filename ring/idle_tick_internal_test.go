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
	for _, period := range []time.Duration{idleSleep, mpmcReaderIdleSleep} {
		end := base.Add(untilIdleTick(base, period))
		for _, d := range []time.Duration{0, time.Millisecond, time.Second, period / 2} {
			now := base.Add(d)
			got := untilIdleTick(now, period)
			if got <= 0 || got > period {
				t.Fatalf("untilIdleTick(+%v, %v) = %v, want (0, %v]", d, period, got, period)
			}
			if tick := now.Add(got); !tick.Equal(end) && !tick.Equal(end.Add(period)) {
				t.Fatalf("a sleep begun at +%v ends at %v, not on the grid (%v, or one period later)", d, tick.Sub(base), end.Sub(base))
			}
		}
	}
	// Every tick of idleSleep is a tick of the MPMC readers' grid too.
	if long := base.Add(untilIdleTick(base, idleSleep)); untilIdleTick(long, mpmcReaderIdleSleep) != mpmcReaderIdleSleep {
		t.Fatalf("the grids of %v and %v are not aligned", idleSleep, mpmcReaderIdleSleep)
	}
}
