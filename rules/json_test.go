package rules

import (
	"encoding/json"
	"os"
	"testing"
)

// TestFlagJSONRoundTrip writes every flag of the realistic file as JSON,
// parses it back as an admin PUT would, and checks that the result
// evaluates the same for a range of requests.
func TestFlagJSONRoundTrip(t *testing.T) {
	data, err := os.ReadFile("../testdata/flags/realistic-100.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := Parse("realistic-100.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	again := &Document{Name: "round-trip", Segments: doc.Segments}
	for _, f := range doc.Flags {
		js, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		g, err := ParseFlag("admin", f.Key, js)
		if err != nil {
			t.Fatalf("%s: %s does not parse back: %v", f.Key, js, err)
		}
		again.Flags = append(again.Flags, g)
	}
	a, err := Compile(doc)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Compile(again)
	if err != nil {
		t.Fatal(err)
	}
	ea, eb := a.NewEvaluation(), b.NewEvaluation()
	for _, u := range units(2000) {
		req := &testRequest{unit: u, values: map[Kind]string{KindCountry: "DE", KindEU: "true", KindPath: "/api/v2/x", KindMethod: "GET"},
			headers: map[string]string{"X-Plan": "pro", "X-App-Version": "3.1.0"}}
		ea.Reset(a, req)
		eb.Reset(b, req)
		if da, db := string(ea.AppendDictionary(nil)), string(eb.AppendDictionary(nil)); da != db {
			t.Fatalf("%s: evaluations differ after a JSON round trip:\n%s\n%s", u, da, db)
		}
	}
}
