package stats

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// Every duration from 1 ms to 60 s reads back within 2 % (the bound is
// 1/64); below 32 µs exactly.
func TestHistogramRelativeError(t *testing.T) {
	worst := 0.0
	for us := int64(32); us <= 60_000_000; us = us*101/100 + 1 {
		d := time.Duration(us) * time.Microsecond
		got := bucketValue(bucketOf(d))
		rel := math.Abs(float64(got-d)) / float64(d)
		worst = max(worst, rel)
		if rel > 1.0/64 {
			t.Fatalf("%v reads back as %v: %.2f %% off", d, got, 100*rel)
		}
	}
	for us := range 32 {
		d := time.Duration(us) * time.Microsecond
		if got := bucketValue(bucketOf(d)); got != d {
			t.Fatalf("%v reads back as %v", d, got)
		}
	}
	if got := bucketOf(10 * time.Minute); got != histogramBuckets-1 {
		t.Fatalf("10 minutes in bucket %d, want the last", got)
	}
	t.Logf("worst relative error from 32 µs to 60 s: %.3f %%", 100*worst)
}

// Quantiles of a seeded log-normal sample against the sorted sample.
func TestHistogramQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	var h Histogram
	var sample []time.Duration
	for range 100_000 {
		d := time.Duration(math.Exp(rng.NormFloat64()*0.8 + math.Log(50e6))) // around 50 ms
		h.Record(d)
		sample = append(sample, d)
	}
	slices.Sort(sample)
	snap := h.Snapshot()
	if snap.Count() != 100_000 {
		t.Fatalf("count %d", snap.Count())
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := sample[int(q*float64(len(sample)-1))]
		got := snap.Quantile(q)
		if rel := math.Abs(float64(got-want)) / float64(want); rel > 0.02 {
			t.Errorf("p%g: %v, want %v (%.2f %% off)", 100*q, got, want, 100*rel)
		}
	}
	if (&Histogram{}).Snapshot().Quantile(0.99) != 0 {
		t.Error("an empty histogram's quantile must be 0")
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	d := 37 * time.Millisecond
	for b.Loop() {
		h.Record(d)
		d += 13 * time.Microsecond
	}
}
