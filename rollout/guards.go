package rollout

import (
	"fmt"
	"time"

	"github.com/edgeflags/edgeflags/rules"
	"github.com/edgeflags/edgeflags/stats"
)

// Arm is what one side of a step saw: the candidate's users, or the
// control's.
type Arm struct {
	Requests uint64          `json:"requests"`
	Failures uint64          `json:"failures"`
	Latency  *stats.Snapshot `json:"latency,omitempty"` // time to first byte
}

// Evidence is a step's two arms.
type Evidence struct {
	Candidate Arm `json:"candidate"`
	Control   Arm `json:"control"`
}

// Verdict is a guard's word on a step.
type Verdict string

// The verdicts.
const (
	// Pass: the candidate is within the guard, with the evidence required.
	Pass Verdict = "pass"
	// Fail: the candidate is beyond the guard, significantly.
	Fail Verdict = "fail"
	// Inconclusive: neither yet; the step holds and gathers more.
	Inconclusive Verdict = "inconclusive"
)

// GuardResult is one guard's verdict with the numbers behind it.
type GuardResult struct {
	Guard   string  `json:"guard"` // failure_rate, latency_p99 …
	Verdict Verdict `json:"verdict"`
	// Candidate and Control are the compared values: failure rates in
	// percent, or latencies in milliseconds.
	Candidate float64 `json:"candidate"`
	Control   float64 `json:"control"`
	// Observed is the increase in percentage points, or the ratio.
	Observed float64 `json:"observed"`
	// Threshold is the allowed increase, or ratio.
	Threshold float64 `json:"threshold"`
	// PValue and Alpha are the sequential test's, for a failure rate: it
	// fails when PValue < Alpha.
	PValue float64 `json:"p_value,omitempty"`
	Alpha  float64 `json:"alpha,omitempty"`
	// Detail says it in words.
	Detail string `json:"detail"`
}

// Alpha is a rollout's false alarm budget: the chance that a candidate
// within every failure-rate guard is ever failed over all its steps'
// looks. Each judged step spends an equal share of it (Bonferroni over the
// steps; within a step, the sequential test is valid at any look).
const Alpha = 0.01

// The latency guard compares order-statistic bounds of the two
// percentiles: it fails when even the candidate's lower bound is beyond
// max_ratio times the control's upper bound, each at latencyFailZ standard
// errors — a margin wide enough for the many looks of a step, as the
// seeded simulation shows — and passes when the candidate's upper bound at
// one standard error is within max_ratio times the control's estimate.
// Differences below latencyFloor are never beyond a guard, whatever the
// ratio: a 0.3 ms answer is not "300 times slower" than a 1 µs one in any
// sense a user feels, and the histograms' resolution is 1 µs.
const (
	latencyFailZ = 3.5
	passZ        = 1
	latencyFloor = time.Millisecond
)

// Judge returns each guard's verdict on a step's evidence; alpha is the
// step's share of Alpha.
func Judge(plan *rules.Rollout, ev Evidence, alpha float64) []GuardResult {
	out := make([]GuardResult, 0, len(plan.Guards))
	for _, g := range plan.Guards {
		switch {
		case g.FailureRate != nil:
			out = append(out, judgeFailureRate(g.FailureRate, ev, alpha))
		case g.Latency != nil:
			out = append(out, judgeLatency(g.Latency, ev))
		}
	}
	return out
}

func judgeFailureRate(g *rules.FailureRateGuard, ev Evidence, alpha float64) GuardResult {
	margin := float64(g.MaxIncrease) / 10000
	c, k := ev.Candidate, ev.Control
	t := stats.CompareRates(c.Failures, c.Requests, k.Failures, k.Requests, margin)
	r := GuardResult{Guard: "failure_rate", Candidate: 100 * t.Candidate, Control: 100 * t.Control, Observed: 100 * t.Increase,
		Threshold: 100 * margin, PValue: t.PValue, Alpha: alpha}
	words := fmt.Sprintf("candidate %.2f %% (%d of %d) vs control %.2f %% (%d of %d): %+.2f points, %.2f allowed",
		r.Candidate, c.Failures, c.Requests, r.Control, k.Failures, k.Requests, r.Observed, r.Threshold)
	switch {
	case t.PValue < alpha:
		r.Verdict = Fail
		r.Detail = fmt.Sprintf("%s; beyond it with always-valid p = %.2g < %.2g", words, t.PValue, alpha)
	case t.Upper <= margin:
		r.Verdict = Pass
		r.Detail = fmt.Sprintf("%s; within it by one standard error (%+.2f)", words, 100*t.Upper)
	default:
		r.Verdict = Inconclusive
		r.Detail = fmt.Sprintf("%s; not yet within it by one standard error (%+.2f), nor beyond it (p = %.2g, fails below %.2g)", words, 100*t.Upper, t.PValue, alpha)
	}
	return r
}

func judgeLatency(g *rules.LatencyGuard, ev Evidence) GuardResult {
	q := g.Percentile / 100
	name := "latency_p" + fmt.Sprint(g.Percentile)
	r := GuardResult{Guard: name, Threshold: g.MaxRatio, Verdict: Inconclusive}
	c, k := ev.Candidate.Latency, ev.Control.Latency
	if c == nil || k == nil || c.Count() == 0 || k.Count() == 0 {
		r.Detail = "no latencies yet on both sides"
		return r
	}
	cLo, cMid, _, _ := c.QuantileBounds(q, latencyFailZ)
	_, _, cHi, cOK := c.QuantileBounds(q, passZ)
	_, kMid, kHi, _ := k.QuantileBounds(q, latencyFailZ)
	r.Candidate, r.Control = ms(cMid), ms(kMid)
	if kMid > 0 {
		r.Observed = float64(cMid) / float64(kMid)
	}
	limit := func(d time.Duration) time.Duration { return max(time.Duration(g.MaxRatio*float64(d)), d+latencyFloor) }
	words := fmt.Sprintf("p%v candidate %.1f ms vs control %.1f ms: ratio %.2f, %.2f allowed", g.Percentile, r.Candidate, r.Control, r.Observed, g.MaxRatio)
	switch {
	case cLo > limit(kHi):
		r.Verdict = Fail
		r.Detail = fmt.Sprintf("%s; beyond it: the candidate's lower bound %.1f ms > %.2f × the control's upper bound %.1f ms", words, ms(cLo), g.MaxRatio, ms(kHi))
	case cOK && cHi <= limit(kMid):
		r.Verdict = Pass
		r.Detail = fmt.Sprintf("%s; within it: the candidate's upper bound %.1f ms ≤ %.2f × the control's %.1f ms", words, ms(cHi), g.MaxRatio, ms(kMid))
	case !cOK:
		r.Detail = fmt.Sprintf("%s; too few candidate samples (%d) to bound its p%v", words, c.Count(), g.Percentile)
	default:
		r.Detail = fmt.Sprintf("%s; not yet within it (the candidate's upper bound %.1f ms), nor beyond it", words, ms(cHi))
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
