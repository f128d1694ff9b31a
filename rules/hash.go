package rules

import "github.com/zeebo/xxh3"

// Buckets is the number of buckets a unit is hashed into: one per basis point.
const Buckets = 10000

// Hash is the bucketing hash of DESIGN.md §2: XXH3 64-bit, seed 0, of the
// UTF-8 bytes of salt + "." + unit. Reproduce it anywhere with
// `printf '%s' "$salt.$unit" | xxhsum -H3`.
func Hash(salt, unit string) uint64 {
	// A stack buffer keeps the common case (unit ids well under 200 bytes)
	// free of allocation; longer ones spill to the heap and hash the same.
	var buf [256]byte
	b := append(buf[:0], salt...)
	b = append(b, '.')
	b = append(b, unit...)
	return xxh3.Hash(b)
}

// Bucket returns the unit's bucket for salt, 0 … 9999: Hash mod 10000. In a
// split, a variant with p % takes p*100 consecutive buckets.
func Bucket(salt, unit string) int {
	return int(Hash(salt, unit) % Buckets)
}
