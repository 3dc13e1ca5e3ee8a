package codec_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/shmq/shmq/codec"
	"github.com/shmq/shmq/ring"
	"github.com/shmq/shmq/shm"
)

// Trade is a fixed-layout message: numbers and arrays only, so it crosses processes in place.
type Trade struct {
	ID    uint64
	Price float64
	Qty   int32
	Venue [4]byte
}

// Sending a struct, and receiving it without a copy. In real use the two halves run in two
// processes that open the same segment name.
func Example() {
	dir, _ := os.MkdirTemp("", "codec-example-")
	defer os.RemoveAll(dir)
	seg, _ := ring.Create("trades", ring.Spec{Kind: ring.SPSC, Size: 1 << 16}, shm.Options{Dir: dir})
	defer seg.Close()
	w, _ := ring.NewSPSCWriter(seg, ring.Options{})
	r, _ := ring.NewSPSCReader(seg, ring.Options{})
	trades, _ := codec.NewFixed[Trade]()
	const tradeID = 1 // message type id, carried in each record

	// Producer.
	send := codec.NewSender(w, tradeID, codec.Codec[Trade](trades))
	send.Send(context.Background(), &Trade{ID: 7, Price: 101.5, Qty: 300, Venue: [4]byte{'X', 'N', 'Y', 'S'}})
	w.Close()

	// Consumer: t points into the ring until Release.
	recv := codec.NewReceiver(r, tradeID, codec.Codec[Trade](trades))
	for {
		t, err := recv.Next(context.Background())
		if err == io.EOF {
			break
		}
		fmt.Printf("trade %d: %d @ %.2f on %s\n", t.ID, t.Qty, t.Price, t.Venue[:])
		recv.Release()
	}
	r.Close()
	// Output: trade 7: 300 @ 101.50 on XNYS
}

// marshalOptions stands in for google.golang.org/protobuf/proto.MarshalOptions, whose Size
// and MarshalAppend have these shapes; with the real package the Appender below reads:
//
//	opts := proto.MarshalOptions{}
//	c := &codec.Appender[pb.Order]{
//		SizeOf:    func(m *pb.Order) int { return opts.Size(m) },
//		Append:    func(b []byte, m *pb.Order) ([]byte, error) { return opts.MarshalAppend(b, m) },
//		Unmarshal: func(b []byte, m *pb.Order) error { return proto.Unmarshal(b, m) },
//	}
//
// Because the size is known first, the message is marshalled straight into the ring.
type marshalOptions struct{}

type pbOrder struct{ Symbol string }

func (marshalOptions) Size(m *pbOrder) int { return 1 + len(m.Symbol) }
func (marshalOptions) MarshalAppend(b []byte, m *pbOrder) ([]byte, error) {
	return append(append(b, byte(len(m.Symbol))), m.Symbol...), nil
}
func unmarshal(b []byte, m *pbOrder) error {
	if len(b) == 0 || int(b[0]) != len(b)-1 {
		return errors.New("bad message")
	}
	m.Symbol = string(b[1:])
	return nil
}

// A protobuf-style marshaller plugged in through Appender, next to a JSON type on the same
// ring, dispatched by type id.
func Example_appender() {
	dir, _ := os.MkdirTemp("", "codec-example-")
	defer os.RemoveAll(dir)
	seg, _ := ring.Create("mixed", ring.Spec{Kind: ring.SPSC, Size: 1 << 16}, shm.Options{Dir: dir})
	defer seg.Close()
	w, _ := ring.NewSPSCWriter(seg, ring.Options{})
	r, _ := ring.NewSPSCReader(seg, ring.Options{})
	defer r.Close()

	opts := marshalOptions{}
	pb := &codec.Appender[pbOrder]{
		SizeOf:    func(m *pbOrder) int { return opts.Size(m) },
		Append:    func(b []byte, m *pbOrder) ([]byte, error) { return opts.MarshalAppend(b, m) },
		Unmarshal: unmarshal,
	}
	type Alert struct {
		Level string `json:"level"`
	}
	ctx := context.Background()
	codec.NewSender(w, 1, codec.Codec[pbOrder](pb)).Send(ctx, &pbOrder{Symbol: "SHMQ"})
	codec.NewSender(w, 2, codec.JSON[Alert]()).Send(ctx, &Alert{Level: "warn"})
	w.Close()

	m := codec.NewMux()
	codec.Handle(m, 1, codec.Codec[pbOrder](pb), func(o *pbOrder) error { fmt.Println("order", o.Symbol); return nil })
	codec.Handle(m, 2, codec.JSON[Alert](), func(a *Alert) error { fmt.Println("alert", a.Level); return nil })
	err := m.Serve(ctx, r) // until the end of the stream
	fmt.Println(err == nil)
	// Output:
	// order SHMQ
	// alert warn
	// true
}
