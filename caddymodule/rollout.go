package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/edgeflags/edgeflags/rollout"
	"github.com/edgeflags/edgeflags/rules"
	"github.com/edgeflags/edgeflags/stats"
)

// Guarded rollouts, the glue: the handler counts each step's requests by
// arm (the requests the rollout's split decided, candidate or control);
// a watcher reads those counts every rolloutTick, asks package rollout
// what to do, and applies its decisions as changes of the runtime layer —
// the admin API's code path, audited with the actor "rollout". The state
// (step, since when, the step's counts, the decisions) lives in the
// runtime layer, so it survives restarts and config reloads.

var (
	metricRolloutDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "feature_flags", Name: "rollout_decisions_total",
		Help: "Decisions of guarded rollouts: by the rollout itself (by=rollout) or a person (by=person).",
	}, []string{"flag", "action", "by"})
	metricRolloutPercent = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "feature_flags", Name: "rollout_candidate_percent",
		Help: "The candidate's share of identified users in a guarded rollout, in percent.",
	}, []string{"flag"})
)

// rolloutTick is how often rollouts are judged; rolloutSaveInterval how
// often a running step's counts are saved to the state file, so that a
// crash loses at most that much evidence.
var (
	rolloutTick         = 250 * time.Millisecond
	rolloutSaveInterval = 10 * time.Second
)

// stepArms are one rollout step's counts by arm: 0 the candidate, 1 the
// control. They outlive config reloads; a process that starts seeds them
// with the counts its state file saved.
type stepArms struct {
	arm [2]armCell
}

type armCell struct {
	requests, failures atomic.Uint64
	ttfb               stats.Histogram
}

var (
	stepArmsMu sync.Mutex
	stepArmsBy = map[string]*stepArms{} // by stepKey
)

// stepKey names one step of one run of a flag's rollout.
func stepKey(flag string, st *rollout.State) string {
	return flag + "\x00" + st.Plan + "\x00" + strconv.Itoa(st.Step) + "\x00" + strconv.FormatInt(st.StepStarted.UnixNano(), 10)
}

// armsFor returns the counts of st's current step, and forgets the
// flag's earlier steps.
func armsFor(flag string, st *rollout.State) *stepArms {
	key := stepKey(flag, st)
	stepArmsMu.Lock()
	defer stepArmsMu.Unlock()
	if a := stepArmsBy[key]; a != nil {
		return a
	}
	for k := range stepArmsBy {
		if strings.HasPrefix(k, flag+"\x00") {
			delete(stepArmsBy, k)
		}
	}
	a := &stepArms{}
	for i, saved := range []rollout.Arm{st.Evidence.Candidate, st.Evidence.Control} {
		a.arm[i].requests.Store(saved.Requests)
		a.arm[i].failures.Store(saved.Failures)
		a.arm[i].ttfb.Add(saved.Latency)
	}
	stepArmsBy[key] = a
	return a
}

func (c *armCell) record(failed bool, ttfb time.Duration) {
	c.requests.Add(1)
	if failed {
		c.failures.Add(1)
	}
	c.ttfb.Record(ttfb)
}

// evidence reads the step's counts.
func (a *stepArms) evidence() rollout.Evidence {
	read := func(c *armCell) rollout.Arm {
		return rollout.Arm{Requests: c.requests.Load(), Failures: c.failures.Load(), Latency: c.ttfb.Snapshot()}
	}
	return rollout.Evidence{Candidate: read(&a.arm[0]), Control: read(&a.arm[1])}
}

// withRolloutShare returns f with the candidate's share st gives, when st
// runs f's plan; a state of another plan is of no account (the watcher
// starts the new plan afresh).
func withRolloutShare(f *rules.Flag, st *rollout.State) *rules.Flag {
	if st.Plan != rollout.Fingerprint(f.Rollout) {
		return f
	}
	c := *f
	share := st.Share(f.Rollout.WithDefaults())
	c.RolloutShare = &share
	return &c
}

// watchRollouts judges the running rollouts every rolloutTick until stop
// is closed, and saves their counts before it closes done.
func (a *App) watchRollouts(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(rolloutTick)
	defer t.Stop()
	saved := time.Now()
	for {
		select {
		case <-stop:
			a.saveRolloutEvidence()
			return
		case <-t.C:
			a.checkRollouts(time.Now().UTC())
			if time.Since(saved) >= rolloutSaveInterval {
				a.saveRolloutEvidence()
				saved = time.Now()
			}
		}
	}
}

