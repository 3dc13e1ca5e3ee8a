package codec

import (
	"encoding"
	"encoding/json"
	"fmt"
)

// Codec encodes values of T into ring records and decodes them back. Implementations are
// safe for use by one goroutine at a time (some keep a scratch buffer).
type Codec[T any] interface {
	// Size returns how many bytes v needs. A codec that cannot know without encoding
	// encodes into a scratch buffer here, and Encode then copies it.
	Size(v *T) (int, error)
	// Encode writes v into dst, which has exactly the length Size returned for v.
	Encode(dst []byte, v *T) error
	// Decode sets *v from src, which is shared memory: it copies what it keeps and treats
	// every byte as untrusted.
	Decode(src []byte, v *T) error
}

// Bytes is the Codec of []byte: the record is the bytes. Decode copies into *v's array,
// growing it as needed.
type Bytes struct{}

func (Bytes) Size(v *[]byte) (int, error)        { return len(*v), nil }
func (Bytes) Encode(dst []byte, v *[]byte) error { copy(dst, *v); return nil }
func (Bytes) Decode(src []byte, v *[]byte) error { *v = append((*v)[:0], src...); return nil }

// String is the Codec of string: the record is the string's bytes.
type String struct{}

func (String) Size(v *string) (int, error)        { return len(*v), nil }
func (String) Encode(dst []byte, v *string) error { copy(dst, *v); return nil }
func (String) Decode(src []byte, v *string) error { *v = string(src); return nil }

// Appender adapts an append-style marshaller. With a size function the value is appended
// straight into the reserved record (protobuf: proto.MarshalOptions.Size and MarshalAppend);
// without one it is appended to a scratch buffer first and copied.
type Appender[T any] struct {
	SizeOf    func(v *T) int                         // optional: exact encoded size
	Append    func(dst []byte, v *T) ([]byte, error) // appends the encoding of v to dst
	Unmarshal func(src []byte, v *T) error           // decodes src into v
	scratch   []byte
}

func (a *Appender[T]) Size(v *T) (int, error) {
	if a.SizeOf != nil {
		return a.SizeOf(v), nil
	}
	var err error
	a.scratch, err = a.Append(a.scratch[:0], v)
	return len(a.scratch), err
}

func (a *Appender[T]) Encode(dst []byte, v *T) error {
	if a.SizeOf == nil {
		if len(a.scratch) != len(dst) {
			return fmt.Errorf("%w: %d bytes staged, %d reserved", ErrSize, len(a.scratch), len(dst))
		}
		copy(dst, a.scratch)
		return nil
	}
	out, err := a.Append(dst[:0], v)
	if err != nil {
		return err
	}
	if len(out) != len(dst) || (len(out) > 0 && &out[0] != &dst[0]) {
		return fmt.Errorf("%w: size said %d, encoding took %d", ErrSize, len(dst), len(out))
	}
	return nil
}

func (a *Appender[T]) Decode(src []byte, v *T) error { return a.Unmarshal(src, v) }

// binaryValue is a *T that marshals itself with encoding.BinaryAppender and
// encoding.BinaryUnmarshaler.
type binaryValue[T any] interface {
	*T
	encoding.BinaryAppender
	encoding.BinaryUnmarshaler
}

// Binary returns the Codec of a type whose pointer implements encoding.BinaryAppender and
// encoding.BinaryUnmarshaler. The value is appended to a scratch buffer and copied into the
// record.
func Binary[T any, PT binaryValue[T]]() Codec[T] {
	return &Appender[T]{
		Append:    func(dst []byte, v *T) ([]byte, error) { return PT(v).AppendBinary(dst) },
		Unmarshal: func(src []byte, v *T) error { return PT(v).UnmarshalBinary(src) },
	}
}

// JSON returns the Codec that encodes T with encoding/json.
func JSON[T any]() Codec[T] {
	return &Appender[T]{
		Append: func(dst []byte, v *T) ([]byte, error) {
			b, err := json.Marshal(v)
			return append(dst, b...), err
		},
		Unmarshal: func(src []byte, v *T) error { return json.Unmarshal(src, v) },
	}
}
