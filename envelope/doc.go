// Package envelope is the one home of the event envelope: the bytes that wrap every event
// the bus, the Watermill adapter and the NATS bridge move. An envelope says what an event is
// (its type name), who sent it (source), when (timestamp), which conversation it belongs to
// (correlation id), how urgent it is (priority), how often it was tried (attempt), carries
// free key/value metadata, and ends with the payload, encoded by package codec.
//
// Writing is two steps so that a payload can be encoded straight into the record a ring
// reserved: Header.Size gives the record's length, Header.Put writes the header into the
// record and returns the payload's slice to encode into. Reading is Parse, which checks
// every length once and returns a View whose slices point into the record.
//
// # Layout, version 1
//
// Little-endian; offsets in bytes. The payload starts at a multiple of 8 so that a
// codec.Fixed[T] view of it is aligned wherever the record is.
//
//	 0  u8   version (1)
//	 1  u8   priority (0 Critical, 1 Normal, 2 Low)
//	 2  u16  payload offset: 56 + type + source + correlation + metadata, rounded up to 8
//	 4  u32  attempt (1 for the first delivery)
//	 8  [16] id: a UUIDv7 (RFC 9562), time-ordered
//	24  i64  timestamp, Unix nanoseconds
//	32  u32  type id: TypeID(type name)
//	36  u16  type name length
//	38  u16  source length
//	40  u16  correlation id length
//	42  u16  metadata entries
//	44  u32  metadata bytes
//	48  u32  payload length
//	52  u32  flags, zero in version 1
//	56       type name, source, correlation id, then each metadata entry as
//	         u16 key length, u16 value length, key, value; zero padding to the payload offset
//	         payload
//
// A reader refuses a version it does not know (ErrVersion) and any length that does not fit
// the record (ErrMalformed); bytes after the payload are ignored, so a record rounded up by
// its ring parses as well as an exact one.
//
// # Caveats
//
// A View's slices point into the parsed bytes: in a ring they are valid until the record is
// released, and a peer that scribbles on the record can change their contents (never their
// bounds, which Parse copied). Copy what must outlive the record (View.Header).
package envelope
