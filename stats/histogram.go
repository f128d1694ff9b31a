package stats

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram counts durations in log-linear buckets: 32 linear buckets in
// every power of two of microseconds, so that a quantile read back is
// within 1/64 (1.6 %) of the true value from 32 µs to 2 minutes, and exact
// below. Record computes the bucket and makes one atomic add.
type Histogram struct {
	counts [histogramBuckets]atomic.Uint64
}

const (
	subBits          = 5 // 32 buckets per power of two
	subBuckets       = 1 << subBits
	maxExponent      = 27 // 2^27 µs ≈ 134 s: larger durations count there
	histogramBuckets = (maxExponent - subBits + 2) * subBuckets
)

// Record counts one duration.
func (h *Histogram) Record(d time.Duration) {
	h.counts[bucketOf(d)].Add(1)
}

func bucketOf(d time.Duration) int {
	us := uint64(max(d, 0) / time.Microsecond)
	if us < subBuckets {
		return int(us)
	}
	shift := bits.Len64(us) - subBits - 1
	if shift > maxExponent-subBits {
		return histogramBuckets - 1
	}
	return (shift+1)*subBuckets + int(us>>shift) - subBuckets
}

// bucketValue is the middle of bucket i.
func bucketValue(i int) time.Duration {
	if i < subBuckets {
		return time.Duration(i) * time.Microsecond
	}
	shift := i/subBuckets - 1
	lower := uint64(i%subBuckets+subBuckets) << shift
	return time.Duration(lower+uint64(1)<<shift/2) * time.Microsecond
}

// Snapshot is a histogram's counts at one moment, for reading.
type Snapshot struct {
	counts [histogramBuckets]uint64
	total  uint64
}

// Snapshot copies the counts.
func (h *Histogram) Snapshot() *Snapshot {
	s := &Snapshot{}
	for i := range h.counts {
		s.counts[i] = h.counts[i].Load()
		s.total += s.counts[i]
	}
	return s
}

// Count returns how many durations were recorded.
func (s *Snapshot) Count() uint64 { return s.total }

// Quantile returns the duration below which a share q (0 to 1) of the
// recorded durations lie, or 0 when there are none.
func (s *Snapshot) Quantile(q float64) time.Duration {
	if s.total == 0 {
		return 0
	}
	rank := uint64(q*float64(s.total-1)) + 1
	var seen uint64
	for i, c := range s.counts {
		seen += c
		if seen >= rank {
			return bucketValue(i)
		}
	}
	return bucketValue(histogramBuckets - 1)
}
