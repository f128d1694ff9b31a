package rules

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/zeebo/xxh3"
)

// MaxVariants bounds the variants of one flag (a prerequisite condition keeps
// them in a 64-bit set).
const MaxVariants = 64

// MaxRules bounds the rules of one flag; far more than a person can review.
const MaxRules = 1000

// Source is one flag definition source: a file's name and contents.
type Source struct {
	Name string
	Data []byte
}

// Load parses and compiles sources into one Set. Every problem in every
// source is reported in one [Errors]; if there is any, no Set is returned.
func Load(sources ...Source) (*Set, error) {
	_, set, err := LoadDocuments(sources...)
	return set, err
}

// LoadDocuments is Load that also returns the parsed documents, for a
// caller that lays more definitions over them and compiles again.
func LoadDocuments(sources ...Source) ([]*Document, *Set, error) {
	var all Errors
	count := 0
	docs := make([]*Document, 0, len(sources))
	h := xxh3.New()
	for _, src := range sources {
		doc, err := Parse(src.Name, src.Data)
		all, count = appendErrors(all, count, err)
		docs = append(docs, doc)
		fmt.Fprintf(h, "%d:%s\n%d:", len(src.Name), src.Name, len(src.Data))
		h.Write(src.Data)
	}
	set, err := compile(docs, count > 0)
	all, count = appendErrors(all, count, err)
	if count > 0 {
		return nil, nil, capErrors(all, count)
	}
	set.Version = fmt.Sprintf("%016x", h.Sum64())
	return docs, set, nil
}

// appendErrors adds err's problems to all, counting those a capped list
// summarized in its "… and N more" line.
func appendErrors(all Errors, count int, err error) (Errors, int) {
	es, ok := err.(Errors)
	if !ok {
		if err == nil {
			return all, count
		}
		es = Errors{&Error{Message: err.Error()}}
	}
	for _, e := range es {
		if e.more > 0 {
			count += e.more
			continue
		}
		all = append(all, e)
		count++
	}
	return all, count
}

// Set is a compiled, immutable set of flags. It is safe for concurrent use;
// replace a Set as a whole (e.g. through an atomic pointer) to change flags.
type Set struct {
	// Version identifies the sources the set was loaded from (a hash of
	// them); equal sources give an equal Version.
	Version string

	flags    []compiledFlag
	index    map[string]int
	segments []segment
}

type compiledFlag struct {
	spec     *Flag // normalized: every default applied
	partial  bool  // the variants list was not read whole: unknown variants are not reported
	key      string
	variants []string
	off, def int
	enabled  bool
	saltDot  string
	rules    []rule
}

type rule struct {
	name  string
	conds []condition
	serve int      // variant index, or -1 for a split
	split []bucket // ascending upper bounds
}

// bucket: units whose bucket is below upper (and at or above the previous
// bucket's upper) get variant.
type bucket struct {
	upper   int
	variant int
}

type segment struct {
	name  string
	conds []condition
}

// Len returns the number of flags.
func (s *Set) Len() int { return len(s.flags) }

// Index returns the position of the flag with key, for [Evaluation.Result].
func (s *Set) Index(key string) (int, bool) {
	i, ok := s.index[key]
	return i, ok
}

// Flag returns the definition of the i-th flag with every default applied.
// It is shared: do not modify it.
func (s *Set) Flag(i int) *Flag { return s.flags[i].spec }

// RuleName returns the name of rule r of flag i, or "rules[r]" when unnamed.
func (s *Set) RuleName(i, r int) string {
	if r < 0 {
		return ""
	}
	if n := s.flags[i].rules[r].name; n != "" {
		return n
	}
	return fmt.Sprintf("rules[%d]", r)
}

// compiler holds what Compile needs while it checks all documents together.
type compiler struct {
	list     Errors
	count    int            // problems found, listed or not
	flagAt   map[string]int // key → index into flags
	segAt    map[string]int
	flagDefs []*Flag
	flagDoc  []string
	segDefs  []*Segment
	segDoc   []string
	// deps holds, per node (flags first, then segments), the nodes it reads.
	deps [][]int
}

