package codec_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/shmq/shmq/codec"
	"github.com/shmq/shmq/internal/proctest"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

func TestMain(m *testing.M) {
	proctest.Register("typed-sender", runTypedSender)
	proctest.Main(m)
}

const typedCount = 20_000

// runTypedSender sends typedCount Orders (Fixed) and, every 1000th, a Note (JSON) on the
// ring in Args[0]/Args[1], then closes.
func runTypedSender(c *proctest.Child) error {
	seg, err := shm.Open(c.Args[1], shm.Options{Dir: c.Args[0]})
	if err != nil {
		return err
	}
	w, err := ring.NewSPSCWriter(seg, ring.Options{})
	if err != nil {
		return err
	}
	fixed, err := codec.NewFixed[Order]()
	if err != nil {
		return err
	}
	orders := codec.NewSender(w, 1, codec.Codec[Order](fixed))
	notes := codec.NewSender(w, 2, codec.JSON[Note]())
	ctx := context.Background()
	for i := range uint64(typedCount) {
		o := Order{ID: i, Price: float64(i) / 4, Qty: int32(i % 1000), Urgent: i%2 == 0}
		if err := orders.Send(ctx, &o); err != nil {
			return err
		}
		if i%1000 == 0 {
			if err := notes.Send(ctx, &Note{Text: "checkpoint", Tags: []string{string(rune('a' + i/1000))}}); err != nil {
				return err
			}
		}
	}
	return w.Close()
}

// TestTypedAcrossProcesses: Fixed orders viewed in place and JSON notes, interleaved on one
// ring, from another process, dispatched by type id.
func TestTypedAcrossProcesses(t *testing.T) {
	dir := testDir(t)
	seg, err := ring.Create("typed", ring.Spec{Kind: ring.SPSC, Size: 1 << 16}, shm.Options{Dir: dir})
	require.NoError(t, err)
	defer seg.Close()
	r, err := ring.NewSPSCReader(seg, ring.Options{})
	require.NoError(t, err)
	defer r.Close()
	child := proctest.Start(t, "typed-sender", proctest.Options{Args: []string{dir, "typed"}})

	fixed, err := codec.NewFixed[Order]()
	require.NoError(t, err)
	var next uint64
	var notes []string
	m := codec.NewMux()
	codec.Handle(m, 1, codec.Codec[Order](fixed), func(o *Order) error {
		want := Order{ID: next, Price: float64(next) / 4, Qty: int32(next % 1000), Urgent: next%2 == 0}
		if *o != want {
			return errors.New("order mismatch")
		}
		next++
		return nil
	})
	codec.Handle(m, 2, codec.JSON[Note](), func(n *Note) error { notes = append(notes, n.Tags[0]); return nil })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, m.Serve(ctx, r), "the end of the stream ends Serve without an error")
	assert.EqualValues(t, typedCount, next)
	assert.Len(t, notes, typedCount/1000)
	require.NoError(t, child.Wait(time.Minute))
}
