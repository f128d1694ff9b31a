package stats

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The survival function against its closed forms for 1 to 4 degrees of
// freedom, over the range a sample ratio test meets.
func TestChiSquareSurvivalClosedForms(t *testing.T) {
	closed := map[int]func(x float64) float64{
		1: func(x float64) float64 { return math.Erfc(math.Sqrt(x / 2)) },
		2: func(x float64) float64 { return math.Exp(-x / 2) },
		3: func(x float64) float64 {
			return math.Erfc(math.Sqrt(x/2)) + math.Sqrt(2*x/math.Pi)*math.Exp(-x/2)
		},
		4: func(x float64) float64 { return math.Exp(-x/2) * (1 + x/2) },
	}
	for k, want := range closed {
		for _, x := range []float64{1e-6, 0.01, 0.5, 1, 2, 3.84, 5, 10.83, 20, 50, 100, 300} {
			got, w := ChiSquareSurvival(x, k), want(x)
			if math.Abs(got-w) > 1e-12 && math.Abs(got-w)/w > 1e-9 {
				t.Errorf("k=%d x=%g: %.15g, want %.15g", k, x, got, w)
			}
		}
	}
	// Textbook critical values.
	for _, c := range []struct {
		x    float64
		k    int
		want float64
	}{{3.841458820694124, 1, 0.05}, {10.827566170662733, 1, 0.001}, {16.918977604620448, 9, 0.05}, {29.58829844507442, 10, 0.001}} {
		if got := ChiSquareSurvival(c.x, c.k); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("Q(%g, k=%d) = %g, want %g", c.x, c.k, got, c.want)
		}
	}
}

func TestSampleRatioTest(t *testing.T) {
	for _, c := range []struct {
		name     string
		observed []int64
		weights  []float64
		enough   bool
		pBelow   float64 // P must be below this…
		pAbove   float64 // …and above this
	}{
		{"exact", []int64{10000, 10000}, []float64{50, 50}, true, 1.0001, 0.999},
		{"90/10 as configured", []int64{9020, 980}, []float64{9000, 1000}, true, 1, 0.01},
		{"1% off over 20k", []int64{10200, 9800}, []float64{1, 1}, true, 0.01, 0.001},
		{"a broken split", []int64{10500, 9500}, []float64{1, 1}, true, 1e-10, 0},
		{"a variant with no weight has users", []int64{10, 0, 3}, []float64{1, 1, 0}, true, 1e-300, -1},
		{"a variant with no weight and no users", []int64{10, 12, 0}, []float64{1, 1, 0}, true, 1.0001, 0.5},
		{"too few users", []int64{3, 1}, []float64{1, 1}, false, 1.0001, 0.999},
		{"nobody", []int64{0, 0}, []float64{1, 1}, false, 1.0001, 0.999},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := SampleRatioTest(c.observed, c.weights)
			if res.Enough != c.enough || res.P >= c.pBelow || res.P <= c.pAbove {
				t.Errorf("%+v: want enough=%v and %g < P < %g", res, c.enough, c.pAbove, c.pBelow)
			}
		})
	}
}

// Under a split that works, P is uniform: a test at level α fires in an α
// share of experiments. A seeded simulation of 2,000 experiments of 20,000
// users each, 50/50 and 10/30/60.
func TestSampleRatioTestIsCalibrated(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, weights := range [][]float64{{50, 50}, {10, 30, 60}} {
		fired05, fired001 := 0, 0
		const experiments = 2000
		for range experiments {
			observed := make([]int64, len(weights))
			for range 20000 {
				u := rng.Float64() * 100
				for i, w := range weights {
					if u < w || i == len(weights)-1 {
						observed[i]++
						break
					}
					u -= w
				}
			}
			p := SampleRatioTest(observed, weights).P
			if p < 0.05 {
				fired05++
			}
			if p < 0.001 {
				fired001++
			}
		}
		// Binomial(2000, 0.05): mean 100, sd 9.7; Binomial(2000, 0.001): mean 2.
		if fired05 < 65 || fired05 > 135 || fired001 > 9 {
			t.Errorf("weights %v: %d experiments of %d below 0.05 (want ≈100), %d below 0.001 (want ≈2)", weights, fired05, experiments, fired001)
		}
	}
}
