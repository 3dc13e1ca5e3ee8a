package fence

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// dekker runs the store-buffering litmus test n times: the light side stores its flag with
// StoreRelease32 and loads the other's; the heavy side stores its flag, runs fence, and
// loads the light side's. Both loading 0 is what a fence must forbid. It returns how often
// that happened.
func dekker(n int, fence func(), heavyStore func(*uint32, uint32)) int {
	var light, heavy, round, done uint32
	var r1, r2 uint32
	forbidden := 0
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		runtime.LockOSThread()
		for i := uint32(1); i <= uint32(n); i++ {
			for atomic.LoadUint32(&round) != i {
			}
			StoreRelease32(&light, i)
			atomic.StoreUint32(&r1, atomic.LoadUint32(&heavy))
			atomic.StoreUint32(&done, i)
		}
	}()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for i := uint32(1); i <= uint32(n); i++ {
		atomic.StoreUint32(&round, i)
		heavyStore(&heavy, i)
		fence()
		atomic.StoreUint32(&r2, atomic.LoadUint32(&light))
		for atomic.LoadUint32(&done) != i {
		}
		if atomic.LoadUint32(&r1) != i && atomic.LoadUint32(&r2) != i {
			forbidden++
		}
	}
	wg.Wait()
	return forbidden
}

// TestHeavyOrdersLightStores: with Heavy on the heavy side, the light side's plain store is
// never missed. (Without it, x86's store buffer lets both sides miss each other; see
// TestLitmusSeesReordering checks the litmus test itself: with plain release stores on both
// sides and no fence, x86 lets both loads miss, and the test must be able to see it (else
// TestHeavyOrdersLightStores would pass whatever Heavy did).
func TestLitmusSeesReordering(t *testing.T) {
	if !asymmetric || runtime.GOARCH != "amd64" || runtime.NumCPU() < 2 || testing.Short() {
		t.Skip("only meaningful with plain-store release on amd64 and two CPUs")
	}
	n, bad := 0, 0
	for bad == 0 && n < 2_000_000 {
		bad += dekker(200_000, func() {}, StoreRelease32)
		n += 200_000
	}
	t.Logf("without a fence: %d of %d rounds reordered", bad, n)
	if bad == 0 {
		t.Skip("no reordering seen on this machine: the litmus cannot tell a fence from none here")
	}
}

func TestStoreRelease32(t *testing.T) {
	var w uint32
	StoreRelease32(&w, 7)
	if atomic.LoadUint32(&w) != 7 {
		t.Fatal("store lost")
	}
	var d uint64
	StoreRelease64(&d, 1<<40+3)
	if atomic.LoadUint64(&d) != 1<<40+3 {
		t.Fatal("64-bit store lost")
	}
	t.Logf("asymmetric fence available: %v", Asymmetric())
}

// The two stores the light side chooses between: go test -run '^$' -bench Store ./internal/fence
var sink uint32

func BenchmarkStoreSeqCst(b *testing.B) {
	for i := 0; b.Loop(); i++ {
		atomic.StoreUint32(&sink, uint32(i))
	}
}

func BenchmarkStoreRelease(b *testing.B) {
	for i := 0; b.Loop(); i++ {
		StoreRelease32(&sink, uint32(i))
	}
}

func BenchmarkHeavy(b *testing.B) {
	for b.Loop() {
		Heavy()
	}
}
