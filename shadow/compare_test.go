package shadow

import (
	"net/http"
	"reflect"
	"testing"
)

func jsonResponse(body string) *Response {
	return &Response{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(body), Hash: uint64(len(body))}
}

func TestCompare(t *testing.T) {
	ignore := func(paths ...string) []Path {
		var out []Path
		for _, s := range paths {
			p, err := ParsePath(s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p)
		}
		return out
	}
	all := Options{Status: true, Headers: []string{"Content-Type"}, Body: true}
	for _, c := range []struct {
		name   string
		p, s   *Response
		ignore []Path
		want   []string // Where of each difference
	}{
		{"same JSON, other key order and spacing", jsonResponse(`{"a": 1, "b": [1, 2]}`), jsonResponse(`{"b":[1,2],"a":1.0}`), nil, nil},
		{"a value", jsonResponse(`{"items": [{"id": 1, "price": 5}]}`), jsonResponse(`{"items": [{"id": 1, "price": 6}]}`), nil, []string{"body $.items[0].price"}},
		{"an ignored value", jsonResponse(`{"at": "10:00", "n": 1}`), jsonResponse(`{"at": "10:01", "n": 1}`), ignore("$.at"), nil},
		{"ignored in every item", jsonResponse(`[{"id": "a", "v": 1}, {"id": "b", "v": 2}]`), jsonResponse(`[{"id": "x", "v": 1}, {"id": "y", "v": 3}]`), ignore("$[*].id"), []string{"body $[1].v"}},
		{"a key only one side has", jsonResponse(`{"a": 1}`), jsonResponse(`{"a": 1, "b": 2}`), nil, []string{"body $.b"}},
		{"lengths", jsonResponse(`[1, 2]`), jsonResponse(`[1, 2, 3]`), nil, []string{"body $.length"}},
		{"status and header", &Response{Status: 200, Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte("x"), Hash: 1},
			&Response{Status: 500, Header: http.Header{"Content-Type": {"text/html"}}, Body: []byte("x"), Hash: 1}, nil, []string{"status", "header Content-Type"}},
		{"bytes", &Response{Status: 200, Body: []byte("old"), Hash: 1}, &Response{Status: 200, Body: []byte("new"), Hash: 2}, nil, []string{"body"}},
		{"long bodies by hash", &Response{Status: 200, Body: []byte("{"), Hash: 7, Truncated: true}, &Response{Status: 200, Body: []byte("{"), Hash: 7, Truncated: true}, nil, nil},
		{"long bodies that differ", &Response{Status: 200, Body: []byte("{"), Hash: 7, Truncated: true}, &Response{Status: 200, Body: []byte("{"), Hash: 8, Truncated: true}, nil, []string{"body"}},
		{"a weird key", jsonResponse(`{"a b": 1}`), jsonResponse(`{"a b": 2}`), nil, []string{`body $["a b"]`}},
	} {
		o := all
		o.Ignore = c.ignore
		var got []string
		for _, d := range Compare(c.p, c.s, &o) {
			got = append(got, d.Where)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestParsePath(t *testing.T) {
	for _, good := range []string{"$", "$.a", "$.a.b", "$.items[*].id", "$.*.etag", "$[0]", `$["a key"].b`} {
		if _, err := ParsePath(good); err != nil {
			t.Errorf("%s: %v", good, err)
		}
	}
	for _, bad := range []string{"a.b", "$.", "$[", "$[x]", "$[-1]", "$a", `$["unterminated]`} {
		if _, err := ParsePath(bad); err == nil {
			t.Errorf("%s was accepted", bad)
		}
	}
}

func TestNoise(t *testing.T) {
	var n Noise
	n.Learn([]Difference{{Where: "body $.items[0].at"}, {Where: "header Date"}})
	if got := n.Unexplained([]Difference{{Where: "body $.items[3].at"}}); len(got) != 0 {
		t.Errorf("a timestamp in another item is the same noise: %v", got)
	}
	if got := n.Unexplained([]Difference{{Where: "body $.items[3].at"}, {Where: "body $.total"}}); len(got) != 1 || got[0].Where != "body $.total" {
		t.Errorf("a difference the primary never showed is the shadow's: %v", got)
	}
}

func FuzzCompare(f *testing.F) {
	f.Add([]byte(`{"a": [1, {"b": "c"}]}`), []byte(`{"a": [1, {"b": "d"}, 3]}`))
	f.Add([]byte(`[]`), []byte(`{}`))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		o := Options{Status: true, Body: true, Ignore: []Path{{steps: []pathStep{{anyKey: true}, {anyIndex: true, isIndex: true}}}}}
		diffs := Compare(&Response{Body: a, Hash: 1}, &Response{Body: b, Hash: 2}, &o)
		if len(diffs) > MaxDifferences {
			t.Fatalf("%d differences", len(diffs))
		}
		if same := Compare(&Response{Body: a, Hash: 1}, &Response{Body: a, Hash: 1}, &o); len(same) != 0 {
			t.Fatalf("a body differs from itself: %v", same)
		}
	})
}