func (c *compiler) add(file, path string, line int, format string, args ...any) {
	c.count++
	if len(c.list) < MaxErrors {
		c.list = append(c.list, &Error{File: file, Path: path, Line: line, Message: fmt.Sprintf(format, args...)})
	}
}

// Compile checks documents together — names, variants, weights, references,
// cycles, operand values — and compiles them into a Set. A flag key or
// segment name defined twice is an error.
func Compile(docs ...*Document) (*Set, error) {
	return compile(docs, false)
}

// compile is Compile; parseFailed says the caller already holds errors for
// the flags Parse could not read, so they need no second report here.
func compile(docs []*Document, parseFailed bool) (*Set, error) {
	c := &compiler{flagAt: map[string]int{}, segAt: map[string]int{}}
	for _, doc := range docs {
		for _, sg := range doc.Segments {
			path := "segments." + sg.Name
			if msg := checkFlagKey(sg.Name); msg != "" {
				c.add(doc.Name, path, sg.line, "%s", msg)
			}
			if j, dup := c.segAt[sg.Name]; dup {
				c.add(doc.Name, path, sg.line, "segment defined twice: first in %s at line %d", c.segDoc[j], c.segDefs[j].line)
				continue
			}
			c.segAt[sg.Name] = len(c.segDefs)
			c.segDefs = append(c.segDefs, sg)
			c.segDoc = append(c.segDoc, doc.Name)
		}
		for _, f := range doc.Flags {
			path := "flags." + f.Key
			if msg := checkFlagKey(f.Key); msg != "" {
				c.add(doc.Name, path, f.line, "%s", msg)
			}
			if j, dup := c.flagAt[f.Key]; dup {
				c.add(doc.Name, path, f.line, "flag defined twice: first in %s at line %d", c.flagDoc[j], c.flagDefs[j].line)
				continue
			}
			c.flagAt[f.Key] = len(c.flagDefs)
			c.flagDefs = append(c.flagDefs, f)
			c.flagDoc = append(c.flagDoc, doc.Name)
		}
	}
	c.deps = make([][]int, len(c.flagDefs)+len(c.segDefs))

	set := &Set{index: make(map[string]int, len(c.flagDefs)), flags: make([]compiledFlag, len(c.flagDefs)), segments: make([]segment, len(c.segDefs))}
	// Variants first: prerequisite conditions check values against them.
	for i, f := range c.flagDefs {
		set.flags[i] = c.flagHead(c.flagDoc[i], f)
		set.index[f.Key] = i
	}
	for i, sg := range c.segDefs {
		set.segments[i] = segment{name: sg.Name, conds: c.conditions(c.segDoc[i], "segments."+sg.Name, len(c.flagDefs)+i, sg.When, set)}
	}
	for i, f := range c.flagDefs {
		switch {
		case !f.broken:
			set.flags[i].rules = c.rules(c.flagDoc[i], i, f, &set.flags[i], set)
			if spec := set.flags[i].spec; spec.Rollout != nil && len(spec.Rollout.Steps) > 0 {
				set.flags[i].rules = append(set.flags[i].rules, rolloutRule(spec.Rollout, spec.CandidateShare(), &set.flags[i]))
			}
		case !parseFailed:
			c.add(c.flagDoc[i], "flags."+f.Key, f.line, "the definition could not be read: parse it again to see why")
		}
	}
	c.cycles()
	if c.count > 0 {
		return nil, capErrors(c.list, c.count)
	}
	return set, nil
}

