package shadow

import (
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
)

// Path is a JSON path whose value is expected to differ between two
// answers: $.timestamp, $.items[*].id, $.*.etag, $.list[0], $["a key"].
// It covers the value there and everything below it.
type Path struct {
	text  string
	steps []pathStep
}

type pathStep struct {
	key      string
	index    int
	anyKey   bool // *
	anyIndex bool // [*]
	isIndex  bool
}

// step is one segment of a place in a document.
type step struct {
	key     string
	index   int
	isIndex bool
}

func (p Path) String() string { return p.text }

// ParsePath reads a JSON path: $ followed by .key, .*, [n], [*] or
// ["key"] segments.
func ParsePath(s string) (Path, error) {
	p := Path{text: s}
	bad := func(why string) (Path, error) {
		return Path{}, fmt.Errorf("JSON path %q: %s: write e.g. $.timestamp, $.items[*].id or $[\"a key\"]", s, why)
	}
	if !strings.HasPrefix(s, "$") {
		return bad("it starts with $")
	}
	rest := s[1:]
	for rest != "" {
		switch {
		case rest[0] == '.':
			end := strings.IndexAny(rest[1:], ".[")
			if end < 0 {
				end = len(rest) - 1
			}
			key := rest[1 : 1+end]
			if key == "" {
				return bad("an empty key after .")
			}
			p.steps = append(p.steps, pathStep{key: key, anyKey: key == "*"})
			rest = rest[1+end:]
		case rest[0] == '[':
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return bad("a [ without ]")
			}
			inner := rest[1:end]
			switch {
			case inner == "*":
				p.steps = append(p.steps, pathStep{anyIndex: true, isIndex: true})
			case strings.HasPrefix(inner, `"`):
				key, err := strconv.Unquote(inner)
				if err != nil {
					return bad("a quoted key that is not a JSON string")
				}
				p.steps = append(p.steps, pathStep{key: key})
			default:
				i, err := strconv.Atoi(inner)
				if err != nil || i < 0 {
					return bad("[" + inner + "] is neither an index, [*] nor a quoted key")
				}
				p.steps = append(p.steps, pathStep{index: i, isIndex: true})
			}
			rest = rest[end+1:]
		default:
			return bad("a segment starts with . or [")
		}
	}
	return p, nil
}

// matches reports whether the place at steps is the path or below it.
func (p Path) matches(steps []step) bool {
	if len(steps) < len(p.steps) {
		return false
	}
	for i, ps := range p.steps {
		s := steps[i]
		switch {
		case ps.isIndex != s.isIndex:
			return false
		case ps.anyKey || ps.anyIndex:
		case ps.isIndex && ps.index != s.index:
			return false
		case !ps.isIndex && ps.key != s.key:
			return false
		}
	}
	return true
}

// Noise is what two answers of the primary itself disagree on, learned
// from calibration pairs: those places are not held against the shadow.
// It is safe for concurrent use.
type Noise struct {
	mu     sync.Mutex
	places map[string]uint64 // Where → times seen differing
}

// maxNoisePlaces bounds what Noise remembers.
const maxNoisePlaces = 256

// Learn records where two answers of the primary differed.
func (n *Noise) Learn(diffs []Difference) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.places == nil {
		n.places = map[string]uint64{}
	}
	for _, d := range diffs {
		where := normalize(d.Where)
		if _, known := n.places[where]; known || len(n.places) < maxNoisePlaces {
			n.places[where]++
		}
	}
}

// Unexplained returns the differences at places the primary itself is
// not seen to vary at: the shadow's own.
func (n *Noise) Unexplained(diffs []Difference) []Difference {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []Difference
	for _, d := range diffs {
		if n.places[normalize(d.Where)] == 0 {
			out = append(out, d)
		}
	}
	return out
}

// Places returns a copy of the places learned (array indexes as [*]),
// with how often each was seen.
func (n *Noise) Places() map[string]uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.places)
}

// normalize is a place with its array indexes as [*]: a timestamp in the
// third item is noise when one in the first was.
func normalize(where string) string {
	var b strings.Builder
	for i := 0; i < len(where); i++ {
		if where[i] == '[' {
			if j := strings.IndexByte(where[i:], ']'); j > 1 && allDigits(where[i+1:i+j]) {
				b.WriteString("[*]")
				i += j
				continue
			}
		}
		b.WriteByte(where[i])
	}
	return b.String()
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
