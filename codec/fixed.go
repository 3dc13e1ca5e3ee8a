package codec

import (
	"fmt"
	"reflect"
)

// Fixed is the zero-copy Codec of a fixed-size type without pointers: a value is copied into
// the record as it lies in memory, and a record is viewed in place as a *T.
type Fixed[T any] struct {
	size  int
	align int
	bools []int // offsets of bool fields: a byte other than 0 or 1 there is not a Go bool
}

// NewFixed checks, once, by reflection, that T can be viewed in place: booleans, numbers,
// and arrays and structs of them. Anything that holds a pointer (pointers, slices, strings,
// maps, interfaces, channels, funcs, unsafe.Pointer, uintptr) is refused with ErrBadType
// naming the offending field.
func NewFixed[T any]() (*Fixed[T], error) {
	t := reflect.TypeFor[T]()
	if err := checkFixed(t, t.String()); err != nil {
		return nil, err
	}
	return &Fixed[T]{size: int(t.Size()), align: t.Align(), bools: boolOffsets(t, 0, nil)}, nil
}

func boolOffsets(t reflect.Type, base int, out []int) []int {
	switch t.Kind() {
	case reflect.Bool:
		out = append(out, base)
	case reflect.Array:
		for i := range t.Len() {
			out = boolOffsets(t.Elem(), base+i*int(t.Elem().Size()), out)
		}
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			out = boolOffsets(f.Type, base+int(f.Offset), out)
		}
	}
	return out
}

func checkFixed(t reflect.Type, path string) error {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return nil
	case reflect.Array:
		return checkFixed(t.Elem(), path+"[]")
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			if err := checkFixed(f.Type, path+"."+f.Name); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("%w: %s is %s (%s)", ErrBadType, path, kindName(t.Kind()), t)
}

func kindName(k reflect.Kind) string {
	switch k {
	case reflect.Pointer, reflect.UnsafePointer:
		return "a pointer"
	case reflect.Uintptr:
		return "a uintptr (an address in disguise)"
	case reflect.Slice:
		return "a slice"
	case reflect.String:
		return "a string"
	case reflect.Map:
		return "a map"
	case reflect.Interface:
		return "an interface"
	case reflect.Chan:
		return "a channel"
	case reflect.Func:
		return "a func"
	}
	return "a " + k.String()
}

// Size is the size of T in bytes: every record of this codec has exactly this length.
func (f *Fixed[T]) Size(*T) (int, error) { return f.size, nil }

// Encode copies *v into dst in one move. dst's old bytes are not looked at.
func (f *Fixed[T]) Encode(dst []byte, v *T) error {
	if len(dst) != f.size {
		return fmt.Errorf("%w: %d bytes reserved, %T is %d", ErrLength, len(dst), *v, f.size)
	}
	if f.size == 0 {
		return nil
	}
	p, err := view[T](dst, f.align)
	if err != nil {
		return err
	}
	*p = *v
	return nil
}

// Decode copies the record into *v.
func (f *Fixed[T]) Decode(src []byte, v *T) error {
	p, err := f.View(src)
	if err != nil {
		return err
	}
	*v = *p
	return nil
}

// View returns the record as a *T in place, without copying. It returns ErrLength for a
// record that is not exactly Size bytes, ErrMisaligned for one not aligned for T, and
// ErrInvalid when a bool field holds a byte other than 0 or 1. The
// result is valid as long as the record is (until Release, for a borrowed record).
func (f *Fixed[T]) View(b []byte) (*T, error) {
	if len(b) != f.size {
		return nil, fmt.Errorf("%w: %d bytes, %T is %d", ErrLength, len(b), *new(T), f.size)
	}
	if f.size == 0 {
		return new(T), nil
	}
	for _, off := range f.bools {
		if b[off] > 1 {
			return nil, fmt.Errorf("%w: byte %d of a bool field is %d", ErrInvalid, off, b[off])
		}
	}
	return view[T](b, f.align)
}
