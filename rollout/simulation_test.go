package rollout

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/edgeflags/edgeflags/rules"
	"github.com/edgeflags/edgeflags/stats"
)

// The seeded simulations: many rollouts of one plan in simulated time,
// each step's evidence drawn as a real edge would count it, decided by
// Next every 10 simulated seconds — the statistics' false alarm rate and
// power, measured. Run with -v for the numbers; docs/ROLLOUTS.md reports
// them.

// simPlan is the plan of the issue: steps 1, 5, 25, 50, 100 of 10 minutes
// and 500 candidate requests, failure rate at most 0.5 points above the
// control's, rolled back on failure.
func simPlan(t testing.TB, latency bool) *rules.Rollout {
	yaml := `
flags:
  sim:
    rollout:
      variant: on
      steps: [1, 5, 25, 50, 100]
      step_duration: 10m
      min_requests: 500
      guards:
        - failure_rate: {max_increase: 0.5%}
`
	if latency {
		yaml += "        - latency: {percentile: 99, max_ratio: 1.25}\n"
	}
	set, err := rules.Load(rules.Source{Name: "sim.yaml", Data: []byte(yaml)})
	if err != nil {
		t.Fatal(err)
	}
	return set.Flag(0).Rollout
}

// world is what the simulated edge sees.
type world struct {
	rate                 float64 // identified requests per second
	controlFail, badFail float64 // failure rates; the candidate's is controlFail until it turns bad
	badFrom              int     // the step from which the candidate fails at badFail
	latency              bool    // record times to first byte (a 50 ms service)
	slower               time.Duration
}

type outcome struct {
	final    Status
	step     int    // where it ended
	requests uint64 // candidate requests of the step that decided the end
	took     time.Duration
}

const simTick = 10 * time.Second

func simulate(plan *rules.Rollout, w world, seed uint64) outcome {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := New(plan, start, "simulation")
	var ev Evidence
	if w.latency {
		ev.Candidate.Latency, ev.Control.Latency = new(stats.Snapshot), new(stats.Snapshot)
	}
	for now := start; now.Sub(start) < 72*time.Hour; {
		now = now.Add(simTick)
		n := int(w.rate * simTick.Seconds())
		nc := int(math.Round(float64(n) * float64(s.Share(plan)) / rules.Buckets))
		candFail := w.controlFail
		if s.Step >= w.badFrom {
			candFail = w.badFail
		}
		ev.Candidate.Requests += uint64(nc)
		ev.Candidate.Failures += binomial(rng, nc, candFail)
		ev.Control.Requests += uint64(n - nc)
		ev.Control.Failures += binomial(rng, n-nc, w.controlFail)
		if w.latency {
			for range nc {
				ev.Candidate.Latency.Record(serviceTime(rng) + w.slower)
			}
			for range n - nc {
				ev.Control.Latency.Record(serviceTime(rng))
			}
		}
		d := Next(plan, &s, ev, now)
		if d == nil {
			continue
		}
		requests := ev.Candidate.Requests
		s.Apply(plan, *d)
		if s.Status != Running {
			return outcome{final: s.Status, step: d.Step, requests: requests, took: now.Sub(start)}
		}
		ev.Candidate.Requests, ev.Candidate.Failures, ev.Control.Requests, ev.Control.Failures = 0, 0, 0, 0
		if w.latency {
			ev.Candidate.Latency, ev.Control.Latency = new(stats.Snapshot), new(stats.Snapshot)
		}
	}
	return outcome{final: s.Status, step: s.Step, took: 72 * time.Hour}
}

// serviceTime is a 50 ms service: log-normal, median 50 ms, σ 0.5 (p99
// about 160 ms).
func serviceTime(rng *rand.Rand) time.Duration {
	return time.Duration(50e6 * math.Exp(0.5*rng.NormFloat64()))
}

// binomial draws the failures among n requests failing with probability p,
// exactly, by jumping from one failure to the next (geometric gaps).
func binomial(rng *rand.Rand, n int, p float64) uint64 {
	if n <= 0 || p <= 0 {
		return 0
	}
	logq := math.Log1p(-p)
	var k uint64
	for i := 0; ; k++ {
		i += int(math.Log(1-rng.Float64())/logq) + 1
		if i > n {
			return k
		}
	}
}

