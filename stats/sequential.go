package stats

import "math"

// RateIncrease compares a candidate's failure rate with a control's,
// against an allowed increase, in a way that may be looked at as often as
// one likes: a mixture sequential probability ratio test (mSPRT, Johari,
// Pekelis and Walsh, "Always valid inference", 2017) on the difference of
// the two rates. Its p-value is "always valid": the chance that it ever
// falls below α while the candidate is within the allowed increase is at
// most α, however many looks are taken — a fixed-sample test read every
// second would cry wolf far more often.
type RateIncrease struct {
	Candidate, Control float64 // observed failure rates
	// Increase is Candidate − Control.
	Increase float64
	// Margin is the allowed increase the test is against.
	Margin float64
	// PValue is the always-valid p-value of "the increase is at most
	// Margin": small values say the candidate is worse than allowed.
	PValue float64
	// Upper is the increase plus one standard error: a pass needs it
	// within Margin, so that a step is not passed on a lucky estimate.
	Upper float64
}

// CompareRates runs the test on failures out of requests of each variant.
// Both variants need requests; with none, the result reads PValue 1.
func CompareRates(candFailures, candRequests, ctrlFailures, ctrlRequests uint64, margin float64) RateIncrease {
	r := RateIncrease{Margin: margin, PValue: 1}
	if candRequests == 0 || ctrlRequests == 0 {
		r.Upper = math.Inf(1)
		return r
	}
	r.Candidate = float64(candFailures) / float64(candRequests)
	r.Control = float64(ctrlFailures) / float64(ctrlRequests)
	r.Increase = r.Candidate - r.Control
	// The variance is estimated with one failure and one success added to
	// each variant (Agresti–Caffo), so that a variant with no failures yet
	// does not read as certain.
	v := smoothedVariance(candFailures, candRequests) + smoothedVariance(ctrlFailures, ctrlRequests)
	r.Upper = r.Increase + math.Sqrt(v)
	if excess := r.Increase - margin; excess > 0 {
		// The likelihood ratio of "the increase is margin + u" against
		// "it is margin", mixed over u ≥ 0 with a half-normal of scale τ:
		// 2·√(V/(V+τ²))·exp(τ²x²/(2V(V+τ²)))·Φ(xτ/√(V(V+τ²))), x the
		// observed excess. Any mixture makes a martingale under the
		// null; the one-sided one spends nothing on decreases.
		tau2 := mixingScale(margin)
		logLambda := math.Ln2 + 0.5*math.Log(v/(v+tau2)) + tau2*excess*excess/(2*v*(v+tau2)) +
			math.Log(normalCDF(excess*math.Sqrt(tau2/(v*(v+tau2)))))
		r.PValue = math.Min(1, math.Exp(-logLambda))
	}
	return r
}

func normalCDF(z float64) float64 { return 0.5 * math.Erfc(-z/math.Sqrt2) }

func smoothedVariance(failures, requests uint64) float64 {
	p := (float64(failures) + 1) / (float64(requests) + 2)
	return p * (1 - p) / (float64(requests) + 2)
}

// mixingScale is τ², the variance of the mixture over alternatives: the
// test is quickest for increases beyond the margin of about τ. It is tied
// to the margin (an increase twice the allowed one matters), and at least
// two percentage points, so that a broken candidate (10 % failing) is
// caught within a few hundred requests.
func mixingScale(margin float64) float64 {
	tau := math.Max(2*margin, 0.015)
	return tau * tau
}
