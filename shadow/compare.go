// Package shadow compares two answers to the same request — the primary
// service's and a shadow's (the new service in a dark launch) — with no
// knowledge of Caddy: the status, chosen headers, and the body, JSON
// structurally with paths that are expected to differ left out. It also
// learns the noise: the places where two answers of the primary itself
// differ (timestamps, ids), which are then not held against the shadow.
//
// Bodies are bounded: a Response holds at most its first bytes and a hash
// of the whole; bodies longer than the bound are compared by hash only.
package shadow

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Response is one answer as compared.
type Response struct {
	Status int
	Header http.Header
	// Body is the body's first bytes, at most the bound; Hash is of the
	// whole body, and Truncated says the body was longer than Body.
	Body      []byte
	Hash      uint64
	Truncated bool
}

// Options say what is compared.
type Options struct {
	Status  bool
	Headers []string // canonical names
	Body    bool
	Ignore  []Path // JSON paths whose values may differ
}

// Difference is one place where two answers differ.
type Difference struct {
	// Where is "status", "header <Name>", "body" (bytes, or a body that is
	// not JSON on one side), or "body <path>" for a JSON body, such as
	// "body $.items[2].price".
	Where string `json:"where"`
	// Primary and Shadow are the values there, shortened.
	Primary string `json:"primary"`
	Shadow  string `json:"shadow"`
}

// MaxDifferences bounds the differences one comparison reports.
const MaxDifferences = 16

// Compare returns where p and s differ, in a stable order: status,
// headers as listed, then the body's paths in document order (object
// keys sorted). No differences means the answers match.
func Compare(p, s *Response, o *Options) []Difference {
	var out []Difference
	if o.Status && p.Status != s.Status {
		out = append(out, Difference{"status", strconv.Itoa(p.Status), strconv.Itoa(s.Status)})
	}
	for _, name := range o.Headers {
		a, b := strings.Join(p.Header.Values(name), ", "), strings.Join(s.Header.Values(name), ", ")
		if a != b {
			out = append(out, Difference{"header " + name, short(a), short(b)})
		}
	}
	if o.Body {
		out = compareBodies(out, p, s, o.Ignore)
	}
	return out
}

func compareBodies(out []Difference, p, s *Response, ignore []Path) []Difference {
	if p.Hash == s.Hash && p.Truncated == s.Truncated && bytes.Equal(p.Body, s.Body) {
		return out
	}
	if !p.Truncated && !s.Truncated {
		a, errA := decodeJSON(p.Body)
		b, errB := decodeJSON(s.Body)
		if errA == nil && errB == nil {
			w := walker{ignore: ignore, out: out}
			w.compare(a, b, "$", nil)
			return w.out
		}
	}
	if p.Hash != s.Hash || !bytes.Equal(p.Body, s.Body) {
		out = append(out, Difference{"body", short(string(p.Body)), short(string(s.Body))})
	}
	return out
}

func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("more than one JSON value")
	}
	return v, nil
}

// walker compares two JSON values, collecting differences.
type walker struct {
	ignore []Path
	out    []Difference
}

// compare compares a and b at path (its text) and steps (its segments).
func (w *walker) compare(a, b any, path string, steps []step) {
	if len(w.out) >= MaxDifferences || w.ignored(steps) {
		return
	}
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			break
		}
		keys := make([]string, 0, len(av)+len(bv))
		for k := range av {
			keys = append(keys, k)
		}
		for k := range bv {
			if _, dup := av[k]; !dup {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			x, inA := av[k]
			y, inB := bv[k]
			next := append(slices.Clip(steps), step{key: k})
			switch {
			case !inA:
				w.add(childPath(path, k), next, "(absent)", render(y))
			case !inB:
				w.add(childPath(path, k), next, render(x), "(absent)")
			default:
				w.compare(x, y, childPath(path, k), next)
			}
		}
		return
	case []any:
		bv, ok := b.([]any)
		if !ok {
			break
		}
		for i := range min(len(av), len(bv)) {
			w.compare(av[i], bv[i], path+"["+strconv.Itoa(i)+"]", append(slices.Clip(steps), step{index: i, isIndex: true}))
		}
		if len(av) != len(bv) {
			w.add(path+".length", steps, strconv.Itoa(len(av)), strconv.Itoa(len(bv)))
		}
		return
	case json.Number:
		if bn, ok := b.(json.Number); ok && sameNumber(av, bn) {
			return
		}
	default:
		if a == b {
			return
		}
	}
	w.add(path, steps, render(a), render(b))
}

func (w *walker) add(path string, steps []step, a, b string) {
	if len(w.out) < MaxDifferences && !w.ignored(steps) {
		w.out = append(w.out, Difference{"body " + path, short(a), short(b)})
	}
}

func (w *walker) ignored(steps []step) bool {
	for _, p := range w.ignore {
		if p.matches(steps) {
			return true
		}
	}
	return false
}

// sameNumber compares two JSON numbers by value: 1.0 and 1 are the same.
func sameNumber(a, b json.Number) bool {
	if a == b {
		return true
	}
	x, errX := a.Float64()
	y, errY := b.Float64()
	return errX == nil && errY == nil && x == y
}

func childPath(path, key string) string {
	if isIdentifier(key) {
		return path + "." + key
	}
	return path + "[" + strconv.Quote(key) + "]"
}

func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '-')) {
			return false
		}
	}
	return true
}

func render(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// short cuts a value to at most 80 bytes for a report.
func short(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
