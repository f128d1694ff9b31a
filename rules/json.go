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
		Variants    []string `json:"variants,omitempty"`
		OffVariant  string   `json:"off_variant,omitempty"`
		Default     string   `json:"default,omitempty"`
		Enabled     *bool    `json:"enabled,omitempty"`
		Salt        string   `json:"salt,omitempty"`
		Client      bool     `json:"client,omitempty"`
		Header      *bool    `json:"header,omitempty"`
		Observe     bool     `json:"observe,omitempty"`
		Rules       []rule   `json:"rules,omitempty"`
	}{f.Description, f.Owner, f.Ticket, f.Variants, f.OffVariant, f.Default, f.Enabled, f.Salt, f.Client, f.Header, f.Observe, nil}
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
