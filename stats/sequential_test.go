package stats

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestCompareRates(t *testing.T) {
	for _, c := range []struct {
		name                       string
		cf, cn, kf, kn             uint64
		margin                     float64
		significant, withinByOneSE bool
	}{
		{"no data", 0, 0, 0, 0, 0.005, false, false},
		{"equal, plenty", 100, 10000, 1000, 100000, 0.005, false, true},
		{"10 % against none", 40, 400, 0, 4000, 0.005, true, false},
		{"3 % against 1 %, few", 3, 100, 100, 10000, 0.005, false, false},
		{"3 % against 1 %, plenty", 300, 10000, 1000, 100000, 0.005, true, false},
		{"better than the control", 0, 5000, 500, 50000, 0, false, true},
	} {
		r := CompareRates(c.cf, c.cn, c.kf, c.kn, c.margin)
		if got := r.PValue < 0.001; got != c.significant {
			t.Errorf("%s: p = %g, want significant %v", c.name, r.PValue, c.significant)
		}
		if got := r.Upper <= c.margin; got != c.withinByOneSE {
			t.Errorf("%s: upper %g, want within %g: %v", c.name, r.Upper, c.margin, c.withinByOneSE)
		}
		if r.PValue < 0 || r.PValue > 1 || math.IsNaN(r.PValue) {
			t.Errorf("%s: p = %g", c.name, r.PValue)
		}
	}
}

// TestQuantileBoundsCover: over many samples of a known distribution, the
// bounds at z = 2 hold the true quantile about 95 % of the time or more
// (the histogram's buckets only widen them).
func TestQuantileBoundsCover(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	trueP90 := time.Duration(50e6 * math.Exp(0.5*1.2815515655446004))
	covered, trials := 0, 400
	for range trials {
		var s Snapshot
		for range 2000 {
			s.Record(time.Duration(50e6 * math.Exp(0.5*rng.NormFloat64())))
		}
		lo, mid, hi, ok := s.QuantileBounds(0.9, 2)
		if !ok || lo > mid || mid > hi {
			t.Fatalf("bounds %s ≤ %s ≤ %s (ok %v)", lo, mid, hi, ok)
		}
		if lo <= trueP90 && trueP90 <= hi {
			covered++
		}
	}
	if rate := float64(covered) / float64(trials); rate < 0.93 {
		t.Errorf("the bounds held the true p90 in %.1f %% of samples, want about 95 %%", 100*rate)
	}
	var few Snapshot
	few.Record(time.Millisecond)
	if _, _, _, ok := few.QuantileBounds(0.99, 3.5); ok {
		t.Error("one sample cannot bound a p99")
	}
}

func TestSnapshotJSONRoundTrip(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{0, time.Microsecond, 3 * time.Millisecond, 3 * time.Millisecond, time.Minute, time.Hour} {
		h.Record(d)
	}
	s := h.Snapshot()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back Snapshot
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back != *s {
		t.Fatalf("%s did not read back the same", b)
	}
	var carried Histogram
	carried.Add(&back)
	if carried.Snapshot().Count() != 6 {
		t.Fatal("Add lost counts")
	}
	if err := json.Unmarshal([]byte(`[[99999, 1]]`), &back); err == nil {
		t.Fatal("a bucket past the end was read")
	}
}
