package rules

import (
	"encoding/json"
	"testing"
	"time"
)

const rolloutYAML = `
flags:
  new-checkout:
    variants: [off, on]
    rules:
      - name: testers
        when: {header.X-Tester: {in: ["1"]}}
        serve: on
      - name: not-in-fr
        when: {country: {in: [FR]}}
        serve: off
    rollout:
      variant: on
      steps: [1, 5%, 25, 50, 100]
      step_duration: 2m
      guards:
        - failure_rate: {max_increase: 0.5%}
        - latency: {percentile: 99, max_ratio: 1.25}
`

// TestRolloutSplitsAfterTheRules: targeting rules come first; identified
// users are split by the step's share; users without identity get the
// default; raising the share never moves a user back to the control.
func TestRolloutSplitsAfterTheRules(t *testing.T) {
	doc, err := Parse("test.yaml", []byte(rolloutYAML))
	if err != nil {
		t.Fatal(err)
	}
	f := doc.Flags[0]
	at := func(share int) *Set {
		c := *f
		c.RolloutShare = &share
		set, err := Compile(&Document{Name: "test.yaml", Flags: []*Flag{&c}})
		if err != nil {
			t.Fatal(err)
		}
		return set
	}
	plan := at(500).Flag(0)
	if !plan.Observe || plan.Rollout.StepDuration != 2*time.Minute || plan.Rollout.MaxStepDuration != 6*time.Minute ||
		plan.Rollout.MinRequests != DefaultMinRequests || plan.Rollout.OnFailure != OnFailureRollback {
		t.Fatalf("defaults not applied: %+v", plan.Rollout)
	}
	if got := evaluate(t, at(0), "new-checkout", &testRequest{unit: "u", headers: map[string]string{"X-Tester": "1"}}); got.Variant != "on" || got.Rule != 0 {
		t.Errorf("a tester at 0 %%: %+v, want on by rule 0", got)
	}
	if got := evaluate(t, at(10000), "new-checkout", &testRequest{unit: "u", values: map[Kind]string{KindCountry: "FR"}}); got.Variant != "off" {
		t.Errorf("a user in FR at 100 %%: %+v, want off", got)
	}
	if got := evaluate(t, at(10000), "new-checkout", &testRequest{}); got.Variant != "off" || got.Reason != ReasonDefault {
		t.Errorf("no identity at 100 %%: %+v, want the default", got)
	}
	set := at(10000)
	if got := evaluate(t, set, "new-checkout", &testRequest{unit: "u"}); got.Reason != ReasonSplit || set.RuleName(0, got.Rule) != "rollout" {
		t.Errorf("an identified user: %+v (rule %q), want a split by the rollout rule", got, set.RuleName(0, got.Rule))
	}
	shares := []int{0, 100, 500, 2500, 5000, 10000}
	users := units(20000)
	was := map[string]bool{}
	for _, share := range shares {
		set := at(share)
		on := 0
		for _, u := range users {
			got := evaluate(t, set, "new-checkout", &testRequest{unit: u}).Variant == "on"
			if was[u] && !got {
				t.Fatalf("%s had the candidate below %d basis points and lost it at %d", u, share, share)
			}
			was[u] = got
			if got {
				on++
			}
		}
		if want := len(users) * share / Buckets; on < want-want/10-20 || on > want+want/10+20 {
			t.Errorf("at %d basis points %d of %d users have the candidate, want about %d", share, on, len(users), want)
		}
	}
}

// TestRolloutJSONRoundTrip: the plan as the admin API shows it parses back
// to the same plan.
func TestRolloutJSONRoundTrip(t *testing.T) {
	set := mustLoad(t, rolloutYAML)
	js, err := json.Marshal(set.Flag(0))
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseFlag("admin", "new-checkout", js)
	if err != nil {
		t.Fatalf("%s does not parse back: %v", js, err)
	}
	again, err := Compile(&Document{Name: "admin", Flags: []*Flag{f}})
	if err != nil {
		t.Fatal(err)
	}
	js2, _ := json.Marshal(again.Flag(0))
	if string(js) != string(js2) {
		t.Fatalf("round trip changed the flag:\n%s\n%s", js, js2)
	}
}