// checkRollouts starts the rollouts of new plans, pauses those whose flag
// is killed, and applies what package rollout decides for the others.
func (a *App) checkRollouts(now time.Time) {
	set := a.set.Load()
	entries := a.loader.layer.snapshot()
	for i := range set.Len() {
		f := set.Flag(i)
		if f.Rollout == nil {
			continue
		}
		metricRolloutPercent.WithLabelValues(f.Key).Set(float64(f.CandidateShare()) / 100)
		st := entries[f.Key].Rollout
		switch {
		case st == nil || st.Plan != rollout.Fingerprint(f.Rollout):
			reason := "a new rollout plan: it starts at its first step"
			if st != nil {
				reason = "the rollout plan changed: the rollout starts again at its first step"
			}
			next := rollout.New(f.Rollout, now, reason)
			a.decide(f, st, next.Decisions[0], &next)
		case st.Status == rollout.Running && !*f.Enabled:
			d := rollout.Decision{At: now, Actor: rollout.Actor, Action: rollout.Pause, Step: st.Step, Reason: "the kill switch is on: the rollout waits for a person to resume it"}
			d.FromPercent = float64(st.Share(f.Rollout)) / 100
			d.ToPercent = d.FromPercent
			a.decide(f, st, d, nil)
		case st.Status == rollout.Running:
			if d := rollout.Next(f.Rollout, st, a.stepEvidence(f.Key, st), now); d != nil {
				a.decide(f, st, *d, nil)
			}
		}
	}
}

// decide applies a decision taken on the state seen, through the runtime
// layer; it is dropped when the state changed meanwhile (a person's
// command came first). A new state, when given, replaces the old one
// instead of the decision being applied to it.
func (a *App) decide(f *rules.Flag, seen *rollout.State, d rollout.Decision, replace *rollout.State) {
	c := Change{Flag: f.Key, Action: "rollout_" + string(d.Action), Actor: d.Actor, Reason: d.Reason, Decision: &d}
	_, err := a.change(c, func(e runtimeEntry, exists bool, set *rules.Set) (runtimeEntry, bool, error) {
		if !sameState(e.Rollout, seen) {
			return e, exists, errStaleDecision
		}
		if replace != nil {
			e.Rollout = replace
			return e, true, nil
		}
		st := *e.Rollout
		st.Evidence = a.ownEvidence(f.Key, &st)
		st.Apply(f.Rollout, d)
		e.Rollout = &st
		return e, true, nil
	})
	log := a.logger.Named("rollout")
	switch {
	case errors.Is(err, errStaleDecision):
		return
	case err != nil:
		log.Error("a rollout decision could not be applied: the rollout keeps its state", zap.String("flag", f.Key),
			zap.String("action", string(d.Action)), zap.Error(err))
		return
	}
	metricRolloutDecisions.WithLabelValues(f.Key, string(d.Action), byOf(d.Actor)).Inc()
	metricRolloutPercent.WithLabelValues(f.Key).Set(d.ToPercent)
	fields := []zap.Field{zap.String("flag", f.Key), zap.String("action", string(d.Action)), zap.Float64("from_percent", d.FromPercent),
		zap.Float64("to_percent", d.ToPercent), zap.String("reason", d.Reason), zap.Reflect("guards", d.Guards)}
	if d.Action == rollout.Rollback || d.Action == rollout.Pause {
		log.Warn("rollout decision", fields...)
	} else {
		log.Info("rollout decision", fields...)
	}
}

var errStaleDecision = errors.New("the rollout changed meanwhile")

func byOf(actor string) string {
	if actor == rollout.Actor {
		return "rollout"
	}
	return "person"
}

func sameState(a, b *rollout.State) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Plan == b.Plan && a.Status == b.Status && a.Step == b.Step && a.StepStarted.Equal(b.StepStarted)
}

// ownEvidence is what a state keeps of a step's counts, to carry them over
// a restart: this node's — but none in a fleet, where each node's counts
// are in its own key.
func (a *App) ownEvidence(flag string, st *rollout.State) rollout.Evidence {
	if a.fleet != nil {
		return rollout.Evidence{}
	}
	return armsFor(flag, st).evidence()
}

// saveRolloutEvidence writes the running steps' counts to the state file
// (a fleet's nodes publish theirs in their own keys).
func (a *App) saveRolloutEvidence() {
	if a.fleet != nil {
		return
	}
	a.loader.mu.Lock() // as every write of the layer: a fleet's poll reads under it
	defer a.loader.mu.Unlock()
	l := a.loader.layer
	for key, e := range l.snapshot() {
		if e.Rollout == nil || e.Rollout.Status != rollout.Running {
			continue
		}
		seen := e.Rollout
		ev := armsFor(key, seen).evidence()
		err := l.update(key, func(e runtimeEntry, ok bool) (runtimeEntry, bool) {
			if ok && sameState(e.Rollout, seen) {
				st := *e.Rollout
				st.Evidence = ev
				e.Rollout = &st
			}
			return e, ok
		}, func(map[string]runtimeEntry) error { return nil }, nil)
		if err != nil {
			a.logger.Named("rollout").Warn("saving a rollout step's counts", zap.String("flag", key), zap.Error(err))
		}
	}
}

