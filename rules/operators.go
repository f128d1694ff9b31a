package rules

import (
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

type operator uint8

const (
	opIn operator = iota
	opNotIn
	opPrefix
	opSuffix
	opContains
	opRegex
	opCIDR
	opSemverEq
	opSemverGt
	opSemverGte
	opSemverLt
	opSemverLte
	opGt
	opGte
	opLt
	opLte
	opAfter
	opBefore
)

var operators = map[string]operator{
	"in": opIn, "not_in": opNotIn,
	"prefix": opPrefix, "suffix": opSuffix, "contains": opContains, "regex": opRegex,
	"cidr":      opCIDR,
	"semver_eq": opSemverEq, "semver_gt": opSemverGt, "semver_gte": opSemverGte, "semver_lt": opSemverLt, "semver_lte": opSemverLte,
	"gt": opGt, "gte": opGte, "lt": opLt, "lte": opLte,
	"after": opAfter, "before": opBefore,
}

var operatorNames = []string{"in", "not_in", "prefix", "suffix", "contains", "regex", "cidr",
	"semver_eq", "semver_gt", "semver_gte", "semver_lt", "semver_lte", "gt", "gte", "lt", "lte", "after", "before"}

// singleValued operators take exactly one operand.
func (o operator) singleValued() bool {
	return o >= opSemverEq
}

// smallSet is the list length up to which a linear scan beats a map lookup.
const smallSet = 8

// condition is a compiled Condition: operands parsed, ready to test.
type condition struct {
	kind Kind
	name string // header (canonical), cookie or query name
	op   operator

	strs      []string            // in/not_in (small), prefix, suffix, contains
	set       map[string]struct{} // in/not_in (large)
	re        *regexp.Regexp
	reLiteral string // a literal prefix every match of an anchored re starts with
	prefixes  []netip.Prefix
	ver       semver
	num       float64
	at        time.Time
	refs      []int  // segment indices
	flag      int    // prerequisite flag index
	variants  uint64 // prerequisite variants, a bit per variant index
}

// match tests the condition. It allocates nothing.
func (c *condition) match(e *Evaluation) bool {
	switch c.kind {
	case kindSegment:
		for _, s := range c.refs {
			if e.segment(s) {
				return c.op == opIn
			}
		}
		return c.op == opNotIn
	case kindFlag:
		in := c.variants&(1<<e.flag(c.flag).index) != 0
		return in == (c.op == opIn)
	case kindNow:
		now := e.req.Now()
		if c.op == opAfter {
			return !now.Before(c.at)
		}
		return now.Before(c.at)
	case kindIP:
		ip := e.req.IP().Unmap()
		if !ip.IsValid() {
			return c.op == opNotIn
		}
		for _, p := range c.prefixes {
			if p.Contains(ip) {
				return c.op != opNotIn
			}
		}
		return c.op == opNotIn
	}
	return c.matchString(e.req.Value(c.kind, c.name))
}

func (c *condition) matchString(v string) bool {
	switch c.op {
	case opIn, opNotIn:
		return c.has(v) == (c.op == opIn)
	case opPrefix:
		for _, s := range c.strs {
			if strings.HasPrefix(v, s) {
				return true
			}
		}
	case opSuffix:
		for _, s := range c.strs {
			if strings.HasSuffix(v, s) {
				return true
			}
		}
	case opContains:
		for _, s := range c.strs {
			if strings.Contains(v, s) {
				return true
			}
		}
	case opRegex:
		if !strings.HasPrefix(v, c.reLiteral) {
			return false
		}
		return c.re.MatchString(v)
	case opSemverEq, opSemverGt, opSemverGte, opSemverLt, opSemverLte:
		ver, ok := parseSemver(v)
		return ok && compared(c.op-opSemverEq, ver.compare(c.ver))
	case opGt, opGte, opLt, opLte:
		n, ok := parseFinite(v)
		if !ok {
			return false
		}
		cmp := 0
		if n < c.num {
			cmp = -1
		} else if n > c.num {
			cmp = 1
		}
		return compared(c.op-opGt+1, cmp)
	}
	return false
}

// parseFinite reads a number for the numeric comparisons. NaN and the
// infinities are refused: NaN compares false with everything, so "gte: NaN"
// or a request value of NaN would make a comparison mean nothing.
func parseFinite(s string) (float64, bool) {
	if s == "" {
		return 0, false
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
		return 0, false
	}
	return n, true
}

// compared applies the comparison rel (0 eq, 1 gt, 2 gte, 3 lt, 4 lte) to a
// three-way comparison result.
func compared(rel operator, cmp int) bool {
	switch rel {
	case 0:
		return cmp == 0
	case 1:
		return cmp > 0
	case 2:
		return cmp >= 0
	case 3:
		return cmp < 0
	}
	return cmp <= 0
}

func (c *condition) has(v string) bool {
	if c.set != nil {
		_, ok := c.set[v]
		return ok
	}
	for _, s := range c.strs {
		if s == v {
			return true
		}
	}
	return false
}
