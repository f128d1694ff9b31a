package stats

import (
	"math/bits"
	"sync"
	"time"
)

// Seen remembers 64-bit fingerprints for the current window of time: Add
// answers whether a fingerprint is new in the window, so that a caller does
// a thing once per key and window. Windows are aligned to the Unix epoch —
// 24 h windows are UTC days — so that every node of a fleet, and every
// restart, agrees on where one ends.
//
// Memory is bounded: the set holds at most Capacity fingerprints, at 8
// bytes per slot and never more than 3/4 of the slots used (Bytes). When a
// shard of the set is full, it starts over as if its window had ended, and
// Add reports it: fingerprints are then new again, never lost, so a caller
// over its bound does a thing twice rather than not at all.
//
// Fingerprints are spread over shards by a group (the caller's choice, e.g.
// the user), so that the keys of one group are added under one lock.
type Seen struct {
	window   int64 // nanoseconds
	maxSlots int   // per shard, a power of two
	shards   [seenShards]seenShard
}

const (
	seenShards     = 64
	seenFirstSlots = 256
	blockBits      = 0xFFFF_FFC0 // the bits of a stored fingerprint that come from its group
)

type seenShard struct {
	mu     sync.Mutex
	epoch  int64    // the window the slots belong to
	slots  []uint64 // open addressing, linear probing; 0 is empty
	used   int
	resets int64
	_      [64]byte // keeps shards on their own cache lines
}

// NewSeen returns a set for windows of the given length that remembers up
// to capacity fingerprints. capacity is rounded up so that every shard has
// a power of two of slots.
func NewSeen(window time.Duration, capacity int) *Seen {
	perShard := max(capacity, seenShards) / seenShards * 4 / 3
	slots := 1 << bits.Len(uint(perShard-1))
	return &Seen{window: int64(max(window, time.Nanosecond)), maxSlots: max(slots, seenFirstSlots)}
}

// Window returns the window's length.
func (s *Seen) Window() time.Duration { return time.Duration(s.window) }

// Epoch returns the number of the window holding t: windows since the
// Unix epoch.
func (s *Seen) Epoch(t time.Time) int64 { return t.UnixNano() / s.window }

// Start returns when window epoch starts, in UTC.
func (s *Seen) Start(epoch int64) time.Time { return time.Unix(0, epoch*s.window).UTC() }

// Capacity returns how many fingerprints the set holds at most.
func (s *Seen) Capacity() int { return seenShards * s.maxSlots * 3 / 4 }

// Bytes returns the most memory the set takes.
func (s *Seen) Bytes() int { return seenShards * s.maxSlots * 8 }

// Batch adds the fingerprints of one group under one lock; it is the
// receiver of Seen.Lock.
type Batch struct {
	s     *Seen
	shard *seenShard
	group uint64
	// Reset is true when the group's shard was full and started over
	// during this batch.
	Reset bool
}

// Lock starts adding the fingerprints of the group (any 64-bit hash of
// it) in the window of epoch; Unlock ends it.
func (s *Seen) Lock(group uint64, epoch int64) Batch {
	sh := &s.shards[group>>(64-6)]
	sh.mu.Lock()
	if sh.epoch != epoch {
		sh.epoch = epoch
		sh.clear()
	}
	return Batch{s: s, shard: sh, group: group}
}

// Unlock ends the batch.
func (b *Batch) Unlock() { b.shard.mu.Unlock() }

// Add adds fp and reports whether it is new in the window.
func (b *Batch) Add(fp uint64) bool {
	sh := b.shard
	// What is kept, and where its probe starts: bits 6 to 31 come from
	// the group, so that a request's fingerprints land in one block of 64
	// slots (eight cache lines) rather than in a cache line each; the other
	// 38 bits, and the place in the block, from fp.
	fp = fp&^blockBits | b.group&blockBits
	if fp == 0 {
		fp = 1 // 0 marks an empty slot
	}
	if sh.slots == nil {
		sh.slots = make([]uint64, seenFirstSlots)
	}
	mask := uint64(len(sh.slots) - 1)
	for i := fp & mask; ; i = (i + 1) & mask {
		switch sh.slots[i] {
		case fp:
			return false
		case 0:
			if (sh.used+1)*4 > len(sh.slots)*3 {
				if len(sh.slots) >= b.s.maxSlots {
					sh.clear()
					sh.resets++
					b.Reset = true
				} else {
					sh.grow()
				}
				return b.Add(fp)
			}
			sh.slots[i] = fp
			sh.used++
			return true
		}
	}
}

// Resets returns how many times a full shard has started over.
func (s *Seen) Resets() int64 {
	return int64(s.sum(func(sh *seenShard) int { return int(sh.resets) }))
}

// Allocated returns the memory the set's slots take now: it grows with
// use up to Bytes.
func (s *Seen) Allocated() int {
	return s.sum(func(sh *seenShard) int { return 8 * len(sh.slots) })
}

// Len returns how many fingerprints the set holds for window epoch.
func (s *Seen) Len(epoch int64) int {
	return s.sum(func(sh *seenShard) int {
		if sh.epoch != epoch {
			return 0
		}
		return sh.used
	})
}

// sum adds up f over the shards, each read under its lock.
func (s *Seen) sum(f func(*seenShard) int) int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += f(sh)
		sh.mu.Unlock()
	}
	return n
}

func (sh *seenShard) clear() {
	clear(sh.slots)
	sh.used = 0
}

func (sh *seenShard) grow() {
	old := sh.slots
	sh.slots = make([]uint64, 2*len(old))
	mask := uint64(len(sh.slots) - 1)
	for _, fp := range old {
		if fp == 0 {
			continue
		}
		i := fp & mask
		for sh.slots[i] != 0 {
			i = (i + 1) & mask
		}
		sh.slots[i] = fp
	}
}