// flagHead checks and normalizes everything of a flag but its rules.
func (c *compiler) flagHead(file string, f *Flag) compiledFlag {
	path := "flags." + f.Key
	n := *f
	if n.Variants == nil {
		n.Variants = []string{"off", "on"}
	}
	cf := compiledFlag{spec: &n, key: f.Key, variants: n.Variants, off: -1, def: -1, partial: f.badVariants}
	if f.broken {
		return cf
	}
	if len(n.Variants) == 0 {
		n.Variants = []string{"off", "on"} // what could be read was nothing: reported already
		cf.variants = n.Variants
	}
	switch {
	case f.badVariants:
	case len(n.Variants) < 2:
		c.add(file, path+".variants", lineOr(f.lines.variants, f.line), "a flag needs at least 2 variants, has %d", len(n.Variants))
	case len(n.Variants) > MaxVariants:
		c.add(file, path+".variants", lineOr(f.lines.variants, f.line), "a flag has at most %d variants, has %d", MaxVariants, len(n.Variants))
	}
	for i, v := range n.Variants {
		vp := fmt.Sprintf("%s.variants[%d]", path, i)
		line := f.line
		if i < len(f.lines.variant) {
			line = f.lines.variant[i]
		}
		if msg := checkVariant(v); msg != "" {
			c.add(file, vp, line, "%s", msg)
		}
		if j := indexOf(n.Variants[:i], v); j >= 0 {
			c.add(file, vp, line, "variant %q listed twice (also variants[%d])", v, j)
		}
	}
	if n.OffVariant == "" {
		n.OffVariant = n.Variants[0]
	}
	if cf.off = c.variantIndex(file, path+".off_variant", lineOr(f.lines.offVariant, f.line), &cf, n.OffVariant); cf.off < 0 {
		cf.off = 0
	}
	if n.Default == "" {
		n.Default = n.OffVariant
		cf.def = cf.off // already checked
	} else if cf.def = c.variantIndex(file, path+".default", lineOr(f.lines.def, f.line), &cf, n.Default); cf.def < 0 {
		cf.def = 0
	}
	if n.Enabled == nil {
		n.Enabled = ptr(true)
	}
	cf.enabled = *n.Enabled
	if n.Header == nil {
		n.Header = ptr(true)
	}
	if n.Salt == "" {
		n.Salt = f.Key
	}
	cf.saltDot = n.Salt + "."
	if f.Rollout != nil {
		n.Rollout = c.rolloutPlan(file, path+".rollout", f.Rollout, &cf)
		n.Observe = true
	}
	return cf
}

// Defaults of a rollout plan.
const (
	DefaultStepDuration = 10 * time.Minute
	DefaultMinRequests  = 500
	DefaultMaxIncrease  = 50 // basis points: half a percentage point
)

// rolloutPlan checks a rollout plan and returns it with its defaults.
func (c *compiler) rolloutPlan(file, path string, ro *Rollout, cf *compiledFlag) *Rollout {
	n := *ro.WithDefaults()
	switch v := c.variantIndex(file, path+".variant", lineOr(ro.lines.variant, ro.line), cf, ro.Variant); {
	case ro.Variant == "":
		c.add(file, path+".variant", ro.line, "needs variant: the candidate being rolled out (the control is the off variant, %s)", cf.variants[cf.off])
	case v >= 0 && v == cf.off:
		c.add(file, path+".variant", lineOr(ro.lines.variant, ro.line), "%q is the off variant, the control: the candidate must be another variant", ro.Variant)
	}
	if len(ro.Steps) == 0 {
		c.add(file, path+".steps", lineOr(ro.lines.steps, ro.line), "needs steps: the candidate's percentages, increasing, e.g. [1, 5, 25, 50, 100]")
	}
	for i, bp := range ro.Steps {
		switch {
		case bp <= 0:
			c.add(file, fmt.Sprintf("%s.steps[%d]", path, i), lineOr(ro.lines.steps, ro.line), "a step gives the candidate more than 0 %%")
		case i > 0 && bp <= ro.Steps[i-1]:
			c.add(file, fmt.Sprintf("%s.steps[%d]", path, i), lineOr(ro.lines.steps, ro.line), "steps must increase: %s after %s", formatBasisPoints(bp), formatBasisPoints(ro.Steps[i-1]))
		}
	}
	if n.MaxStepDuration < n.StepDuration {
		c.add(file, path+".max_step_duration", lineOr(ro.lines.maxStepDuration, ro.line), "%s is shorter than step_duration (%s): an inconclusive step holds from the one to the other", n.MaxStepDuration, n.StepDuration)
	}
	switch n.OnFailure {
	case OnFailureRollback, OnFailurePause:
	default:
		c.add(file, path+".on_failure", lineOr(ro.lines.onFailure, ro.line), "%q: use rollback (the candidate back to 0 %%) or pause (it keeps its share, for changes that cannot be undone)", n.OnFailure)
	}
	for i, g := range n.Guards {
		gp := fmt.Sprintf("%s.guards[%d]", path, i)
		if l := g.Latency; l != nil {
			if l.Percentile <= 0 || l.Percentile >= 100 {
				c.add(file, gp+".latency.percentile", lineOr(g.line, ro.line), "want a percentile above 0 and below 100, e.g. 99, got %v", l.Percentile)
			}
			if l.MaxRatio < 1 {
				c.add(file, gp+".latency.max_ratio", lineOr(g.line, ro.line), "want a ratio of at least 1 (1.25: the candidate up to 25 %% slower), got %v", l.MaxRatio)
			}
		}
	}
	return &n
}

