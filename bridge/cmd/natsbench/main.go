// Command natsbench shows what leaving the machine costs: 64-byte messages from one process
// to another through a shmq topic, through NATS (an embedded server on loopback, core
// NATS), and through a topic forwarded to NATS by the bridge, in the same run.
//
//	cd bridge && go run ./cmd/natsbench [--messages 200000] [--latency 5000] [--runs 3]
//
// Throughput is messages per second at the subscriber, publisher going flat out; latency is
// one-way, publisher pacing one message every --interval, timed with the machine's clock,
// which both processes share. Each run measures every transport in turn (interleaved), and
// the table shows each run's figures and their ratio to the topic's.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/shmq/shmq/bridge"
	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
	"github.com/shmq/shmq/topic"
)

const (
	envRole  = "NATSBENCH_ROLE"
	subject  = "shmq.natsbench"
	topicNm  = "natsbench"
	msgBytes = 64
)

// job is what a child process is told to do, as JSON in its environment.
type job struct {
	Transport string        // topic, nats, bridged
	Dir       string        // the topic's directory
	URL       string        // the NATS server
	Messages  int           // how many
	Interval  time.Duration // 0: flat out; else one message per interval (latency)
}

// result is what the subscriber child reports.
type result struct {
	Received int
	Elapsed  time.Duration // first to last message
	P50, P99 time.Duration // one-way latency (paced runs)
}

