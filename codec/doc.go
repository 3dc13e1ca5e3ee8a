// Package codec sends typed messages over shmq rings.
//
// A Codec[T] says how many bytes a value needs and encodes it straight into the record the
// ring reserved for it, so a typed send is one write into shared memory; it decodes from a
// borrowed record. Fixed[T] is the zero-copy case: a fixed-size, pointer-free T is copied
// into the ring as it is laid out in memory and read back as a *T that points into the
// ring. Adapters cover []byte, string, encoding.BinaryAppender/BinaryUnmarshaler, JSON, and
// any append-style marshaller (protobuf's MarshalOptions.MarshalAppend fits Appender).
//
// Each record's 32-bit type field carries a message type id: a Sender[T] stamps its id, a
// Receiver[T] checks it, and a Mux dispatches records of several types from one ring to
// their handlers, skipping or rejecting unknown ids without decoding them.
//
// # Caveats
//
// A *T from Fixed.View or Receiver.Next points into shared memory: valid until Release,
// and written by another process. Fixed[T] uses Go's memory layout of T: both sides must be
// built from the same type definition for the same architecture (shmq runs on
// little-endian 64-bit machines; fixed-size integer fields make the layout explicit).
//
// Decoders treat every record as untrusted: a record of the wrong length or with bad bytes
// gives an error, never a panic or a misread.
package codec
