// Package rollout runs guarded rollouts, with no knowledge of HTTP or
// Caddy: a rollout's state (its step, since when, the step's evidence and
// every decision), the step machine that advances, rolls back or pauses it
// from that evidence, and the guards that judge a step by comparing the
// candidate's responses with the control's (see guards.go).
//
// The caller keeps the State (edgeflags keeps it in the runtime layer),
// counts each step's Evidence, and calls Next every so often; a person's
// commands go through Command. Both return a Decision, which Apply makes
// part of the state.
package rollout

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/edgeflags/edgeflags/rules"
	"github.com/edgeflags/edgeflags/stats"
)

// Status is where a rollout is.
type Status string

// The statuses.
const (
	Running    Status = "running"     // judged and advanced by itself
	Paused     Status = "paused"      // keeps its share until a person acts
	RolledBack Status = "rolled_back" // a guard failed: the candidate has 0 %
	Aborted    Status = "aborted"     // a person rolled it back
	Completed  Status = "completed"   // at its last step for good
)

// Action is what a decision does.
type Action string

// The actions.
const (
	Start    Action = "start"    // a new plan begins at its first step
	Advance  Action = "advance"  // to the next step
	Complete Action = "complete" // the last step passed (or was reached at 100 %)
	Rollback Action = "rollback" // a guard failed: the candidate to 0 %
	Pause    Action = "pause"    // stop advancing, keep the share
	Resume   Action = "resume"   // run again: a paused step afresh, a rolled-back rollout from its first step
	Abort    Action = "abort"    // a person's rollback
)

// Actor is the actor of the decisions a rollout takes by itself.
const Actor = "rollout"

// MaxDecisions bounds the decisions a State keeps (the audit log keeps all).
const MaxDecisions = 50

// State is one rollout's progress.
type State struct {
	// Plan is the Fingerprint of the plan it runs: a new plan restarts it.
	Plan        string    `json:"plan"`
	Status      Status    `json:"status"`
	Step        int       `json:"step"` // index into the plan's steps
	StepStarted time.Time `json:"step_started"`
	// Evidence is the current step's, as last saved by the caller.
	Evidence  Evidence   `json:"evidence"`
	Decisions []Decision `json:"decisions"` // oldest first
}

// Decision is one change of a rollout's state, with the numbers behind it.
type Decision struct {
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	Action Action    `json:"action"`
	// Step is the step the decision was taken at; From and To are the
	// candidate's percentages before and after.
	Step        int     `json:"step"`
	FromPercent float64 `json:"from_percent"`
	ToPercent   float64 `json:"to_percent"`
	Reason      string  `json:"reason"`
	// Candidate and Control are the step's counts when it was decided.
	Candidate Arm           `json:"candidate"`
	Control   Arm           `json:"control"`
	Guards    []GuardResult `json:"guards,omitempty"`
}

// Fingerprint identifies a plan, its defaults applied (a default written
// out is no change): editing the plan changes it, editing anything else of
// the flag does not.
func Fingerprint(plan *rules.Rollout) string {
	b, _ := json.Marshal(plan.WithDefaults()) // a plan always marshals
	return fmt.Sprintf("%016x", xxh3.Hash(b))
}

// New returns the state of a plan that starts now.
func New(plan *rules.Rollout, now time.Time, reason string) State {
	s := State{Plan: Fingerprint(plan)}
	s.Apply(plan, Decision{At: now, Actor: Actor, Action: Start, ToPercent: percent(plan.Steps[0]), Reason: reason})
	return s
}

// Share is the candidate's share in basis points.
func (s *State) Share(plan *rules.Rollout) int {
	if s.Status == RolledBack || s.Status == Aborted {
		return 0
	}
	return plan.Steps[s.step(plan)]
}

// step is the state's step, within the plan even if a hand-edited state
// file says otherwise.
func (s *State) step(plan *rules.Rollout) int { return min(max(s.Step, 0), len(plan.Steps)-1) }

// StepAlpha is the share of Alpha each judged step spends: steps at 100 %
// have no control to compare with, and are not judged.
func StepAlpha(plan *rules.Rollout) float64 {
	judged := 0
	for _, bp := range plan.Steps {
		if bp < rules.Buckets {
			judged++
		}
	}
	return Alpha / float64(max(judged, 1))
}

