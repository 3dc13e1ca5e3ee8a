package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shmq/shmq/codec"
	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/internal/proctest"
)

// Tick is the test event: a sequence number and padding to 64 bytes of payload.
type Tick struct {
	Seq  uint64
	Kind uint64
	Pad  [48]byte
}

func TestMain(m *testing.M) {
	proctest.Register("be-sub", roleBestEffortSub)
	proctest.Register("latest-sub", roleLatestSub)
	proctest.Register("worker", roleWorker)
	proctest.Register("publisher", rolePublisher)
	proctest.Register("bench-sub", roleBenchSub)
	proctest.Register("raw-sub", roleRawSub)
	proctest.Register("latency-worker", roleLatencyWorker)
	proctest.Register("flood", roleFlood)
	proctest.Register("raw-latency", roleRawLatency)
	proctest.Register("env-sub", roleEnvSub)
	proctest.Register("pool-worker", rolePoolWorker)
	proctest.Main(m)
}

// openTest opens the bus name in dir with the test's small geometry and registers Tick.
func openTest(t testing.TB, dir string, cfg Config) *Bus {
	t.Helper()
	b, err := openBus(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func openBus(dir string, cfg Config) (*Bus, error) {
	cfg.Dir = dir
	if cfg.LaneSlots == 0 {
		cfg.LaneSlots = 4096
	}
	if cfg.QueueSlots == 0 {
		cfg.QueueSlots = 4096
	}
	if cfg.MaxEvent == 0 {
		cfg.MaxEvent = 240
	}
	b, err := Open("tbus", cfg)
	if err != nil {
		return nil, err
	}
	fx, err := codec.NewFixed[Tick]()
	if err != nil {
		b.Close()
		return nil, err
	}
	if err := Register(b, "tick", codec.Codec[Tick](fx)); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// childArgs are the flags a child role reads: dir key=value ...
func childConfig(args []string) (dir string, kv map[string]string) {
	kv = map[string]string{}
	dir = args[0]
	for _, a := range args[1:] {
		for i := 0; i < len(a); i++ {
			if a[i] == '=' {
				kv[a[:i]] = a[i+1:]
				break
			}
		}
	}
	return dir, kv
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// roleBestEffortSub subscribes BestEffort (with the filters asked for), reports "ready",
// and collects sequence numbers until a Tick of Kind 99, then sends them as its result.
func roleBestEffortSub(c *proctest.Child) error {
	dir, kv := childConfig(c.Args)
	b, err := openBus(dir, Config{Source: "sub"})
	if err != nil {
		return err
	}
	defer b.Close()
	var mu sync.Mutex
	var got []uint64
	done := make(chan struct{})
	opts := []SubscribeOption{}
	if s := kv["source"]; s != "" {
		opts = append(opts, FromSources(s))
	}
	if kv["critical-only"] == "1" {
		opts = append(opts, Where(func(v *envelope.View) bool { return v.Priority == envelope.Critical }))
	}
	_, err = Subscribe(b, func(ctx context.Context, ev *envelope.View, v *Tick) error {
		if v.Kind == 99 {
			close(done)
			return nil
		}
		mu.Lock()
		got = append(got, v.Seq)
		mu.Unlock()
		return nil
	}, opts...)
	if err != nil {
		return err
	}
	c.Point("ready")
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		return errors.New("no end event")
	}
	mu.Lock()
	defer mu.Unlock()
	return c.Result(got)
}

// roleLatestSub is a slow LatestOnly subscriber: it reports the sequence numbers it saw.
func roleLatestSub(c *proctest.Child) error {
	dir, _ := childConfig(c.Args)
	b, err := openBus(dir, Config{Source: "latest"})
	if err != nil {
		return err
	}
	defer b.Close()
	var got []uint64
	done := make(chan struct{})
	_, err = Subscribe(b, func(ctx context.Context, ev *envelope.View, v *Tick) error {
		if v.Kind == 99 {
			close(done)
			return nil
		}
		got = append(got, v.Seq)
		time.Sleep(20 * time.Millisecond)
		return nil
	}, Delivery(LatestOnly{}))
	if err != nil {
		return err
	}
	c.Point("ready")
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		return errors.New("no end event")
	}
	return c.Result(got)
}

// roleWorker is a Reliable worker of subscription "work": it appends each sequence number
// it handled to the log file (file 0) after the handler's work, and reports "handled-N"
// points every 100 events. fail=N fails every event whose Seq % N == 0; failfirst=K fails
// each event's first K attempts; workers=N runs N goroutines; sleep=D sleeps D per event;
// exit-after=N stops after N events (Shutdown) and reports its order; hang=SEQ blocks SEQ's
// first attempt (every attempt with hangall=1) for an hour, ignoring ctx.
func roleWorker(c *proctest.Child) error {
	dir, kv := childConfig(c.Args)
	cfg := Config{Source: "worker", QueueSlots: uint64(atoi(kv["queue"])), MaxEvent: atoi(kv["maxevent"])}
	if kv["attempts"] != "" {
		cfg.Retry = Retry{MaxAttempts: atoi(kv["attempts"]), Base: time.Millisecond, Factor: 2, Cap: 10 * time.Millisecond}
	}
	b, err := openBus(dir, cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	log := c.File(0)
	var mu sync.Mutex
	var order []string
	handled := 0
	fail, failFirst, hang := atoi(kv["fail"]), atoi(kv["failfirst"]), atoi(kv["hang"])
	sleep, _ := time.ParseDuration(kv["sleep"])
	exitAfter := atoi(kv["exit-after"])
	stop := make(chan struct{})
	timeout, _ := time.ParseDuration(kv["timeout"])
	slowFirst, _ := time.ParseDuration(kv["slowfirst"])
	scale := map[int]int{} // handled count → workers
	for _, step := range strings.Split(kv["scale"], ",") {
		if at := strings.Index(step, "@"); at > 0 {
			scale[atoi(step[at+1:])] = atoi(step[:at])
		}
	}
	scaleTo := make(chan int, 4)
	sub, err := Subscribe(b, func(ctx context.Context, ev *envelope.View, v *Tick) error {
		if sleep > 0 {
			time.Sleep(sleep)
		}
		if slowFirst > 0 && ev.Attempt == 1 {
			time.Sleep(slowFirst)
		}
		if hang > 0 && v.Seq == uint64(hang) && (ev.Attempt == 1 || kv["hangall"] == "1") {
			time.Sleep(time.Hour) // ignores ctx
		}
		if fail > 0 && v.Seq%uint64(fail) == 0 {
			return fmt.Errorf("seq %d refused", v.Seq)
		}
		if failFirst > 0 && ev.Attempt <= uint32(failFirst) {
			return fmt.Errorf("attempt %d of seq %d refused", ev.Attempt, v.Seq)
		}
		mu.Lock()
		defer mu.Unlock()
		if log != nil {
			fmt.Fprintf(log, "%d %d\n", v.Seq, ev.Attempt)
		}
		order = append(order, fmt.Sprintf("%v:%d", ev.Priority, v.Seq))
		handled++
		if handled%100 == 0 {
			c.Point(fmt.Sprintf("handled-%d", handled))
		}
		if n, ok := scale[handled]; ok {
			scaleTo <- n
		}
		if exitAfter > 0 && handled == exitAfter {
			close(stop)
		}
		return nil
	}, Delivery(Reliable{Name: "work", Timeout: timeout}), Workers(max(1, atoi(kv["workers"]))))
	if err != nil {
		return err
	}
	c.Point("ready")
	for waiting := true; waiting; {
		select {
		case n := <-scaleTo:
			if err := sub.ScaleWorkers(n); err != nil {
				return err
			}
			fmt.Printf("scaled to %d\n", n)
		case <-stop:
			waiting = false
		case <-time.After(60 * time.Second):
			waiting = false
		}
	}
	sub.Close()
	mu.Lock()
	defer mu.Unlock()
	st := sub.Stats()
	return c.Result(workerResult{Order: order, Stats: st})
}

type workerResult struct {
	Order []string
	Stats Stats
}

// rolePublisher publishes n Ticks from source src, then one of Kind 99.
func rolePublisher(c *proctest.Child) error {
	dir, kv := childConfig(c.Args)
	b, err := openBus(dir, Config{Source: kv["source"]})
	if err != nil {
		return err
	}
	defer b.Close()
	n := atoi(kv["n"])
	for i := range n {
		if _, err := Publish(context.Background(), b, &Tick{Seq: uint64(i)}); err != nil {
			return err
		}
	}
	if kv["end"] == "1" {
		_, err = Publish(context.Background(), b, &Tick{Kind: 99})
	}
	return err
}

// readResult decodes a child's first result.
func readResult(t *testing.T, p *proctest.Proc, v any) {
	t.Helper()
	if err := p.Result(0, v, 60*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, p.Output())
	}
}

var _ = json.Marshal
var _ = os.Getpid
