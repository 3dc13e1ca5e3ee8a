package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/shmq/shmq/codec"
	"github.com/shmq/shmq/envelope"
	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
)

// roleEnvSub subscribes with SubscribeEnvelopes (mode=reliable|best-effort, types=a,b),
// reports "ready", and sends "id source type priority attempt" of the first n events.
func roleEnvSub(c *proctest.Child) error {
	dir, kv := childConfig(c.Args)
	b, err := openBus(dir, Config{Source: "env-sub"})
	if err != nil {
		return err
	}
	defer b.Close()
	n := atoi(kv["n"])
	got := make(chan string, n)
	opts := []SubscribeOption{}
	if kv["mode"] == "reliable" {
		opts = append(opts, Delivery(Reliable{Name: "raw"}))
	}
	if t := kv["types"]; t != "" {
		opts = append(opts, OfTypes(strings.Split(t, ",")...))
	}
	if _, err := SubscribeEnvelopes(b, func(ctx context.Context, ev *envelope.View) error {
		got <- fmt.Sprintf("%v %s %s %v %d", ev.ID, ev.Source(), ev.Type(), ev.Priority, ev.Attempt)
		return nil
	}, opts...); err != nil {
		return err
	}
	c.Point("ready")
	var out []string
	for range n {
		select {
		case s := <-got:
			out = append(out, s)
		case <-time.After(60 * time.Second):
			return fmt.Errorf("got %d events of %d: %v", len(out), n, out)
		}
	}
	return c.Result(out)
}

// encodeTick makes the envelope of a Tick as another bus (or a bridge) would.
func encodeTick(t *testing.T, h envelope.Header, v Tick) []byte {
	t.Helper()
	fx, err := codec.NewFixed[Tick]()
	if err != nil {
		t.Fatal(err)
	}
	n, _ := fx.Size(&v)
	size, err := h.Size(n)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, size)
	payload, err := h.Put(buf, n)
	if err != nil {
		t.Fatal(err)
	}
	if err := fx.Encode(payload, &v); err != nil {
		t.Fatal(err)
	}
	return buf
}

// PublishEnvelope publishes an envelope made elsewhere unchanged (id, source, priority),
// to best-effort and Reliable subscribers in other processes, which SubscribeEnvelopes
// hands the envelopes of every type, or of the types asked for.
func TestPublishEnvelopeToEnvelopeSubscribers(t *testing.T) {
	dir := t.TempDir()
	b := openTest(t, dir, Config{Source: "pub"})
	rel := startSub(t, "env-sub", dir, "mode=reliable", "types=tick", "n=2")
	all := startSub(t, "env-sub", dir, "n=3")

	id1, err := Publish(context.Background(), b, &Tick{Seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	id2 := uuid.Must(uuid.NewV7())
	env := encodeTick(t, envelope.Header{ID: id2, Type: "tick", Source: "remote", Time: time.Now(), Priority: envelope.Critical, Attempt: 1}, Tick{Seq: 2})
	if got, err := b.PublishEnvelope(context.Background(), env); err != nil || got != id2 {
		t.Fatalf("PublishEnvelope: %v, %v", got, err)
	}
	id3 := uuid.Must(uuid.NewV7())
	note := encodeTick(t, envelope.Header{ID: id3, Type: "note", Source: "remote", Time: time.Now(), Priority: envelope.Low, Attempt: 1}, Tick{Seq: 3})
	if _, err := b.PublishEnvelope(context.Background(), note); err != nil {
		t.Fatal(err)
	}
	var gotRel, gotAll []string
	readResult(t, rel, &gotRel)
	readResult(t, all, &gotAll)
	want := []string{
		fmt.Sprintf("%v pub tick normal 1", id1),
		fmt.Sprintf("%v remote tick critical 1", id2),
		fmt.Sprintf("%v remote note low 1", id3),
	}
	// Lanes are read by priority: compare without the order.
	slices.Sort(gotAll)
	sorted := slices.Sorted(slices.Values(want))
	if strings.Join(gotAll, "\n") != strings.Join(sorted, "\n") {
		t.Fatalf("best-effort envelope subscriber got\n%s\nwant\n%s", strings.Join(gotAll, "\n"), strings.Join(want, "\n"))
	}
	// The Reliable one wants ticks only; the critical one may overtake the normal one.
	if len(gotRel) != 2 || !(gotRel[0] == want[0] && gotRel[1] == want[1] || gotRel[0] == want[1] && gotRel[1] == want[0]) {
		t.Fatalf("reliable envelope subscriber got %q", gotRel)
	}

	// Bad envelopes are refused.
	if _, err := b.PublishEnvelope(context.Background(), []byte("not an envelope")); !errors.Is(err, envelope.ErrMalformed) {
		t.Fatalf("garbage: %v", err)
	}
	bad := append([]byte(nil), env...)
	bad[32] ^= 1 // the type id no longer that of "tick"
	if _, err := b.PublishEnvelope(context.Background(), bad); !errors.Is(err, envelope.ErrMalformed) {
		t.Fatalf("wrong type id: %v", err)
	}
	big := encodeTick(t, envelope.Header{ID: id3, Type: "tick", Source: strings.Repeat("s", 200), Time: time.Now(), Attempt: 1}, Tick{})
	if _, err := b.PublishEnvelope(context.Background(), big); !errors.Is(err, ring.ErrTooLarge) {
		t.Fatalf("%d bytes: %v", len(big), err)
	}
	if _, err := Subscribe(b, func(ctx context.Context, ev *envelope.View, v *Tick) error { return nil }, OfTypes("x")); !errors.Is(err, ErrConfig) {
		t.Fatalf("Subscribe with OfTypes: %v", err)
	}
}