// Next is the rollout's own decision on the current step's evidence, or
// nil when it carries on as it is. A guard that fails decides at once, at
// any look; a step advances only once it has run step_duration and seen
// min_requests candidate requests, and every guard passes; a step that is
// still inconclusive at max_step_duration pauses for a person. A step
// without traffic only waits: no data is never a failure.
func Next(plan *rules.Rollout, s *State, ev Evidence, now time.Time) *Decision {
	if s.Status != Running {
		return nil
	}
	share := s.Share(plan)
	d := &Decision{At: now, Actor: Actor, Step: s.Step, FromPercent: percent(share), ToPercent: percent(share),
		Candidate: ev.Candidate.counts(), Control: ev.Control.counts()}
	if share >= rules.Buckets {
		d.Action, d.Reason = Complete, "the candidate has 100 %"
		return d
	}
	d.Guards = Judge(plan, ev, StepAlpha(plan))
	for _, g := range d.Guards {
		if g.Verdict == Fail {
			d.Action, d.Reason = Pause, fmt.Sprintf("guard %s failed: %s", g.Guard, g.Detail)
			if plan.OnFailure == rules.OnFailureRollback {
				d.Action, d.ToPercent = Rollback, 0
			}
			return d
		}
	}
	elapsed := now.Sub(s.StepStarted)
	if elapsed < plan.StepDuration || ev.Candidate.Requests < uint64(plan.MinRequests) {
		return nil
	}
	inconclusive := ""
	for _, g := range d.Guards {
		if g.Verdict != Pass {
			inconclusive += fmt.Sprintf("; %s: %s", g.Guard, g.Detail)
		}
	}
	switch {
	case inconclusive == "" && s.step(plan) == len(plan.Steps)-1:
		d.Action, d.Reason = Complete, fmt.Sprintf("the last step passed every guard after %s and %d candidate requests", elapsed.Round(time.Second), ev.Candidate.Requests)
	case inconclusive == "":
		d.Action, d.ToPercent = Advance, percent(plan.Steps[s.step(plan)+1])
		d.Reason = fmt.Sprintf("every guard passed after %s and %d candidate requests", elapsed.Round(time.Second), ev.Candidate.Requests)
	case elapsed >= plan.MaxStepDuration:
		d.Action = Pause
		d.Reason = fmt.Sprintf("inconclusive after %s (max_step_duration): a person decides%s", elapsed.Round(time.Second), inconclusive)
	default:
		return nil // holds: more evidence will decide
	}
	return d
}

// Command is a person's decision: pause, resume, advance or abort. It
// says why when the rollout cannot take it in its status.
func Command(plan *rules.Rollout, s *State, action Action, actor, reason string, ev Evidence, now time.Time) (Decision, error) {
	share := s.Share(plan)
	d := Decision{At: now, Actor: actor, Action: action, Step: s.Step, FromPercent: percent(share), ToPercent: percent(share),
		Reason: reason, Candidate: ev.Candidate.counts(), Control: ev.Control.counts()}
	last := len(plan.Steps) - 1
	switch action {
	case Pause:
		if s.Status != Running {
			return d, fmt.Errorf("the rollout is %s, not running: there is nothing to pause", s.Status)
		}
	case Resume:
		switch s.Status {
		case Paused:
		case RolledBack, Aborted:
			d.ToPercent = percent(plan.Steps[0])
		default:
			return d, fmt.Errorf("the rollout is %s: only a paused, rolled back or aborted rollout resumes", s.Status)
		}
	case Advance:
		if s.Status != Running && s.Status != Paused {
			return d, fmt.Errorf("the rollout is %s: resume it before advancing", s.Status)
		}
		if s.step(plan) >= last {
			return d, fmt.Errorf("the rollout is at its last step (%v %%): there is no step to advance to", d.FromPercent)
		}
		d.ToPercent = percent(plan.Steps[s.step(plan)+1])
	case Abort:
		if s.Status == RolledBack || s.Status == Aborted {
			return d, fmt.Errorf("the rollout is already %s: the candidate has 0 %%", s.Status)
		}
		d.ToPercent = 0
	default:
		return d, fmt.Errorf("%q: use pause, resume, advance or abort", action)
	}
	return d, nil
}

// Apply makes a decision part of the state.
func (s *State) Apply(plan *rules.Rollout, d Decision) {
	fresh := func(step int) {
		step = min(max(step, 0), len(plan.Steps)-1) // a hand-edited state file cannot take it off the plan
		s.Step, s.StepStarted, s.Evidence = step, d.At, Evidence{}
		s.Status = Running
		if plan.Steps[step] >= rules.Buckets {
			s.Status = Completed
		}
	}
	switch d.Action {
	case Start:
		fresh(0)
	case Advance:
		fresh(s.step(plan) + 1)
	case Complete:
		s.Status = Completed
	case Rollback:
		s.Status = RolledBack
	case Abort:
		s.Status = Aborted
	case Pause:
		s.Status = Paused
	case Resume:
		if s.Status == Paused {
			fresh(s.Step)
		} else {
			fresh(0)
		}
	}
	s.Decisions = append(s.Decisions, d)
	if len(s.Decisions) > MaxDecisions {
		s.Decisions = s.Decisions[len(s.Decisions)-MaxDecisions:]
	}
}

// counts is the arm without its latencies, for a decision's record.
func (a Arm) counts() Arm { return Arm{Requests: a.Requests, Failures: a.Failures} }

// Merge adds o's counts to e.
func (e *Evidence) Merge(o Evidence) {
	e.Candidate.merge(o.Candidate)
	e.Control.merge(o.Control)
}

func (a *Arm) merge(o Arm) {
	a.Requests += o.Requests
	a.Failures += o.Failures
	if o.Latency != nil {
		if a.Latency == nil {
			a.Latency = new(stats.Snapshot)
		}
		a.Latency.Merge(o.Latency)
	}
}

func percent(bp int) float64 { return float64(bp) / 100 }