// serveRolloutCommand is a person's pause, resume, advance or abort.
func (a *App) serveRolloutCommand(w http.ResponseWriter, r *http.Request, key, command string) error {
	switch rollout.Action(command) {
	case rollout.Pause, rollout.Resume, rollout.Advance, rollout.Abort:
	default:
		return apiError(http.StatusNotFound, "no rollout command %q: use pause, resume, advance or abort", command)
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	return a.serveChange(w, r, key, "rollout_"+command, body, a.rolloutCommand)
}

// rolloutCommand is a person's pause, resume, advance or abort (c.Action
// rollout_<command>) of flag c.Flag's rollout.
func (a *App) rolloutCommand(c Change) (Change, error) {
	key, command, actor, reason := c.Flag, strings.TrimPrefix(c.Action, "rollout_"), c.Actor, c.Reason
	var d rollout.Decision // the audit record points to it: fn fills it in before the change is stored
	c.Decision = &d
	c, err := a.change(c,
		func(e runtimeEntry, exists bool, set *rules.Set) (runtimeEntry, bool, error) {
			i, ok := set.Index(key)
			if !ok {
				return e, exists, apiError(http.StatusNotFound, "no flag %q", key)
			}
			plan := set.Flag(i).Rollout
			if plan == nil || e.Rollout == nil || e.Rollout.Plan != rollout.Fingerprint(plan) {
				return e, exists, apiError(http.StatusConflict, "flag %q has no running rollout: give it a rollout plan in its definition", key)
			}
			st := *e.Rollout
			ev := a.stepEvidence(key, &st)
			var err error
			if d, err = rollout.Command(plan, &st, rollout.Action(command), actor, reason, ev, time.Now().UTC()); err != nil {
				return e, exists, apiError(http.StatusConflict, "%v", err)
			}
			st.Evidence = a.ownEvidence(key, &st)
			st.Apply(plan, d)
			e.Rollout = &st
			return e, true, nil
		})
	if err == nil {
		metricRolloutDecisions.WithLabelValues(key, command, "person").Inc()
	}
	return c, err
}

// rolloutReport is a rollout as the admin API shows it.
type rolloutReport struct {
	Status    rollout.Status `json:"status"`
	Candidate string         `json:"candidate"`
	Control   string         `json:"control"`
	// Step counts from 1; Percent is the candidate's share now.
	Step        int       `json:"step"`
	Steps       []float64 `json:"steps"`
	Percent     float64   `json:"percent"`
	StepStarted time.Time `json:"step_started"`
	// Waiting says what the step waits for before it can advance.
	Waiting string `json:"waiting,omitempty"`
	// Evidence is the step's counts, and Guards their verdicts now.
	Evidence  rollout.Evidence      `json:"evidence"`
	Guards    []rollout.GuardResult `json:"guards"`
	Decisions []rollout.Decision    `json:"decisions"`
}

// rolloutStatus returns flag i's rollout, or nil when it has none yet.
func (a *App) rolloutStatus(set *rules.Set, i int, entries map[string]runtimeEntry) *rolloutReport {
	f := set.Flag(i)
	st := entries[f.Key].Rollout
	if f.Rollout == nil || st == nil || st.Plan != rollout.Fingerprint(f.Rollout) {
		return nil
	}
	plan := f.Rollout
	ev := a.stepEvidence(f.Key, st)
	r := &rolloutReport{Status: st.Status, Candidate: plan.Variant, Control: f.OffVariant, Step: st.Step + 1,
		Percent: float64(st.Share(plan)) / 100, StepStarted: st.StepStarted, Guards: rollout.Judge(plan, ev, rollout.StepAlpha(plan)),
		Evidence: rollout.Evidence{Candidate: rollout.Arm{Requests: ev.Candidate.Requests, Failures: ev.Candidate.Failures},
			Control: rollout.Arm{Requests: ev.Control.Requests, Failures: ev.Control.Failures}},
		Decisions: st.Decisions}
	for _, bp := range plan.Steps {
		r.Steps = append(r.Steps, float64(bp)/100)
	}
	if st.Status == rollout.Running {
		var waits []string
		if left := plan.StepDuration - time.Since(st.StepStarted); left > 0 {
			waits = append(waits, fmt.Sprintf("%s more of step_duration", left.Round(time.Second)))
		}
		if n := ev.Candidate.Requests; n < uint64(plan.MinRequests) {
			waits = append(waits, fmt.Sprintf("%d more candidate requests (min_requests %d)", uint64(plan.MinRequests)-n, plan.MinRequests))
		}
		r.Waiting = strings.Join(waits, " and ")
	}
	return r
}
