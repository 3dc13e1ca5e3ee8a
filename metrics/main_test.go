package metrics_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/metrics"
	"github.com/shmq/shmq/shm"
)

func TestMain(m *testing.M) {
	proctest.Register("recorder", runRecorder)
	proctest.Register("racer", runRacer)
	proctest.Register("hammer", runHammer)
	proctest.Main(m)
}

// procSchema is the set the cross-process tests record into.
func procSchema() []metrics.Desc {
	return append(testSchema(),
		metrics.Desc{Name: "wrap_total", Type: metrics.TypeCounter, Help: "starts near 2^64"},
		metrics.Desc{Name: "go", Type: metrics.TypeGauge, Help: "1 once the recorders may start"},
	)
}

// recorderConfig tells a child what to record; it travels as JSON in the first argument.
type recorderConfig struct {
	Dir, Name  string
	Child      int
	Goroutines int
	PerG       int  // values each goroutine records; 0: until killed
	Wait       bool // wait for the go gauge
	Other      bool // racer: use a different schema
}

func (c recorderConfig) args() []string {
	b, _ := json.Marshal(c)
	return []string{string(b)}
}

func parseRecorder(c *proctest.Child) (recorderConfig, error) {
	var cfg recorderConfig
	err := json.Unmarshal([]byte(c.Args[0]), &cfg)
	return cfg, err
}

// values returns the latency values goroutine g of child records, the same in the child
// and in the parent that checks them: a long-tailed spread, every 1000th one negative (out
// of range).
func values(child, g, n int) []int64 {
	r := rand.New(rand.NewPCG(uint64(child), uint64(g)))
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(r.ExpFloat64()*20000) + r.Int64N(100)
		if r.IntN(50) == 0 {
			out[i] *= 10000 // the tail
		}
		if i%1000 == 999 {
			out[i] = -1
		}
	}
	return out
}

// sub is the label of the delivered_total series a child adds to.
func sub(child int) []metrics.Label {
	return []metrics.Label{{Key: "mode", Value: "x"}, {Key: "sub", Value: string(rune('a' + child%2))}}
}

// record has goroutines record their values into s: per value one event, 2 deliveries, a
// gauge moved by +3 and -1, one wrap_total and the latency.
func record(s *metrics.Set, cfg recorderConfig, progress func()) error {
	events, err := s.Counter("events_total")
	if err != nil {
		return err
	}
	delivered, err := s.Counter("delivered_total", sub(cfg.Child)...)
	if err != nil {
		return err
	}
	wrap, err := s.Counter("wrap_total")
	if err != nil {
		return err
	}
	depth, err := s.Gauge("depth")
	if err != nil {
		return err
	}
	lat, err := s.Histogram("latency_ns")
	if err != nil {
		return err
	}
	start, err := s.Gauge("go")
	if err != nil {
		return err
	}
	for cfg.Wait && start.Load() == 0 {
		time.Sleep(100 * time.Microsecond)
	}
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Goroutines)
	for g := range cfg.Goroutines {
		wg.Go(func() {
			n := cfg.PerG
			forever := n == 0
			if forever {
				n = 1 << 20
			}
			vs := values(cfg.Child, g, n)
			for i := 0; forever || i < n; i++ {
				v := vs[i%n]
				if err := lat.Record(v); (err != nil) != (v < 0) {
					errs <- fmt.Errorf("record %d: %v", v, err)
					return
				}
				events.Inc()
				delivered.Add(2)
				depth.Add(3)
				depth.Add(-1)
				wrap.Inc()
				if forever && i == 1000 && g == 0 {
					progress()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func runRecorder(c *proctest.Child) error {
	cfg, err := parseRecorder(c)
	if err != nil {
		return err
	}
	s, err := metrics.Open(cfg.Name, shm.Options{Dir: cfg.Dir})
	if err != nil {
		return err
	}
	defer s.Close()
	c.Point("ready")
	return record(s, cfg, func() { c.Point("recording") })
}

// runRacer waits for the go file, then opens or creates the set and records; it reports
// whether it created the set, or the error OpenOrCreate gave.
func runRacer(c *proctest.Child) error {
	cfg, err := parseRecorder(c)
	if err != nil {
		return err
	}
	c.Point("ready")
	for {
		if _, err := os.Stat(filepath.Join(cfg.Dir, "go")); err == nil {
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	schema := procSchema()
	if cfg.Other {
		schema[0].Help = "another schema"
	}
	s, created, err := metrics.OpenOrCreate(cfg.Name, schema, shm.Options{Dir: cfg.Dir})
	if err != nil {
		return c.Result(racerReport{Err: err.Error(), Mismatch: errorsIs(err, metrics.ErrMismatch)})
	}
	defer s.Close()
	if err := record(s, cfg, func() {}); err != nil {
		return err
	}
	return c.Result(racerReport{Created: created})
}

type racerReport struct {
	Created  bool
	Err      string
	Mismatch bool
}
