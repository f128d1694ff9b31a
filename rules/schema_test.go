package rules

import (
	"encoding/json"
	"os"
	"slices"
	"testing"
)

// TestSchemaMatchesParser keeps flags.schema.json, which editors check files
// against, in step with the fields and operators the parser knows.
func TestSchemaMatchesParser(t *testing.T) {
	data, err := os.ReadFile("../flags.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties map[string]any `json:"properties"`
		Defs       map[string]struct {
			Properties map[string]any `json:"properties"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(data, &schema); err != nil {
		t.Fatalf("flags.schema.json: %v", err)
	}
	for _, tc := range []struct {
		what   string
		schema map[string]any
		parser []string
	}{
		{"top level", schema.Properties, documentFields},
		{"flag", schema.Defs["flag"].Properties, flagFields},
		{"rule", schema.Defs["rule"].Properties, ruleFields},
		{"rollout", schema.Defs["rollout"].Properties, rolloutFields},
		{"operators", schema.Defs["operators"].Properties, operatorNames},
	} {
		var names []string
		for k := range tc.schema {
			names = append(names, k)
		}
		slices.Sort(names)
		want := slices.Sorted(slices.Values(tc.parser))
		if !slices.Equal(names, want) {
			t.Errorf("%s: schema has %v, parser knows %v", tc.what, names, want)
		}
	}
}
