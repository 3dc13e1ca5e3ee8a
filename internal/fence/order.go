package fence

// LoadLoad orders the loads before it before the loads after it: the read side of a
// sequence lock, between copying the data it guards and loading the sequence again to
// validate the copy. On amd64 loads are not reordered with loads, so it is only a compiler
// barrier; on arm64 it is DMB ISHLD; elsewhere, and under the race detector, an atomic
// read-modify-write of a private word (a full fence).
func LoadLoad() { loadLoad() }

// StoreStore orders the stores before it before the stores after it: the write side of a
// sequence lock, between marking a slot as being written and writing its data. On amd64
// stores are not reordered with stores, so it is only a compiler barrier; on arm64 it is
// DMB ISHST; elsewhere, and under the race detector, a full fence.
func StoreStore() { storeStore() }
