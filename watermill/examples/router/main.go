// Command router runs Watermill's router over shmq between two processes: this process
// publishes orders, and a worker process it starts itself handles them with the retry and
// poison-queue middleware. It prints what happened and ends by itself:
//
//	go run ./examples/router
//
// The worker's handler fails twice for a "flaky" order (the retry middleware runs it
// again) and always for a "broken" one (after its retries the poison queue middleware
// moves it to orders.poison). Every order it handles becomes an event on orders.done.
// The segments live in a temporary directory, removed at the end.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	shmwm "github.com/shmq/shmq/watermill"
)

const (
	roleEnv = "SHMQ_ROUTER_EXAMPLE_ROLE"
	dirEnv  = "SHMQ_ROUTER_EXAMPLE_DIR"
)

func main() {
	var err error
	if os.Getenv(roleEnv) == "worker" {
		err = worker(os.Getenv(dirEnv), os.Stdout)
	} else {
		err = run(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "router:", err)
		os.Exit(1)
	}
}

// orders are what the example publishes: the payload says how the handler treats it.
var orders = []string{"ok", "flaky", "ok", "broken", "ok"}

// run is the publishing side: it starts the worker, publishes the orders, waits for an
// outcome of each, stops the worker and cleans up.
func run(out io.Writer) error {
	dir, err := os.MkdirTemp(shmDir(), "router-example-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := shmwm.Config{Dir: dir}

	// Subscribe to the outcomes first: subscribers get every message from the oldest the
	// topic holds, so nothing is missed whoever starts first.
	sub, err := shmwm.NewSubscriber(shmwm.SubscriberConfig{Config: cfg}, nil)
	if err != nil {
		return err
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done, err := sub.Subscribe(ctx, "orders.done")
	if err != nil {
		return err
	}
	poisoned, err := sub.Subscribe(ctx, "orders.poison")
	if err != nil {
		return err
	}

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	w := exec.Command(exe)
	w.Env = append(os.Environ(), roleEnv+"=worker", dirEnv+"="+dir)
	w.Stdout = &prefixWriter{w: out, prefix: "  worker | "}
	w.Stderr = w.Stdout
	if err := w.Start(); err != nil {
		return err
	}
	defer func() { _ = w.Process.Kill(); _ = w.Wait() }() // if we leave early
	fmt.Fprintf(out, "started worker process %d; segments in %s\n", w.Process.Pid, dir)

	pub, err := shmwm.NewPublisher(shmwm.PublisherConfig{Config: cfg, Source: "router-example"}, nil)
	if err != nil {
		return err
	}
	defer pub.Close()
	for i, kind := range orders {
		msg := message.NewMessage(watermill.NewUUID(), []byte(kind))
		msg.Metadata.Set("order", fmt.Sprint(i+1))
		middleware.SetCorrelationID(fmt.Sprintf("checkout-%d", i+1), msg)
		if err := pub.Publish("orders", msg); err != nil {
			return err
		}
		fmt.Fprintf(out, "published order %d (%s)\n", i+1, kind)
	}

	for seen := 0; seen < len(orders); seen++ {
		select {
		case m := <-done:
			fmt.Fprintf(out, "done:     order %s after %s attempt(s), correlation %s\n",
				m.Metadata.Get("order"), m.Metadata.Get("attempts"), middleware.MessageCorrelationID(m))
			m.Ack()
		case m := <-poisoned:
			fmt.Fprintf(out, "poisoned: order %s (%s), reason: %s\n",
				m.Metadata.Get("order"), m.Payload, m.Metadata.Get(middleware.ReasonForPoisonedKey))
			m.Ack()
		case <-ctx.Done():
			return fmt.Errorf("%d of %d orders reported: %w", seen, len(orders), ctx.Err())
		}
	}

	if err := w.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if err := w.Wait(); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	fmt.Fprintln(out, "worker stopped; every order has an outcome")
	return nil
}

// worker is the handling side: a router with retry and poison-queue middleware, in the
// consumer group "billing", until SIGTERM.
func worker(dir string, out io.Writer) error {
	if dir == "" {
		return errors.New("no segment directory")
	}
	cfg := shmwm.Config{Dir: dir}
	logger := watermill.NopLogger{}
	sub, err := shmwm.NewSubscriber(shmwm.SubscriberConfig{Config: cfg, ConsumerGroup: "billing"}, logger)
	if err != nil {
		return err
	}
	pub, err := shmwm.NewPublisher(shmwm.PublisherConfig{Config: cfg, Source: "billing"}, logger)
	if err != nil {
		return err
	}
	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		return err
	}
	poison, err := middleware.PoisonQueue(pub, "orders.poison")
	if err != nil {
		return err
	}
	router.AddMiddleware(
		middleware.CorrelationID,
		poison, // outside the retries: gets what they gave up on
		middleware.Retry{MaxRetries: 2, InitialInterval: 10 * time.Millisecond, Logger: logger}.Middleware,
	)

	attempts := map[string]int{} // the handler runs one message at a time
	router.AddHandler("billing", "orders", sub, "orders.done", pub, func(msg *message.Message) ([]*message.Message, error) {
		attempts[msg.UUID]++
		n := attempts[msg.UUID]
		order := msg.Metadata.Get("order")
		switch kind := string(msg.Payload); {
		case kind == "flaky" && n < 3:
			fmt.Fprintf(out, "order %s attempt %d: payment service unavailable\n", order, n)
			return nil, errors.New("payment service unavailable")
		case kind == "broken":
			fmt.Fprintf(out, "order %s attempt %d: invalid card\n", order, n)
			return nil, errors.New("invalid card")
		}
		fmt.Fprintf(out, "order %s attempt %d: charged\n", order, n)
		ev := message.NewMessage(watermill.NewUUID(), []byte("charged"))
		ev.Metadata.Set("order", order)
		ev.Metadata.Set("attempts", fmt.Sprint(n))
		return []*message.Message{ev}, nil
	})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := router.Run(ctx); err != nil { // returns once closed, after the running handlers
		return err
	}
	return errors.Join(pub.Close(), sub.Close())
}

func shmDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return ""
}

// prefixWriter prefixes every line written to it.
type prefixWriter struct {
	w      io.Writer
	prefix string
	rest   string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	s := p.rest + string(b)
	for {
		line, more, ok := strings.Cut(s, "\n")
		if !ok {
			p.rest = s
			return len(b), nil
		}
		if _, err := fmt.Fprintf(p.w, "%s%s\n", p.prefix, line); err != nil {
			return 0, err
		}
		s = more
	}
}
