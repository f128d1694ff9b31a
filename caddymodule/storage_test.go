package caddymodule

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/edgeflags/edgeflags/rollout"
	"github.com/edgeflags/edgeflags/rules"
)

// FuzzStateDocument: whatever is in a state document — written by another
// node of a fleet, an older version, or a hand — reading it, building the
// flags from it and judging its rollouts never panics: it serves, or it
// is refused (or set aside) with an error.
func FuzzStateDocument(f *testing.F) {
	doc, err := rules.Parse("flags.yaml", []byte("flags:\n  canary: {rollout: {variant: on, steps: [5, 50, 100]}}\n  plain: {rules: [{serve: on}]}\n"))
	if err != nil {
		f.Fatal(err)
	}
	set, err := rules.Compile(doc)
	if err != nil {
		f.Fatal(err)
	}
	base := parsed{docs: []*rules.Document{doc}, set: set, version: "v"}
	plan := set.Flag(0).Rollout
	st := rollout.New(plan, time.Unix(1e9, 0), "seed")
	off := false
	seed := stateFile{Version: 1, Generation: 7, Flags: map[string]runtimeEntry{
		"canary": {Rollout: &st, Actor: "rollout"},
		"plain":  {Enabled: &off, Flag: json.RawMessage(`{"rules": [{"serve": "off"}]}`), Actor: "oncall"},
	}, Recent: []Change{{Actor: "oncall", Flag: "plain", Action: "disable"}}}
	f.Add(mustJSON(seed))
	f.Add([]byte(`{"version": 1, "flags": {"canary": {"rollout": {"plan": "x", "status": "running", "step": 99, "evidence": {"candidate": {"latency": [[1, 2]]}}}}}}`))
	f.Add([]byte(`{"flags": {"canary": {"rollout": {"step": -4, "status": "paused"}, "flag": {"rollout": {"variant": "on", "steps": []}}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var sf stateFile
		if json.Unmarshal(data, &sf) != nil {
			return
		}
		b, err := compileLayer(base, sf.Flags)
		if err != nil {
			return
		}
		now := time.Unix(2e9, 0)
		for i := range b.set.Len() {
			fl := b.set.Flag(i)
			st := sf.Flags[fl.Key].Rollout
			if fl.Rollout == nil || st == nil {
				continue
			}
			if s := st.Share(fl.Rollout); s < 0 || s > rules.Buckets {
				t.Fatalf("share %d", s)
			}
			rollout.Next(fl.Rollout, st, st.Evidence, now)
			for _, a := range []rollout.Action{rollout.Pause, rollout.Resume, rollout.Advance, rollout.Abort} {
				c := *st
				if d, err := rollout.Command(fl.Rollout, &c, a, "fuzz", "", c.Evidence, now); err == nil {
					c.Apply(fl.Rollout, d)
				}
			}
		}
	})
}
