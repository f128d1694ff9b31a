package stats

import "math"

// SampleRatio is the result of a sample ratio mismatch test: are the users
// observed per variant what the configured weights lead to expect?
type SampleRatio struct {
	// ChiSquare is Pearson's statistic, with DegreesOfFreedom.
	ChiSquare        float64
	DegreesOfFreedom int
	// P is the chance of a mismatch at least this large if the split
	// works as configured. Small is bad: experimenters stop at 0.001.
	P float64
	// Enough is false when some variant expects fewer than MinExpected
	// users: the chi-square approximation does not hold yet, and P is 1.
	Enough bool
}

// MinExpected is the fewest users a variant must expect before the test
// says anything (the usual rule for Pearson's approximation).
const MinExpected = 5

// SampleRatioTest compares observed counts per variant with weights (any
// scale; only their ratios count). A variant with no weight expects no
// users: one observed there is a certain mismatch (P = 0).
func SampleRatioTest(observed []int64, weights []float64) SampleRatio {
	var n, total float64
	for i, o := range observed {
		n += float64(o)
		total += weights[i]
	}
	res := SampleRatio{P: 1, Enough: true}
	if total <= 0 || n == 0 {
		res.Enough = false
		return res
	}
	cells := 0
	for i, o := range observed {
		expected := n * weights[i] / total
		if expected == 0 {
			if o > 0 {
				res.ChiSquare, res.P = math.Inf(1), 0
				return res
			}
			continue
		}
		if expected < MinExpected {
			res.Enough = false
		}
		d := float64(o) - expected
		res.ChiSquare += d * d / expected
		cells++
	}
	res.DegreesOfFreedom = cells - 1
	if !res.Enough || res.DegreesOfFreedom < 1 {
		res.Enough = res.Enough && res.DegreesOfFreedom >= 1
		return res
	}
	res.P = ChiSquareSurvival(res.ChiSquare, res.DegreesOfFreedom)
	return res
}

// ChiSquareSurvival returns P(X ≥ x) for X chi-square distributed with k
// degrees of freedom: the upper regularized incomplete gamma Q(k/2, x/2).
func ChiSquareSurvival(x float64, k int) float64 {
	if x <= 0 {
		return 1
	}
	if math.IsInf(x, 1) {
		return 0
	}
	return upperGamma(float64(k)/2, x/2)
}

// upperGamma is Q(a, x), by the series for x < a+1 and by Lentz's
// continued fraction beyond (Numerical Recipes §6.2), to double precision.
func upperGamma(a, x float64) float64 {
	lg, _ := math.Lgamma(a)
	front := math.Exp(-x + a*math.Log(x) - lg)
	if x < a+1 {
		sum, term := 1/a, 1/a
		for n := 1; n < 1000; n++ {
			term *= x / (a + float64(n))
			sum += term
			if math.Abs(term) < math.Abs(sum)*1e-15 {
				break
			}
		}
		return max(0, 1-sum*front)
	}
	const tiny = 1e-300
	b := x + 1 - a
	c := 1 / tiny
	d := 1 / b
	h := d
	for i := 1; i < 1000; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		delta := d * c
		h *= delta
		if math.Abs(delta-1) < 1e-15 {
			break
		}
	}
	return h * front
}
