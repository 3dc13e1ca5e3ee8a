package envelope

import "errors"

// ErrMalformed is returned by Parse when a length or offset in the bytes does not fit them,
// or a field holds a value that version 1 does not define.
var ErrMalformed = errors.New("envelope: malformed")

// ErrVersion is returned by Parse when the envelope's version is not one this build reads.
var ErrVersion = errors.New("envelope: unknown version")

// ErrTooLarge is returned by Header.Size and Header.Put when a string or the metadata does
// not fit its length field (65,535 bytes for each string, key and value; 65,535 entries),
// or the whole envelope would pass 2^31 bytes.
var ErrTooLarge = errors.New("envelope: field too large")

// ErrShort is returned by Header.Put when the destination is shorter than Header.Size.
var ErrShort = errors.New("envelope: destination too short")
