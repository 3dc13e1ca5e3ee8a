package codec_test

import (
	"errors"
	"testing"

	"github.com/shmq/shmq/codec"
	"github.com/shmq/shmq/ring"
)

// Every decoder: garbage in, an error or a value out, never a panic.

func FuzzFixed(f *testing.F) {
	fixed, _ := codec.NewFixed[Order]()
	size, _ := fixed.Size(nil)
	f.Add(make([]byte, size))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		var o Order
		err := fixed.Decode(append([]byte(nil), b...), &o)
		if len(b) != size && !errors.Is(err, codec.ErrLength) {
			t.Fatalf("length %d accepted: %v", len(b), err)
		}
	})
}

func FuzzJSON(f *testing.F) {
	f.Add([]byte(`{"text":"a","tags":["x"]}`))
	f.Add([]byte(`{"text":`))
	c := codec.JSON[Note]()
	f.Fuzz(func(t *testing.T, b []byte) {
		var n Note
		_ = c.Decode(b, &n)
	})
}

func FuzzBinary(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 2, 0, 0, 0})
	f.Add([]byte{1})
	c := codec.Binary[Point]()
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Point
		if err := c.Decode(b, &p); err == nil && len(b) != 8 {
			t.Fatalf("accepted %d bytes", len(b))
		}
	})
}

func FuzzBytesString(f *testing.F) {
	f.Add([]byte("hello"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var bs []byte
		var s string
		if (codec.Bytes{}).Decode(b, &bs) != nil || string(bs) != string(b) {
			t.Fatal("bytes")
		}
		if (codec.String{}).Decode(b, &s) != nil || s != string(b) {
			t.Fatal("string")
		}
	})
}

func FuzzMux(f *testing.F) {
	fixed, _ := codec.NewFixed[Order]()
	m := codec.NewMux()
	codec.Handle(m, 1, codec.Codec[Order](fixed), func(*Order) error { return nil })
	codec.Handle(m, 2, codec.JSON[Note](), func(*Note) error { return nil })
	codec.Handle(m, 3, codec.Binary[Point](), func(*Point) error { return nil })
	f.Add(uint32(1), make([]byte, 64))
	f.Add(uint32(2), []byte(`{}`))
	f.Add(uint32(9), []byte("x"))
	f.Fuzz(func(t *testing.T, typ uint32, b []byte) {
		err := m.Dispatch(ring.Record{Type: typ, Data: b})
		if typ > 3 && !errors.Is(err, codec.ErrUnknownType) {
			t.Fatalf("type %d: %v", typ, err)
		}
	})
}
