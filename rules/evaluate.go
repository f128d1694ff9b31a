package rules

import "github.com/zeebo/xxh3"

// Reason says why a flag has its variant (OpenFeature names where they exist).
type Reason uint8

// The reasons of DESIGN.md §5.
const (
	ReasonUnknown        Reason = iota
	ReasonStatic                // the flag has no rules
	ReasonTargetingMatch        // a rule with serve matched
	ReasonSplit                 // a rule with split matched and bucketed the unit
	ReasonDefault               // no rule matched
	ReasonDisabled              // the flag is killed: everyone gets its off variant
	ReasonOverride              // a trusted QA override
	ReasonBot                   // a crawler gets the default
)

var reasonNames = [...]string{"UNKNOWN", "STATIC", "TARGETING_MATCH", "SPLIT", "DEFAULT", "DISABLED", "OVERRIDE", "BOT"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "UNKNOWN"
}

// Result is one flag's answer for one request.
type Result struct {
	Variant string
	Reason  Reason
	// Rule is the index of the rule that decided, or -1.
	Rule int
	// Bucket is the unit's bucket for this flag, 0 … 9999, or -1 when the
	// evaluation did not need it (or the request has no identity).
	Bucket int
}

// answer is a Result as an Evaluation keeps it: eight bytes, so that a
// request's answers stay small; Result is built from it on demand.
type answer struct {
	index  uint8 // the variant's position in the flag's variants
	reason Reason
	rule   int16
	bucket int16
}

// Evaluation evaluates one Set for one request. Results are computed on
// demand and kept, so each flag is evaluated at most once per request and
// prerequisites see the same answer as everything else. Reuse an Evaluation
// with Reset to evaluate without allocating; it is not safe for concurrent
// use, and must not be copied once Reset (it may point into itself).
//
// Sets of up to InlineFlags flags need no memory beyond the Evaluation
// itself, so one allocation of a struct embedding it holds a whole request.
type Evaluation struct {
	set     *Set
	req     Request
	results []answer // an answer is done once its reason is set
	segs    []int8   // 0 not yet tested, 1 no, 2 yes
	scratch []byte   // salt + "." + unit, reused so hashing never allocates

	unit     string
	unitRead bool
	bot      bool
	botRead  bool

	inlineResults [InlineFlags]answer
	inlineSegs    [64]int8
	inlineScratch [128]byte
}

// InlineFlags is how many flags an Evaluation holds without further memory.
const InlineFlags = 32

// NewEvaluation returns an Evaluation sized for s.
func (s *Set) NewEvaluation() *Evaluation {
	e := &Evaluation{}
	e.Reset(s, nil)
	return e
}

// Reset prepares e to evaluate s for req, reusing e's memory when it is large enough.
func (e *Evaluation) Reset(s *Set, req Request) {
	e.set, e.req = s, req
	e.unit, e.unitRead, e.bot, e.botRead = "", false, false, false
	e.results = resize(e.results, e.inlineResults[:], len(s.flags))
	e.segs = resize(e.segs, e.inlineSegs[:], len(s.segments))
	if e.scratch == nil {
		e.scratch = e.inlineScratch[:0]
	}
	clear(e.results)
	clear(e.segs)
}

// resize returns a slice of length n: s when it is large enough, else the
// inline array when that is, else new memory.
func resize[T any](s, inline []T, n int) []T {
	switch {
	case cap(s) >= n:
		return s[:n]
	case len(inline) >= n:
		return inline[:n]
	}
	return make([]T, n)
}

// Set returns the Set e evaluates.
func (e *Evaluation) Set() *Set { return e.set }

// All evaluates every flag.
func (e *Evaluation) All() {
	for i := range e.set.flags {
		e.flag(i)
	}
}

// Result returns the answer for the i-th flag of the Set, evaluating it if needed.
func (e *Evaluation) Result(i int) Result {
	a := e.flag(i)
	return Result{Variant: e.set.flags[i].variants[a.index], Reason: a.reason, Rule: int(a.rule), Bucket: int(a.bucket)}
}

// Variant returns the i-th flag's variant, evaluating it if needed.
func (e *Evaluation) Variant(i int) string {
	return e.set.flags[i].variants[e.flag(i).index]
}

// Answer returns the i-th flag's variant, as a position in its variants,
// and the reason, evaluating it if needed.
func (e *Evaluation) Answer(i int) (variant int, reason Reason) {
	a := e.flag(i)
	return int(a.index), a.reason
}

// Lookup returns the answer for the flag with key, evaluating it if needed.
func (e *Evaluation) Lookup(key string) (Result, bool) {
	i, ok := e.set.index[key]
	if !ok {
		return Result{}, false
	}
	return e.Result(i), true
}

// Unit returns the identity the evaluation buckets on, "" when none.
func (e *Evaluation) Unit() string {
	if !e.unitRead {
		e.unit, e.unitRead = e.req.Unit(), true
	}
	return e.unit
}

func (e *Evaluation) isBot() bool {
	if !e.botRead {
		e.bot, e.botRead = e.req.Bot(), true
	}
	return e.bot
}

// flag evaluates flag i once. Compile has refused cycles, so the recursion
// through prerequisites ends.
func (e *Evaluation) flag(i int) *answer {
	a := &e.results[i]
	if a.reason != ReasonUnknown {
		return a
	}
	a.rule, a.bucket = -1, -1
	a.index, a.reason = e.decide(&e.set.flags[i], a)
	return a
}

// decide returns the variant and reason for f, setting res.rule and
// res.bucket when a rule decides.
func (e *Evaluation) decide(f *compiledFlag, res *answer) (uint8, Reason) {
	if !f.enabled {
		return uint8(f.off), ReasonDisabled
	}
	if v, ok := e.req.Override(f.key); ok {
		if i := indexOf(f.variants, v); i >= 0 {
			return uint8(i), ReasonOverride
		}
	}
	if e.isBot() {
		return uint8(f.def), ReasonBot
	}
	if len(f.rules) == 0 {
		return uint8(f.def), ReasonStatic
	}
	for j := range f.rules {
		r := &f.rules[j]
		if !e.matchAll(r.conds) {
			continue
		}
		if r.serve >= 0 {
			res.rule = int16(j)
			return uint8(r.serve), ReasonTargetingMatch
		}
		unit := e.Unit()
		if unit == "" {
			continue // no identity: not bucketed (DESIGN.md §4)
		}
		if res.bucket < 0 {
			e.scratch = append(append(e.scratch[:0], f.saltDot...), unit...)
			res.bucket = int16(xxh3.Hash(e.scratch) % Buckets)
		}
		for _, b := range r.split {
			if int(res.bucket) < b.upper {
				res.rule = int16(j)
				return uint8(b.variant), ReasonSplit
			}
		}
	}
	return uint8(f.def), ReasonDefault
}

func (e *Evaluation) matchAll(conds []condition) bool {
	for k := range conds {
		if !conds[k].match(e) {
			return false
		}
	}
	return true
}

// segment reports whether the request is in segment s, testing it once.
func (e *Evaluation) segment(s int) bool {
	if e.segs[s] == 0 {
		e.segs[s] = 1
		if e.matchAll(e.set.segments[s].conds) {
			e.segs[s] = 2
		}
	}
	return e.segs[s] == 2
}