func main() {
	if role := os.Getenv(envRole); role != "" {
		var j job
		err := json.Unmarshal([]byte(os.Getenv(envRole+"_JOB")), &j)
		if err == nil {
			if role == "pub" {
				err = publish(j)
			} else {
				err = subscribe(j, os.Stdout)
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "natsbench", role+":", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "natsbench:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("natsbench", flag.ContinueOnError)
	messages := fs.Int("messages", 200_000, "messages per throughput measurement")
	latency := fs.Int("latency", 5_000, "messages per latency measurement")
	interval := fs.Duration("interval", 200*time.Microsecond, "pace of the latency measurement")
	runs := fs.Int("runs", 3, "interleaved runs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "natsbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, StoreDir: dir})
	if err != nil {
		return err
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		return errors.New("NATS server did not start")
	}
	defer srv.Shutdown()
	tp, err := topic.Open(topicNm, topic.Config{Policy: ring.Block, Slots: 4096, MaxMessage: 240}, shm.Options{Dir: dir})
	if err != nil {
		return err
	}
	defer tp.Close()
	br, err := bridge.New(bridge.Config{Name: "natsbench", URL: srv.ClientURL(), Dir: dir, Out: []bridge.Route{{Topic: topicNm, Subject: subject}}})
	if err != nil {
		return err
	}
	defer br.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- br.Run(ctx) }()
	defer func() { cancel(); <-done }()

	transports := []string{"topic", "nats", "bridged"}
	fmt.Fprintf(out, "64-byte messages, publisher and subscriber in separate processes; %d runs\n", *runs)
	fmt.Fprintf(out, "%-4s %-8s %14s %8s %10s %10s %8s\n", "run", "via", "msgs/s", "vs topic", "p50", "p99", "vs topic")
	for r := 1; r <= *runs; r++ {
		var base result
		var baseRate float64
		for _, t := range transports {
			thr, err := measure(job{Transport: t, Dir: dir, URL: srv.ClientURL(), Messages: *messages})
			if err != nil {
				return fmt.Errorf("%s throughput: %w", t, err)
			}
			lat, err := measure(job{Transport: t, Dir: dir, URL: srv.ClientURL(), Messages: *latency, Interval: *interval})
			if err != nil {
				return fmt.Errorf("%s latency: %w", t, err)
			}
			rate := float64(thr.Received) / thr.Elapsed.Seconds()
			if t == "topic" {
				base, baseRate = lat, rate
			}
			lost := ""
			if thr.Received < *messages {
				lost = fmt.Sprintf(" (%d lost)", *messages-thr.Received)
			}
			fmt.Fprintf(out, "%-4d %-8s %14.0f %7.2fx %10v %10v %7.1fx%s\n", r, t, rate, rate/baseRate,
				lat.P50.Round(100*time.Nanosecond), lat.P99.Round(100*time.Nanosecond), float64(lat.P50)/float64(base.P50), lost)
		}
	}
	return nil
}

// measure runs a subscriber and a publisher process for j and returns the subscriber's result.
func measure(j job) (result, error) {
	b, _ := json.Marshal(j)
	self, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	child := func(role string) *exec.Cmd {
		c := exec.Command(self)
		c.Env = append(os.Environ(), envRole+"="+role, envRole+"_JOB="+string(b))
		c.Stderr = os.Stderr
		return c
	}
	sub := child("sub")
	stdout, err := sub.StdoutPipe()
	if err != nil {
		return result{}, err
	}
	if err := sub.Start(); err != nil {
		return result{}, err
	}
	defer func() { _ = sub.Process.Kill(); _ = sub.Wait() }()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "ready" {
		return result{}, errors.New("subscriber did not start")
	}
	pub := child("pub")
	if err := pub.Run(); err != nil {
		return result{}, fmt.Errorf("publisher: %w", err)
	}
	if !lines.Scan() {
		return result{}, errors.New("subscriber gave no result")
	}
	var r result
	return r, json.Unmarshal(lines.Bytes(), &r)
}

// publish sends j.Messages messages, each starting with the send time in Unix nanoseconds.
func publish(j job) error {
	var payload [msgBytes]byte
	pace := func(i int, start time.Time) time.Time {
		if j.Interval > 0 {
			time.Sleep(time.Until(start.Add(time.Duration(i) * j.Interval)))
		}
		now := time.Now()
		binary.LittleEndian.PutUint64(payload[:], uint64(now.UnixNano()))
		return now
	}
	start := time.Now()
	switch j.Transport {
	case "nats":
		nc, err := nats.Connect(j.URL)
		if err != nil {
			return err
		}
		defer nc.Close()
		for i := range j.Messages {
			pace(i, start)
			if err := nc.Publish(subject, payload[:]); err != nil {
				return err
			}
		}
		return nc.Flush()
	case "topic", "bridged":
		tp, err := topic.Join(context.Background(), topicNm, shm.Options{Dir: j.Dir})
		if err != nil {
			return err
		}
		defer tp.Close()
		pub, err := tp.Publisher(ring.Options{})
		if err != nil {
			return err
		}
		defer pub.Close()
		h, err := envelope.NewHeader("natsbench.Tick", "natsbench")
		if err != nil {
			return err
		}
		n, err := h.Size(msgBytes)
		if err != nil {
			return err
		}
		for i := range j.Messages {
			now := pace(i, start)
			h.Time = now
			dst, err := pub.Reserve(context.Background(), 1, n)
			if err != nil {
				return err
			}
			p, err := h.Put(dst, msgBytes)
			if err != nil {
				return err
			}
			copy(p, payload[:])
			if err := pub.Commit(); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown transport %q", j.Transport)
}

// subscribe receives j.Messages messages (or as many as come before a 10 s silence), prints
// "ready" once subscribed and then its result as JSON.
func subscribe(j job, out io.Writer) error {
	var r result
	var first time.Time
	var lat []time.Duration
	got := func(data []byte) {
		now := time.Now()
		if r.Received == 0 {
			first = now
		}
		r.Received++
		r.Elapsed = now.Sub(first)
		if j.Interval > 0 && len(data) >= 8 {
			lat = append(lat, time.Duration(now.UnixNano()-int64(binary.LittleEndian.Uint64(data))))
		}
	}
	switch j.Transport {
	case "nats", "bridged":
		nc, err := nats.Connect(j.URL)
		if err != nil {
			return err
		}
		defer nc.Close()
		var mu sync.Mutex
		last := time.Now()
		done := make(chan struct{})
		s, err := nc.Subscribe(subject, func(m *nats.Msg) { // one goroutine at a time
			mu.Lock()
			defer mu.Unlock()
			got(m.Data)
			last = time.Now()
			if r.Received == j.Messages {
				close(done)
			}
		})
		if err != nil {
			return err
		}
		if err := s.SetPendingLimits(-1, -1); err != nil {
			return err
		}
		if err := nc.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(out, "ready")
		for wait := true; wait; {
			select {
			case <-done:
				wait = false
			case <-time.After(100 * time.Millisecond):
				mu.Lock()
				wait = time.Since(last) < 10*time.Second
				mu.Unlock()
			}
		}
		if err := s.Unsubscribe(); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
	case "topic":
		tp, err := topic.Join(context.Background(), topicNm, shm.Options{Dir: j.Dir})
		if err != nil {
			return err
		}
		defer tp.Close()
		sub, err := tp.Subscribe(context.Background(), ring.SubscribeOptions{Start: ring.FromLatest})
		if err != nil {
			return err
		}
		defer sub.Close()
		fmt.Fprintln(out, "ready")
		for r.Received < j.Messages {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := sub.Drain(ctx, func(rec ring.Record) error {
				v, err := envelope.Parse(rec.Data)
				if err != nil {
					return err
				}
				got(v.Payload())
				return nil
			}, 256)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				break
			}
			if err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unknown transport %q", j.Transport)
	}
	return report(out, r, lat)
}

func report(out io.Writer, r result, lat []time.Duration) error {
	if len(lat) > 0 {
		slices.Sort(lat)
		r.P50, r.P99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	return json.NewEncoder(out).Encode(r)
}