// WithDefaults returns a copy of the plan with every default applied.
func (r *Rollout) WithDefaults() *Rollout {
	n := *r
	n.Steps = slices.Clone(r.Steps)
	if n.StepDuration == 0 {
		n.StepDuration = DefaultStepDuration
	}
	if n.MaxStepDuration == 0 {
		n.MaxStepDuration = 3 * n.StepDuration
	}
	if n.MinRequests == 0 {
		n.MinRequests = DefaultMinRequests
	}
	if n.OnFailure == "" {
		n.OnFailure = OnFailureRollback
	}
	if len(n.Guards) == 0 {
		n.Guards = []Guard{{FailureRate: &FailureRateGuard{MaxIncrease: DefaultMaxIncrease}}}
	}
	return &n
}

// rolloutRule is the split a rollout adds after the flag's rules: the
// candidate below bp (its share, in basis points), the off variant above — so raising the share
// moves users from the control to the candidate and never back.
func rolloutRule(ro *Rollout, bp int, cf *compiledFlag) rule {
	r := rule{name: "rollout", serve: -1}
	if v := indexOf(cf.variants, ro.Variant); bp > 0 {
		r.split = append(r.split, bucket{upper: bp, variant: v})
	}
	if bp < Buckets {
		r.split = append(r.split, bucket{upper: Buckets, variant: cf.off})
	}
	return r
}

func ptr[T any](v T) *T { return &v }

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// variantIndex returns the index of v in the flag's variants, or reports
// it (unless the list is partial) and returns -1.
func (c *compiler) variantIndex(file, path string, line int, cf *compiledFlag, v string) int {
	if i := indexOf(cf.variants, v); i >= 0 {
		return i
	}
	if !cf.partial {
		c.add(file, path, line, "unknown variant %q: the flag's variants are %s%s", v, strings.Join(cf.variants, ", "), didYouMean(v, cf.variants))
	}
	return -1
}

// lineOr returns line, or fallback when line is unknown.
func lineOr(line, fallback int) int {
	if line > 0 {
		return line
	}
	return fallback
}

func (c *compiler) rules(file string, fi int, f *Flag, cf *compiledFlag, set *Set) []rule {
	if len(f.Rules) > MaxRules {
		c.add(file, "flags."+f.Key+".rules", f.line, "%d rules; a flag has at most %d: move shared conditions into segments", len(f.Rules), MaxRules)
		return nil
	}
	out := make([]rule, len(f.Rules))
	for j, r := range f.Rules {
		path := fmt.Sprintf("flags.%s.rules[%d]", f.Key, j)
		out[j] = rule{name: r.Name, serve: -1, conds: c.conditions(file, path+".when", fi, r.When, set)}
		switch {
		case r.badServe || r.badSplit:
			// the parser has reported it
		case r.Serve != "":
			out[j].serve = c.variantIndex(file, path+".serve", lineOr(r.serveLine, r.line), cf, r.Serve)
		default:
			out[j].split = c.split(file, path+".split", r, cf)
		}
	}
	return out
}

