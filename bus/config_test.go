package bus

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaultsEnvAndValidation(t *testing.T) {
	none := func(string) string { return "" }
	c, err := Config{}.resolve(none)
	if err != nil {
		t.Fatal(err)
	}
	if c.LaneSlots != DefaultLaneSlots || c.QueueSlots != DefaultQueueSlots || c.Weights != defaultWeights ||
		c.QueueFull != FailWhenFull || c.Retry != defaultRetry || c.ShutdownTimeout != DefaultShutdownTimeout {
		t.Fatalf("defaults: %+v", c)
	}
	env := map[string]string{
		"SHMQ_BUS_QUEUE_SLOTS": "64", "SHMQ_BUS_WEIGHTS": "4,2,1", "SHMQ_BUS_QUEUE_FULL": "block",
		"SHMQ_BUS_BACKOFF": "5ms,3,2s,0.5", "SHMQ_BUS_MAX_ATTEMPTS": "7", "SHMQ_BUS_SOURCE": "envsrc",
	}
	c, err = Config{LaneSlots: 256}.resolve(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := Retry{MaxAttempts: 7, Base: 5 * time.Millisecond, Factor: 3, Cap: 2 * time.Second, Jitter: 0.5}
	if c.QueueSlots != 64 || c.Weights != [3]int{4, 2, 1} || c.QueueFull != BlockWhenFull || c.Retry != want ||
		c.Source != "envsrc" || c.LaneSlots != 256 {
		t.Fatalf("env: %+v", c)
	}
	// A field set in code wins over the environment.
	c, err = Config{QueueSlots: 8}.resolve(func(k string) string { return env[k] })
	if err != nil || c.QueueSlots != 8 {
		t.Fatalf("code over env: %v %d", err, c.QueueSlots)
	}
	for _, tc := range []struct {
		cfg  Config
		env  map[string]string
		want string
	}{
		{Config{LaneSlots: 1000}, nil, "LaneSlots"},
		{Config{MaxEvent: 10}, nil, "MaxEvent"},
		{Config{Weights: [3]int{1, 0, 1}}, nil, "Weights[normal]"},
		{Config{Retry: Retry{MaxAttempts: 3, Factor: 0.5}}, nil, "Factor"},
		{Config{}, map[string]string{"SHMQ_BUS_QUEUE_FULL": "maybe"}, "SHMQ_BUS_QUEUE_FULL"},
		{Config{}, map[string]string{"SHMQ_BUS_WEIGHTS": "1,2"}, "SHMQ_BUS_WEIGHTS"},
		{Config{}, map[string]string{"SHMQ_BUS_SHUTDOWN_TIMEOUT": "soon"}, "SHMQ_BUS_SHUTDOWN_TIMEOUT"},
		{Config{NearFull: 2}, nil, "NearFull"},
	} {
		_, err := tc.cfg.resolve(func(k string) string { return tc.env[k] })
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v %v: error %v, want ErrConfig naming %s", tc.cfg, tc.env, err, tc.want)
		}
	}
}

func TestRetryDelay(t *testing.T) {
	r := Retry{MaxAttempts: 5, Base: 10 * time.Millisecond, Factor: 2, Cap: 50 * time.Millisecond}
	for n, want := range map[int]time.Duration{1: 10 * time.Millisecond, 2: 20 * time.Millisecond, 3: 40 * time.Millisecond, 4: 50 * time.Millisecond, 60: 50 * time.Millisecond} {
		if d := r.delay(n); d != want {
			t.Errorf("delay(%d) = %v, want %v", n, d, want)
		}
	}
	r.Jitter = 0.5
	for range 100 {
		if d := r.delay(2); d < 10*time.Millisecond || d > 20*time.Millisecond {
			t.Fatalf("jittered delay %v outside [10ms, 20ms]", d)
		}
	}
}
