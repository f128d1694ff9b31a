package rules

import (
	"encoding/json"
	"slices"
)

// MarshalJSON writes the flag in the schema of flag files (without its
// key), so that what the admin API shows can be sent back to it.
func (f *Flag) MarshalJSON() ([]byte, error) {
	type rule struct {
		Name  string                    `json:"name,omitempty"`
		When  map[string]map[string]any `json:"when,omitempty"`
		Serve string                    `json:"serve,omitempty"`
		Split map[string]json.Number    `json:"split,omitempty"`
	}
	out := struct {
		Description string   `json:"description,omitempty"`
		Owner       string   `json:"owner,omitempty"`
		Ticket      string   `json:"ticket,omitempty"`
		Tags        []string `json:"tags,omitempty"`
		Variants    []string `json:"variants,omitempty"`
		OffVariant  string   `json:"off_variant,omitempty"`
		Default     string   `json:"default,omitempty"`
		Enabled     *bool    `json:"enabled,omitempty"`
		Salt        string   `json:"salt,omitempty"`
		Client      bool     `json:"client,omitempty"`
		Header      *bool    `json:"header,omitempty"`
		Observe     bool     `json:"observe,omitempty"`
		Rules       []rule   `json:"rules,omitempty"`
		Rollout     *Rollout `json:"rollout,omitempty"`
	}{f.Description, f.Owner, f.Ticket, f.Tags, f.Variants, f.OffVariant, f.Default, f.Enabled, f.Salt, f.Client, f.Header, f.Observe, nil, f.Rollout}
	for _, r := range f.Rules {
		jr := rule{Name: r.Name, Serve: r.Serve, When: conditionsJSON(r.When)}
		if r.Split != nil {
			jr.Split = map[string]json.Number{}
			for _, w := range r.Split {
				jr.Split[w.Variant] = json.Number(formatBasisPoints(w.BasisPoints))
			}
		}
		out.Rules = append(out.Rules, jr)
	}
	return json.Marshal(out)
}

// conditionsJSON groups conditions back into attribute → operator → value(s).
func conditionsJSON(conds []Condition) map[string]map[string]any {
	if len(conds) == 0 {
		return nil
	}
	m := map[string]map[string]any{}
	for _, c := range conds {
		if m[c.Attribute] == nil {
			m[c.Attribute] = map[string]any{}
		}
		var v any = slices.Clone(c.Values)
		if op, ok := operators[c.Operator]; ok && op.singleValued() && len(c.Values) == 1 {
			v = c.Values[0]
		}
		m[c.Attribute][c.Operator] = v
	}
	return m
}

// MarshalJSON writes the segment's conditions as a flag file has them.
func (s *Segment) MarshalJSON() ([]byte, error) {
	return json.Marshal(conditionsJSON(s.When))
}

// MarshalJSON writes the plan as a flag file has it.
func (r *Rollout) MarshalJSON() ([]byte, error) {
	type guard struct {
		FailureRate *struct {
			MaxIncrease json.Number `json:"max_increase"`
		} `json:"failure_rate,omitempty"`
		Latency *struct {
			Percentile float64 `json:"percentile"`
			MaxRatio   float64 `json:"max_ratio"`
		} `json:"latency,omitempty"`
	}
	out := struct {
		Variant         string        `json:"variant"`
		Steps           []json.Number `json:"steps"`
		StepDuration    string        `json:"step_duration,omitempty"`
		MinRequests     int           `json:"min_requests,omitempty"`
		MaxStepDuration string        `json:"max_step_duration,omitempty"`
		Guards          []guard       `json:"guards,omitempty"`
		OnFailure       string        `json:"on_failure,omitempty"`
	}{Variant: r.Variant, MinRequests: r.MinRequests, OnFailure: r.OnFailure, Steps: []json.Number{}}
	for _, bp := range r.Steps {
		out.Steps = append(out.Steps, json.Number(formatBasisPoints(bp)))
	}
	if r.StepDuration > 0 {
		out.StepDuration = r.StepDuration.String()
	}
	if r.MaxStepDuration > 0 {
		out.MaxStepDuration = r.MaxStepDuration.String()
	}
	for _, g := range r.Guards {
		var jg guard
		if g.FailureRate != nil {
			jg.FailureRate = &struct {
				MaxIncrease json.Number `json:"max_increase"`
			}{json.Number(formatBasisPoints(g.FailureRate.MaxIncrease))}
		}
		if g.Latency != nil {
			jg.Latency = &struct {
				Percentile float64 `json:"percentile"`
				MaxRatio   float64 `json:"max_ratio"`
			}{g.Latency.Percentile, g.Latency.MaxRatio}
		}
		out.Guards = append(out.Guards, jg)
	}
	return json.Marshal(out)
}
