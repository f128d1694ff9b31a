package stats

import (
	"encoding/json"
	"fmt"
	"math"
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
	return s.atRank(uint64(q*float64(s.total-1)) + 1)
}

// atRank returns the rank-th smallest duration recorded (from 1).
func (s *Snapshot) atRank(rank uint64) time.Duration {
	var seen uint64
	for i, c := range s.counts {
		seen += c
		if seen >= rank {
			return bucketValue(i)
		}
	}
	return bucketValue(histogramBuckets - 1)
}

// QuantileBounds returns the q-quantile and bounds that hold the true one
// with the confidence of z standard errors, from order statistics: the
// number of samples below the true quantile is binomial (n, q), so its
// rank lies within n·q ± z·√(n·q·(1−q)). No assumption on the shape of the
// distribution is made. When a bound's rank falls outside the data, it is
// the smallest or largest duration recorded — a wider bound — and ok is
// false: there are too few samples for the confidence asked.
func (s *Snapshot) QuantileBounds(q, z float64) (lo, mid, hi time.Duration, ok bool) {
	if s.total == 0 {
		return 0, 0, 0, false
	}
	n := float64(s.total)
	spread := z * math.Sqrt(n*q*(1-q))
	loRank, hiRank := math.Floor(n*q-spread), math.Ceil(n*q+spread)+1
	ok = loRank >= 1 && hiRank <= n
	return s.atRank(uint64(max(loRank, 1))), s.Quantile(q), s.atRank(uint64(min(hiRank, n))), ok
}

// Record counts one duration in the snapshot; unlike Histogram.Record it
// is not safe for concurrent use (simulations and tests build snapshots).
func (s *Snapshot) Record(d time.Duration) {
	s.counts[bucketOf(d)]++
	s.total++
}

// Merge adds o's counts to s.
func (s *Snapshot) Merge(o *Snapshot) {
	if o == nil {
		return
	}
	for i, c := range o.counts {
		s.counts[i] += c
	}
	s.total += o.total
}

// Add adds a snapshot's counts to the histogram (to carry counts over a
// restart).
func (h *Histogram) Add(s *Snapshot) {
	if s == nil {
		return
	}
	for i, c := range s.counts {
		if c > 0 {
			h.counts[i].Add(c)
		}
	}
}

// MarshalJSON writes the non-empty buckets as [bucket, count] pairs.
func (s *Snapshot) MarshalJSON() ([]byte, error) {
	pairs := [][2]uint64{}
	for i, c := range s.counts {
		if c > 0 {
			pairs = append(pairs, [2]uint64{uint64(i), c})
		}
	}
	return json.Marshal(pairs)
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (s *Snapshot) UnmarshalJSON(data []byte) error {
	var pairs [][2]uint64
	if err := json.Unmarshal(data, &pairs); err != nil {
		return err
	}
	*s = Snapshot{}
	for _, p := range pairs {
		if p[0] >= histogramBuckets {
			return fmt.Errorf("histogram bucket %d: there are %d", p[0], histogramBuckets)
		}
		s.counts[p[0]] += p[1]
		s.total += p[1]
	}
	return nil
}
