package geoip

import (
	"cmp"
	"net/netip"
)

// v4 is an IPv4 address as a number.
type v4 uint32

func (a v4) Compare(b v4) int { return cmp.Compare(a, b) }
func (a v4) next() v4         { return a + 1 }

// address is what a range table needs of an address type.
type address[A any] interface {
	Compare(A) int
	next() A
}

// uint128 is an IPv6 address as a number, most significant half first.
type uint128 struct{ hi, lo uint64 }

func (a uint128) Compare(b uint128) int {
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	return cmp.Compare(a.lo, b.lo)
}

func (a uint128) next() uint128 {
	if a.lo == ^uint64(0) {
		return uint128{a.hi + 1, 0}
	}
	return uint128{a.hi, a.lo + 1}
}

func toUint128(b [16]byte) uint128 {
	var hi, lo uint64
	for i := 0; i < 8; i++ {
		hi = hi<<8 | uint64(b[i])
		lo = lo<<8 | uint64(b[i+8])
	}
	return uint128{hi, lo}
}

func toV4(b [4]byte) v4 {
	return v4(b[0])<<24 | v4(b[1])<<16 | v4(b[2])<<8 | v4(b[3])
}

func v4Bounds(addr netip.Addr, bits int) (v4, v4) {
	first := toV4(addr.As4())
	host := v4(0)
	if bits < 32 {
		host = ^v4(0) >> bits
	}
	return first &^ host, first | host
}

func v6Bounds(addr netip.Addr, bits int) (uint128, uint128) {
	first := toUint128(addr.As16())
	var host uint128
	switch {
	case bits == 0:
		host = uint128{^uint64(0), ^uint64(0)}
	case bits < 64:
		host = uint128{^uint64(0) >> bits, ^uint64(0)}
	case bits < 128:
		host = uint128{0, ^uint64(0) >> (bits - 64)}
	}
	return uint128{first.hi &^ host.hi, first.lo &^ host.lo}, uint128{first.hi | host.hi, first.lo | host.lo}
}

// ranges maps addresses to location indices: starts[i] is the first address
// of range i, which runs to starts[i+1]-1 (the last to the top of the
// address space). starts is strictly ascending and starts at the lowest address.
type ranges[A address[A]] struct {
	starts []A
	locs   []uint32
}

func (r *ranges[A]) add(start A, loc uint32) {
	if n := len(r.starts); n > 0 && r.locs[n-1] == loc {
		return // extends the previous range
	}
	if n := len(r.starts); n > 0 && r.starts[n-1].Compare(start) == 0 {
		r.locs[n-1] = loc // an empty range before this one
		if n > 1 && r.locs[n-2] == loc {
			r.starts, r.locs = r.starts[:n-1], r.locs[:n-1]
		}
		return
	}
	r.starts = append(r.starts, start)
	r.locs = append(r.locs, loc)
}

// cover records that first … last have loc, and that the addresses after
// last are unknown until the next network. Networks arrive in ascending
// order without overlap, as a MaxMind DB search tree yields them.
func (r *ranges[A]) cover(first, last A, loc uint32, top bool) {
	r.add(first, loc)
	if !top {
		r.add(last.next(), 0)
	}
}

// find returns the location index of addr: the range with the last start at
// or below it.
func (r *ranges[A]) find(addr A) uint32 {
	lo, hi := 0, len(r.starts) // invariant: starts[lo-1] <= addr < starts[hi]
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r.starts[m].Compare(addr) <= 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return r.locs[lo-1]
}
