package rollout

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// TestNoTrafficIsNoData: a step without candidate requests waits for them,
// however long; it is never failed nor paused for it.
func TestNoTrafficIsNoData(t *testing.T) {
	plan := simPlan(t, true)
	s := New(plan, t0, "test")
	for _, ev := range []Evidence{{}, {Control: Arm{Requests: 1e6, Failures: 1e4}}, {Candidate: Arm{Requests: 10}, Control: Arm{Requests: 1000}}} {
		if d := Next(plan, &s, ev, t0.Add(48*time.Hour)); d != nil {
			t.Errorf("evidence %+v: %s (%s), want to wait", ev, d.Action, d.Reason)
		}
	}
}

// TestDecisionsSayWhy: a rollback names the guard and its numbers.
func TestDecisionsSayWhy(t *testing.T) {
	plan := simPlan(t, false)
	s := New(plan, t0, "test")
	d := Next(plan, &s, Evidence{Candidate: Arm{Requests: 400, Failures: 40}, Control: Arm{Requests: 40000, Failures: 400}}, t0.Add(time.Minute))
	if d == nil || d.Action != Rollback || d.ToPercent != 0 {
		t.Fatalf("a candidate failing 10 %%: %+v, want a rollback", d)
	}
	for _, want := range []string{"failure_rate failed", "candidate 10.00 % (40 of 400)", "control 1.00 % (400 of 40000)", "0.50 allowed", "p = "} {
		if !strings.Contains(d.Reason, want) {
			t.Errorf("reason %q does not say %q", d.Reason, want)
		}
	}
	s.Apply(plan, *d)
	if s.Status != RolledBack || s.Share(plan) != 0 {
		t.Errorf("after a rollback: %s at %d basis points", s.Status, s.Share(plan))
	}
}

// TestCommands: what a person may do in each status, and where it leads.
func TestCommands(t *testing.T) {
	plan := simPlan(t, false)
	at := func(status Status, step int) State {
		s := New(plan, t0, "test")
		s.Status, s.Step = status, step
		return s
	}
	for _, c := range []struct {
		from   State
		action Action
		status Status
		share  int
		err    string
	}{
		{at(Running, 1), Pause, Paused, 500, ""},
		{at(Paused, 1), Pause, "", 0, "not running"},
		{at(Paused, 1), Resume, Running, 500, ""},
		{at(RolledBack, 2), Resume, Running, 100, ""},
		{at(Running, 1), Resume, "", 0, "only a paused"},
		{at(Running, 1), Advance, Running, 2500, ""},
		{at(Paused, 3), Advance, Completed, 10000, ""},
		{at(Completed, 4), Advance, "", 0, "resume it before"},
		{at(Running, 4), Advance, "", 0, "last step"},
		{at(Running, 2), Abort, Aborted, 0, ""},
		{at(Completed, 4), Abort, Aborted, 0, ""},
		{at(Aborted, 2), Abort, "", 0, "already aborted"},
		{at(Running, 0), "explode", "", 0, "use pause, resume"},
		{at(Paused, 99), Advance, "", 0, "last step"}, // a hand-edited state file
		{at(Paused, -3), Resume, Running, 100, ""},
	} {
		s := c.from
		d, err := Command(plan, &s, c.action, "alice", "test", Evidence{}, t0.Add(time.Hour))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s at %s: error %v, want %q", c.action, c.from.Status, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s at %s: %v", c.action, c.from.Status, err)
		}
		s.Apply(plan, d)
		if s.Status != c.status || s.Share(plan) != c.share {
			t.Errorf("%s at %s: %s at %d basis points, want %s at %d", c.action, c.from.Status, s.Status, s.Share(plan), c.status, c.share)
		}
		if last := s.Decisions[len(s.Decisions)-1]; last.Actor != "alice" || last.Action != c.action {
			t.Errorf("%s at %s: last decision %+v", c.action, c.from.Status, last)
		}
	}
}

// TestFingerprint: only the plan's own fields change it.
func TestFingerprint(t *testing.T) {
	a, b := simPlan(t, false), simPlan(t, false)
	if Fingerprint(a) != Fingerprint(b) {
		t.Fatal("the same plan has two fingerprints")
	}
	b.StepDuration = time.Hour
	if Fingerprint(a) == Fingerprint(b) {
		t.Fatal("a longer step_duration kept the fingerprint")
	}
}

// TestPauseInsteadOfRollback: with on_failure: pause, a failing guard
// stops the rollout where it is, for changes that cannot be undone.
func TestPauseInsteadOfRollback(t *testing.T) {
	plan := simPlan(t, false)
	plan.OnFailure = "pause"
	s := New(plan, t0, "test")
	s.Apply(plan, Decision{At: t0, Action: Advance})
	d := Next(plan, &s, Evidence{Candidate: Arm{Requests: 400, Failures: 40}, Control: Arm{Requests: 40000, Failures: 400}}, t0.Add(time.Minute))
	if d == nil || d.Action != Pause || d.ToPercent != 5 {
		t.Fatalf("%+v, want a pause at 5 %%", d)
	}
	s.Apply(plan, *d)
	if s.Status != Paused || s.Share(plan) != 500 {
		t.Errorf("%s at %d basis points, want paused at 500", s.Status, s.Share(plan))
	}
}