// split orders a split's buckets by the contract of DESIGN.md §2: non-off
// variants from bucket 0 upwards in the order of the flag's variants, the off
// variant on top.
func (c *compiler) split(file, path string, r Rule, cf *compiledFlag) []bucket {
	weights := make([]int, len(cf.variants))
	sum := 0
	for _, w := range r.Split {
		i := c.variantIndex(file, path+"."+w.Variant, w.line, cf, w.Variant)
		if i >= 0 {
			weights[i] = w.BasisPoints
		}
		sum += w.BasisPoints
	}
	if sum != Buckets {
		c.add(file, path, lineOr(r.splitLine, r.line), "weights sum to %s, want 100", formatBasisPoints(sum))
		return nil
	}
	var out []bucket
	upper := 0
	for i, w := range weights {
		if i != cf.off && w > 0 {
			upper += w
			out = append(out, bucket{upper: upper, variant: i})
		}
	}
	if weights[cf.off] > 0 {
		out = append(out, bucket{upper: Buckets, variant: cf.off})
	}
	return out
}

func formatBasisPoints(bp int) string {
	s := strconv.Itoa(bp / 100)
	if f := bp % 100; f != 0 {
		s += strings.TrimRight(fmt.Sprintf(".%02d", f), "0")
	}
	return s
}

// conditions compiles the conditions of node (a flag or segment), recording
// which flags and segments it depends on.
func (c *compiler) conditions(file, path string, node int, conds []Condition, set *Set) []condition {
	out := make([]condition, 0, len(conds))
	for _, cd := range conds {
		if cd.broken {
			continue // the parser has reported it
		}
		cp := path + "." + cd.Attribute + "." + cd.Operator
		cc, ok := c.condition(file, cp, node, cd, set)
		if ok {
			out = append(out, cc)
		}
	}
	return out
}

