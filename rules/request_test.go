package rules

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testRequest is a Request built from fields, as a test writes it.
type testRequest struct {
	unit      string
	values    map[Kind]string
	headers   map[string]string
	cookies   map[string]string
	query     map[string]string
	ip        netip.Addr
	now       time.Time
	bot       bool
	overrides map[string]string

	unitCalls int
}

func (r *testRequest) Unit() string { r.unitCalls++; return r.unit }

func (r *testRequest) Value(k Kind, name string) string {
	switch k {
	case KindHeader:
		return r.headers[name]
	case KindCookie:
		return r.cookies[name]
	case KindQuery:
		return r.query[name]
	}
	return r.values[k]
}

func (r *testRequest) IP() netip.Addr { return r.ip }

func (r *testRequest) Now() time.Time {
	if r.now.IsZero() {
		return time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	}
	return r.now
}

func (r *testRequest) Bot() bool { return r.bot }

func (r *testRequest) Override(flag string) (string, bool) {
	v, ok := r.overrides[flag]
	return v, ok
}

// mustLoad compiles YAML text and fails the test on any error.
func mustLoad(t testing.TB, yaml string) *Set {
	t.Helper()
	set, err := Load(Source{Name: "test.yaml", Data: []byte(yaml)})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return set
}

func loadFile(t testing.TB, path string) *Set {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	set, err := Load(Source{Name: filepath.Base(path), Data: data})
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	return set
}

// evaluate returns flag key's result for req.
func evaluate(t testing.TB, set *Set, key string, req *testRequest) Result {
	t.Helper()
	ev := set.NewEvaluation()
	ev.Reset(set, req)
	res, ok := ev.Lookup(key)
	if !ok {
		t.Fatalf("no flag %q", key)
	}
	return res
}