// run simulates count rollouts and tallies where they ended.
func run(t *testing.T, plan *rules.Rollout, w world, count int) (map[Status]int, []outcome) {
	ends := map[Status]int{}
	var all []outcome
	for seed := range count {
		o := simulate(plan, w, uint64(seed))
		ends[o.final]++
		all = append(all, o)
	}
	t.Logf("%d rollouts: %v", count, ends)
	return ends, all
}

func median(all []outcome, keep func(outcome) bool, of func(outcome) float64) float64 {
	var v []float64
	for _, o := range all {
		if keep(o) {
			v = append(v, of(o))
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// simRollouts is 1,000 — the figure — unless -short.
func simRollouts() int {
	if testing.Short() {
		return 200
	}
	return 1000
}

func TestSimulatedHealthyRollouts(t *testing.T) {
	n := simRollouts()
	ends, all := run(t, simPlan(t, false), world{rate: 200, controlFail: 0.01, badFail: 0.01}, n)
	if ends[RolledBack] > n/100 {
		t.Errorf("%d of %d healthy rollouts rolled back, want at most 1 %%", ends[RolledBack], n)
	}
	if ends[Completed] < n*95/100 {
		t.Errorf("%d of %d healthy rollouts completed, want at least 95 %%", ends[Completed], n)
	}
	t.Logf("median time to 100 %%: %s", time.Duration(median(all, func(o outcome) bool { return o.final == Completed },
		func(o outcome) float64 { return float64(o.took) })))
}

func TestSimulatedUnhealthyRollouts(t *testing.T) {
	n := simRollouts()
	for _, from := range []int{0, 2} {
		ends, all := run(t, simPlan(t, false), world{rate: 200, controlFail: 0.01, badFail: 0.03, badFrom: from}, n)
		atOnce := 0
		for _, o := range all {
			if o.final == RolledBack && o.step == from {
				atOnce++
			}
		}
		if atOnce < n*95/100 {
			t.Errorf("candidate failing 3 %% vs 1 %% from step %d: %d of %d rolled back within that step (%v), want at least 95 %%", from, atOnce, n, ends)
		}
		t.Logf("bad from step %d: %d of %d rolled back within it; median candidate requests to decide %.0f, median time %s", from, atOnce, n,
			median(all, func(o outcome) bool { return o.final == RolledBack }, func(o outcome) float64 { return float64(o.requests) }),
			time.Duration(median(all, func(o outcome) bool { return o.final == RolledBack }, func(o outcome) float64 { return float64(o.took) })))
	}
}

func TestSimulatedLatency(t *testing.T) {
	n := simRollouts() / 10
	plan := simPlan(t, true)
	ends, _ := run(t, plan, world{rate: 200, controlFail: 0.01, badFail: 0.01, latency: true}, n)
	if ends[RolledBack] > n/100 {
		t.Errorf("%d of %d rollouts of an equally fast candidate rolled back, want at most 1 %%", ends[RolledBack], n)
	}
	ends, all := run(t, plan, world{rate: 200, controlFail: 0.01, badFail: 0.01, latency: true, slower: 100 * time.Millisecond}, n)
	if ends[RolledBack] != n {
		t.Errorf("%d of %d rollouts of a candidate 100 ms slower rolled back, want all", ends[RolledBack], n)
	}
	t.Logf("+100 ms: median candidate requests to decide %.0f", median(all, func(o outcome) bool { return o.final == RolledBack },
		func(o outcome) float64 { return float64(o.requests) }))
}

// TestSimulatedFalseAlarmsAtTheMargin: a candidate exactly at the allowed
// increase (1.5 % vs 1 %, max_increase 0.5) is the hardest case for the
// false alarm rate, and the sequential test must hold it to Alpha however
// often it looks.
func TestSimulatedFalseAlarmsAtTheMargin(t *testing.T) {
	n := simRollouts()
	ends, _ := run(t, simPlan(t, false), world{rate: 200, controlFail: 0.01, badFail: 0.015}, n)
	if limit := int(Alpha * float64(n)); ends[RolledBack] > limit {
		t.Errorf("%d of %d rollouts at the margin rolled back, want at most %d (Alpha)", ends[RolledBack], n, limit)
	}
}
