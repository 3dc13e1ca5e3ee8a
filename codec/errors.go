package codec

import "errors"

// ErrBadType is returned by NewFixed for a type that cannot be viewed in place: one with
// pointers, slices, strings, maps, interfaces, channels or funcs. The message names the
// offending field.
var ErrBadType = errors.New("codec: type cannot be sent as a fixed-layout value")

// ErrLength is returned when a record's length does not fit the codec (a Fixed[T] record
// that is not exactly the size of T).
var ErrLength = errors.New("codec: record has the wrong length")

// ErrMisaligned is returned by Fixed.View when a record is not aligned for T. Ring records
// are always 8-byte aligned, so this means the bytes did not come from a ring.
var ErrMisaligned = errors.New("codec: record is not aligned for the type")

// ErrWrongType is returned by Receiver when a record carries another message type id.
var ErrWrongType = errors.New("codec: record has another message type")

// ErrUnknownType is returned by Mux.Dispatch for a type id nobody handles, unless the Mux
// has an Unknown handler.
var ErrUnknownType = errors.New("codec: no handler for message type")

// ErrSize is returned when an encoder wrote another number of bytes than its size function
// promised.
var ErrSize = errors.New("codec: encoded size differs from the size announced")

// ErrInvalid is returned when a record's bytes cannot be a value of the type (a bool field
// that is neither 0 nor 1).
var ErrInvalid = errors.New("codec: record is not a valid value")