func (c *compiler) condition(file, path string, node int, cd Condition, set *Set) (condition, bool) {
	bad := func(format string, args ...any) (condition, bool) {
		c.add(file, path, cd.line, format, args...)
		return condition{}, false
	}
	kind, name, msg := parseAttribute(cd.Attribute)
	if msg != "" {
		return bad("%s", msg)
	}
	op, known := operators[cd.Operator]
	if !known {
		return bad("unknown operator %q%s: operators are %s", cd.Operator, didYouMean(cd.Operator, operatorNames), strings.Join(operatorNames, ", "))
	}
	if allowed := allowedOperators(kind); allowed != nil && !allowed[op] {
		return bad("operator %s does not apply to %s: use %s", cd.Operator, cd.Attribute, joinOperators(allowed))
	}
	if op.singleValued() && len(cd.Values) != 1 {
		return bad("%s takes one value, got %d", cd.Operator, len(cd.Values))
	}
	if len(cd.Values) == 0 {
		return condition{}, false // the parser has reported why
	}
	cc := condition{kind: kind, name: name, op: op}
	switch kind {
	case kindSegment:
		for _, v := range cd.Values {
			s, ok := c.segAt[v]
			if !ok {
				return bad("unknown segment %q%s", v, didYouMean(v, keys(c.segAt)))
			}
			cc.refs = append(cc.refs, s)
			c.deps[node] = append(c.deps[node], len(c.flagDefs)+s)
		}
		return cc, true
	case kindFlag:
		fi, ok := c.flagAt[name]
		if !ok {
			return bad("unknown flag %q%s", name, didYouMean(name, keys(c.flagAt)))
		}
		cc.flag = fi
		c.deps[node] = append(c.deps[node], fi)
		pre := &set.flags[fi]
		for _, v := range cd.Values {
			i := indexOf(pre.variants, v)
			if i < 0 && !c.flagDefs[fi].broken && !pre.partial {
				return bad("flag %s has no variant %q: its variants are %s%s", name, v, strings.Join(pre.variants, ", "), didYouMean(v, pre.variants))
			}
			if i >= 0 {
				cc.variants |= 1 << i
			}
		}
		return cc, true
	case kindNow:
		t, err := time.Parse(time.RFC3339, cd.Values[0])
		if err != nil {
			return bad("%q is not an RFC 3339 time: write e.g. \"2026-12-01T09:00:00Z\" (with a time zone)", cd.Values[0])
		}
		cc.at = t
		return cc, true
	case kindIP:
		for _, v := range cd.Values {
			p, err := parsePrefix(v, op == opCIDR)
			if err != nil {
				return bad("%v", err)
			}
			cc.prefixes = append(cc.prefixes, p)
		}
		return cc, true
	}
	values := cd.Values
	switch kind {
	case KindCountry, KindContinent, KindEU:
		values = make([]string, len(cd.Values))
		for i, v := range cd.Values {
			var err error
			switch kind {
			case KindCountry:
				values[i], err = normalizeCountry(v)
			case KindContinent:
				values[i], err = normalizeContinent(v)
			default:
				values[i] = strings.ToLower(v)
				if values[i] != "true" && values[i] != "false" {
					err = fmt.Errorf("%q: eu is \"true\" or \"false\"", v)
				}
			}
			if err != nil {
				return bad("%v", err)
			}
		}
	case KindMethod:
		values = mapStrings(values, strings.ToUpper)
	case KindHost:
		values = mapStrings(values, strings.ToLower)
	}
	switch op {
	case opIn, opNotIn:
		if len(values) > smallSet {
			cc.set = make(map[string]struct{}, len(values))
			for _, v := range values {
				cc.set[v] = struct{}{}
			}
		} else {
			cc.strs = values
		}
	case opPrefix, opSuffix, opContains:
		cc.strs = values
	case opRegex:
		src := values[0]
		if len(values) > 1 {
			src = "(?:" + strings.Join(values, ")|(?:") + ")"
		}
		re, err := regexp.Compile(src)
		if err != nil {
			return bad("bad regex %q: %s", src, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
		}
		cc.re = re
		// Go does not report the literal prefix of an anchored pattern with
		// a class, so the quick reject is worked out from the rest of it.
		if rest, anchored := strings.CutPrefix(src, "^"); anchored && len(values) == 1 {
			if r, err := regexp.Compile(rest); err == nil {
				cc.reLiteral, _ = r.LiteralPrefix()
			}
		}
	case opSemverEq, opSemverGt, opSemverGte, opSemverLt, opSemverLte:
		v, ok := parseSemver(values[0])
		if !ok {
			return bad("%q is not a semantic version: write e.g. 2.4.0 or 2.4.0-beta.1", values[0])
		}
		cc.ver = v
	case opGt, opGte, opLt, opLte:
		n, ok := parseFinite(values[0])
		if !ok {
			return bad("%q is not a finite number: write e.g. 18 or 2.5", values[0])
		}
		cc.num = n
	case opCIDR:
		return bad("cidr applies to ip only")
	default:
		return bad("operator %s does not apply to %s", cd.Operator, cd.Attribute)
	}
	return cc, true
}

func parseAttribute(attr string) (Kind, string, string) {
	if k, ok := plainAttributes[attr]; ok {
		return k, "", ""
	}
	for prefix, k := range namedAttributes {
		name, ok := strings.CutPrefix(attr, prefix)
		if !ok {
			continue
		}
		if k == kindFlag {
			if msg := checkFlagKey(name); msg != "" {
				return 0, "", msg
			}
			return k, name, ""
		}
		if !tokenPattern.MatchString(name) {
			return 0, "", fmt.Sprintf("%q is not a valid %s name", name, strings.TrimSuffix(prefix, "."))
		}
		if k == KindHeader {
			name = canonicalHeaderKey(name)
		}
		return k, name, ""
	}
	return 0, "", fmt.Sprintf("unknown attribute %q%s: attributes are %s", attr, didYouMean(attr, attributeNames), strings.Join(attributeNames, ", "))
}

// allowedOperators returns the operators an attribute takes, or nil for all
// string operators.
func allowedOperators(k Kind) map[operator]bool {
	switch k {
	case kindSegment, kindFlag, KindCountry, KindContinent, KindEU:
		return map[operator]bool{opIn: true, opNotIn: true}
	case kindIP:
		return map[operator]bool{opIn: true, opNotIn: true, opCIDR: true}
	case kindNow:
		return map[operator]bool{opAfter: true, opBefore: true}
	}
	return map[operator]bool{opIn: true, opNotIn: true, opPrefix: true, opSuffix: true, opContains: true, opRegex: true,
		opSemverEq: true, opSemverGt: true, opSemverGte: true, opSemverLt: true, opSemverLte: true, opGt: true, opGte: true, opLt: true, opLte: true}
}

func joinOperators(allowed map[operator]bool) string {
	var names []string
	for _, n := range operatorNames {
		if allowed[operators[n]] {
			names = append(names, n)
		}
	}
	return strings.Join(names, ", ")
}

func parsePrefix(v string, cidr bool) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return p, fmt.Errorf("%q is not a CIDR block: write e.g. 10.0.0.0/8 or 2001:db8::/32", v)
		}
		if p.Masked() != p {
			return p, fmt.Errorf("%q has host bits set: did you mean %s?", v, p.Masked())
		}
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p.Addr())), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		if cidr {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR block: write e.g. 10.0.0.0/8 or 2001:db8::/32", v)
		}
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address", v)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// unmapBits is how many prefix bits an IPv4-mapped IPv6 prefix loses when
// written as IPv4.
func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

