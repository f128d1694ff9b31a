package rules

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary sources to the parser and compiler: they must
// never panic, and a source they accept must evaluate without panicking.
// Findings are kept in testdata/fuzz/FuzzLoad.
func FuzzLoad(f *testing.F) {
	for _, dir := range []string{"../testdata/flags", "../testdata/bad"} {
		paths, _ := filepath.Glob(filepath.Join(dir, "*.*"))
		for _, p := range paths {
			if data, err := os.ReadFile(p); err == nil {
				f.Add(filepath.Base(p), data)
			}
		}
	}
	f.Add("x.json", []byte(`{"flags": {"a": {"rules": [{"split": {"on": 50, "off": 50}}]}}}`))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		set, err := Load(Source{Name: name, Data: data})
		if err != nil {
			if set != nil {
				t.Fatal("a refused load returned a set")
			}
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		ev := set.NewEvaluation()
		for _, req := range []*testRequest{
			{},
			{unit: "u", bot: true},
			{unit: string(data), values: map[Kind]string{KindCountry: "DE", KindPath: string(data)}, ip: netip.MustParseAddr("10.0.0.1")},
		} {
			ev.Reset(set, req)
			ev.All()
			ev.AppendDictionary(nil)
			for i := range set.Len() {
				res := ev.Result(i)
				if res.Variant == "" || res.Reason == ReasonUnknown {
					t.Fatalf("flag %s: empty result %+v", set.Flag(i).Key, res)
				}
			}
		}
	})
}
