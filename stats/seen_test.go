package stats

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func TestSeenOncePerWindow(t *testing.T) {
	s := NewSeen(time.Hour, 1000)
	now := time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)
	add := func(group, fp uint64, at time.Time) bool {
		b := s.Lock(group, s.Epoch(at))
		defer b.Unlock()
		return b.Add(fp)
	}
	if !add(1, 42, now) || add(1, 42, now) || add(1, 42, now.Add(29*time.Minute)) {
		t.Fatal("a fingerprint must be new once per window")
	}
	if !add(1, 43, now) {
		t.Fatal("another fingerprint of the group is new")
	}
	if !add(1, 42, now.Add(30*time.Minute)) {
		t.Fatal("the next window (11:00 UTC) must see the fingerprint as new")
	}
	if !add(2, 0, now) || add(2, 0, now) {
		t.Fatal("fingerprint 0 must be remembered like any other")
	}
	if got := NewSeen(24*time.Hour, 1).Epoch(now); got != now.Truncate(24*time.Hour).Unix()/86400 {
		t.Fatalf("24 h windows must be UTC days: epoch %d", got)
	}
}

// Past its capacity the set starts over shard by shard: memory stays at
// the bound, and a fingerprint is new again rather than lost.
func TestSeenStaysWithinItsBound(t *testing.T) {
	s := NewSeen(time.Hour, 100_000)
	if s.Capacity() < 100_000 || s.Bytes() > 2*100_000*8*4/3 {
		t.Fatalf("capacity %d in %d bytes for 100,000", s.Capacity(), s.Bytes())
	}
	epoch := s.Epoch(time.Now())
	rng := rand.New(rand.NewPCG(3, 4))
	resets := 0
	for range 1_000_000 {
		fp := rng.Uint64()
		b := s.Lock(fp, epoch)
		if !b.Add(fp) {
			t.Fatal("a random 64-bit fingerprint was already there")
		}
		if b.Reset {
			resets++
		}
		b.Unlock()
	}
	if resets == 0 || int64(resets) != s.Resets() {
		t.Fatalf("%d resets seen by Add, %d counted: a full set must start over", resets, s.Resets())
	}
	if s.Len(epoch) > s.Capacity() || s.Len(epoch+1) != 0 {
		t.Fatalf("%d fingerprints held, capacity %d", s.Len(epoch), s.Capacity())
	}
	for i := range s.shards {
		if len(s.shards[i].slots) > s.maxSlots {
			t.Fatalf("shard %d grew to %d slots, bound %d", i, len(s.shards[i].slots), s.maxSlots)
		}
	}
}

func TestSeenConcurrent(t *testing.T) {
	s := NewSeen(time.Hour, 10_000)
	epoch := s.Epoch(time.Now())
	var wg sync.WaitGroup
	var mu sync.Mutex
	news := 0
	for range 8 {
		wg.Go(func() {
			n := 0
			for i := range 5000 {
				fp := uint64(i)*0x9E3779B97F4A7C15 + 1
				b := s.Lock(fp, epoch)
				if b.Add(fp) {
					n++
				}
				b.Unlock()
			}
			mu.Lock()
			news += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if news != 5000 {
		t.Fatalf("%d fingerprints reported new by 8 goroutines adding the same 5,000", news)
	}
}

// BenchmarkSeen is one request's batch of two flags, over a million users:
// the per-request cost of deduplicated exposures.
func BenchmarkSeen(b *testing.B) {
	s := NewSeen(24*time.Hour, 3_000_000)
	epoch := s.Epoch(time.Now())
	b.ReportAllocs()
	i := uint64(0)
	for b.Loop() {
		user := (i % 1_000_000) * 0x9E3779B97F4A7C15
		batch := s.Lock(user, epoch)
		batch.Add(user ^ 0x1234)
		batch.Add(user ^ 0x5678)
		batch.Unlock()
		i++
	}
}