func canonicalHeaderKey(s string) string {
	b := []byte(s)
	upper := true
	for i, c := range b {
		switch {
		case upper && 'a' <= c && c <= 'z':
			b[i] = c - 'a' + 'A'
		case !upper && 'A' <= c && c <= 'Z':
			b[i] = c - 'A' + 'a'
		}
		upper = c == '-'
	}
	return string(b)
}

func mapStrings(in []string, fn func(string) string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = fn(s)
	}
	return out
}

func keys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// cycles reports every prerequisite or segment cycle once.
func (c *compiler) cycles() {
	const (
		unvisited = iota
		visiting
		visited
	)
	state := make([]int, len(c.deps))
	var stack []int
	var visit func(n int)
	visit = func(n int) {
		state[n] = visiting
		stack = append(stack, n)
		for _, d := range c.deps[n] {
			switch state[d] {
			case unvisited:
				visit(d)
			case visiting:
				c.reportCycle(stack, d)
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = visited
	}
	for n := range c.deps {
		if state[n] == unvisited {
			visit(n)
		}
	}
}

func (c *compiler) reportCycle(stack []int, start int) {
	i := len(stack) - 1
	for stack[i] != start {
		i--
	}
	var names []string
	for _, n := range append(stack[i:], start) {
		names = append(names, c.nodeName(n))
	}
	file, path, line := c.nodeWhere(start)
	c.add(file, path, line, "cycle: %s: a flag cannot depend on itself through prerequisites or segments", strings.Join(names, " → "))
}

func (c *compiler) nodeName(n int) string {
	if n < len(c.flagDefs) {
		return "flag." + c.flagDefs[n].Key
	}
	return "segment " + c.segDefs[n-len(c.flagDefs)].Name
}

func (c *compiler) nodeWhere(n int) (file, path string, line int) {
	if n < len(c.flagDefs) {
		return c.flagDoc[n], "flags." + c.flagDefs[n].Key, c.flagDefs[n].line
	}
	s := n - len(c.flagDefs)
	return c.segDoc[s], "segments." + c.segDefs[s].Name, c.segDefs[s].line
}
