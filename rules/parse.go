package rules

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Limits on one definition source. A source past them is refused before a
// parse tree is built, so that a runaway file or a hostile origin cannot
// exhaust memory or time: parsing costs about 250 bytes per YAML node, so
// MaxSourceNodes bounds a parse at about 250 MB whatever the file's shape,
// and leaves room for about 15,000 typical flags in one file.
const (
	// MaxSourceSize bounds a source's bytes.
	MaxSourceSize = 32 << 20
	// MaxSourceNodes bounds a source's YAML nodes (scalars, lists and
	// mappings), as counted by nodeBound.
	MaxSourceNodes = 500_000
)

// Parse reads one definition source, YAML 1.2 or JSON (JSON is read as the
// YAML it is). It reports every structural problem it finds — unknown
// fields, values of the wrong kind, a boolean where a variant name belongs —
// as [Errors]. The returned document is never nil: flags that could not be
// read are kept by key only, so that [Load] can report the problems of the
// other flags in the same pass.
func Parse(name string, data []byte) (*Document, error) {
	doc := &Document{Name: name}
	p := &parser{errs: errs{file: name}}
	root := p.unmarshal(name, data)
	if root == nil {
		return doc, p.err() // nil error: an empty file defines nothing
	}
	p.document(doc, root)
	return doc, p.err()
}

// unmarshal parses data into a node tree, after checking the source's
// limits. A .json source is held to JSON's own grammar first, since YAML
// would quietly accept a trailing comma.
func (p *parser) unmarshal(name string, data []byte) *yaml.Node {
	if len(data) > MaxSourceSize {
		p.add("", 0, "the source is %d bytes, more than the limit of %d: split the flags over several files", len(data), MaxSourceSize)
		return nil
	}
	if n := nodeBound(data); n > MaxSourceNodes {
		p.add("", 0, "the source may hold up to %d YAML values, more than the limit of %d: split the flags over several files", n, MaxSourceNodes)
		return nil
	}
	if strings.HasSuffix(strings.ToLower(name), ".json") {
		// Validated without building values: a RawMessage is only checked.
		var v json.RawMessage
		if err := json.Unmarshal(data, &v); err != nil {
			line := 0
			if se, ok := err.(*json.SyntaxError); ok {
				line = 1 + bytes.Count(data[:se.Offset], []byte("\n"))
			}
			p.add("", line, "not valid JSON: %v", err)
			return nil
		}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		p.add("", 0, "not valid YAML or JSON: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		return nil
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nil
	}
	return root.Content[0]
}

// ParseFlag reads one flag definition, as the admin API receives it.
func ParseFlag(name, key string, data []byte) (*Flag, error) {
	p := &parser{errs: errs{file: name}}
	root := p.unmarshal(name, data)
	if root == nil {
		if p.count == 0 {
			p.add("", 0, "empty flag definition")
		}
		return nil, p.err()
	}
	f := p.flag(key, "flags."+key, root)
	return f, p.err()
}

type parser struct {
	errs
}

var (
	documentFields = []string{"$schema", "segments", "flags"}
	flagFields     = []string{"description", "owner", "ticket", "tags", "variants", "off_variant", "default", "enabled", "salt", "client", "header", "observe", "rules", "rollout"}
	rolloutFields  = []string{"variant", "steps", "step_duration", "min_requests", "max_step_duration", "guards", "on_failure"}
	guardKinds     = []string{"failure_rate", "latency"}
	ruleFields     = []string{"name", "when", "serve", "split"}
)

func (p *parser) document(doc *Document, n *yaml.Node) {
	if !p.isMapping(n, "", "the top level") {
		return
	}
	p.fields(n, "", documentFields, func(key string, v *yaml.Node) {
		switch key {
		case "segments":
			p.entries(v, "segments", func(name string, kn, sv *yaml.Node) {
				path := "segments." + name
				doc.Segments = append(doc.Segments, &Segment{Name: name, When: p.conditions(path, sv), line: kn.Line})
			})
		case "flags":
			p.entries(v, "flags", func(key string, kn, fv *yaml.Node) {
				f := p.flag(key, "flags."+key, fv)
				f.line = kn.Line
				doc.Flags = append(doc.Flags, f)
			})
		}
	})
}

func (p *parser) flag(key, path string, n *yaml.Node) *Flag {
	f := &Flag{Key: key, line: n.Line}
	if !p.isMapping(n, path, "a flag") {
		f.broken = true
		return f
	}
	p.fields(n, path, flagFields, func(field string, v *yaml.Node) {
		fp := path + "." + field
		switch field {
		case "description":
			f.Description = p.text(v, fp)
		case "owner":
			f.Owner = p.text(v, fp)
		case "ticket":
			f.Ticket = p.text(v, fp)
		case "tags":
			f.Tags = p.tags(v, fp)
		case "salt":
			f.Salt = p.text(v, fp)
		case "variants":
			before := p.count
			f.lines.variants = v.Line
			p.sequence(v, fp, func(i int, vn *yaml.Node) {
				if name := p.variant(vn, fmt.Sprintf("%s[%d]", fp, i)); name != "" {
					f.Variants = append(f.Variants, name)
					f.lines.variant = append(f.lines.variant, vn.Line)
				}
			})
			f.badVariants = p.count > before
		case "off_variant":
			f.OffVariant, f.lines.offVariant = p.variant(v, fp), v.Line
		case "default":
			f.Default, f.lines.def = p.variant(v, fp), v.Line
		case "enabled":
			f.Enabled = p.boolean(v, fp)
		case "client":
			if b := p.boolean(v, fp); b != nil {
				f.Client = *b
			}
		case "header":
			f.Header = p.boolean(v, fp)
		case "observe":
			if b := p.boolean(v, fp); b != nil {
				f.Observe = *b
			}
		case "rules":
			p.sequence(v, fp, func(i int, rn *yaml.Node) {
				f.Rules = append(f.Rules, p.rule(fmt.Sprintf("%s[%d]", fp, i), rn))
			})
		case "rollout":
			f.Rollout = p.rollout(fp, v)
		}
	})
	return f
}

func (p *parser) rule(path string, n *yaml.Node) Rule {
	r := Rule{line: n.Line}
	if !p.isMapping(n, path, "a rule") {
		return r
	}
	seen := map[string]bool{}
	p.fields(n, path, ruleFields, func(field string, v *yaml.Node) {
		seen[field] = true
		fp := path + "." + field
		before := p.count
		switch field {
		case "name":
			r.Name = p.text(v, fp)
		case "when":
			r.When = p.conditions(fp, v)
		case "serve":
			r.Serve, r.serveLine = p.variant(v, fp), v.Line
			r.badServe = p.count > before
		case "split":
			r.splitLine = v.Line
			p.entries(v, fp, func(variant string, kn, wn *yaml.Node) {
				wp := fp + "." + variant
				p.checkVariantNode(kn, wp)
				r.Split = append(r.Split, Weight{Variant: variant, BasisPoints: p.percent(wn, wp), line: kn.Line})
			})
			r.badSplit = p.count > before
		}
	})
	switch {
	case seen["serve"] && seen["split"]:
		p.add(path, n.Line, "has both serve and split: keep one")
		r.badServe, r.badSplit = true, true
	case !seen["serve"] && !seen["split"]:
		p.add(path, n.Line, "needs serve (one variant) or split (variant: percentage, …)")
		r.badServe, r.badSplit = true, true
	}
	return r
}

func (p *parser) rollout(path string, n *yaml.Node) *Rollout {
	ro := &Rollout{line: n.Line}
	if !p.isMapping(n, path, "a rollout plan") {
		return ro
	}
	p.fields(n, path, rolloutFields, func(field string, v *yaml.Node) {
		fp := path + "." + field
		switch field {
		case "variant":
			ro.Variant, ro.lines.variant = p.variant(v, fp), v.Line
		case "steps":
			ro.lines.steps = v.Line
			p.sequence(v, fp, func(i int, sn *yaml.Node) {
				ro.Steps = append(ro.Steps, p.percentSigned(sn, fmt.Sprintf("%s[%d]", fp, i)))
			})
		case "step_duration":
			ro.StepDuration, ro.lines.stepDuration = p.duration(v, fp), v.Line
		case "max_step_duration":
			ro.MaxStepDuration, ro.lines.maxStepDuration = p.duration(v, fp), v.Line
		case "min_requests":
			ro.MinRequests, ro.lines.minRequests = p.wholeNumber(v, fp), v.Line
		case "on_failure":
			ro.OnFailure, ro.lines.onFailure = p.text(v, fp), v.Line
		case "guards":
			p.sequence(v, fp, func(i int, gn *yaml.Node) {
				ro.Guards = append(ro.Guards, p.guard(fmt.Sprintf("%s[%d]", fp, i), gn))
			})
		}
	})
	return ro
}

func (p *parser) guard(path string, n *yaml.Node) Guard {
	g := Guard{line: n.Line}
	if !p.isMapping(n, path, "a guard (failure_rate: {…} or latency: {…})") {
		return g
	}
	if len(n.Content) != 2 {
		p.add(path, n.Line, "a guard has one kind, %s: write each guard as its own list item", strings.Join(guardKinds, " or "))
	}
	p.fields(n, path, guardKinds, func(kind string, v *yaml.Node) {
		kp := path + "." + kind
		switch kind {
		case "failure_rate":
			g.FailureRate = &FailureRateGuard{MaxIncrease: -1}
			p.fields(v, kp, []string{"max_increase"}, func(_ string, mv *yaml.Node) {
				g.FailureRate.MaxIncrease = p.percentSigned(mv, kp+".max_increase")
			})
			if g.FailureRate.MaxIncrease < 0 && p.isMapping(v, kp, "the guard's settings") {
				p.add(kp, v.Line, "needs max_increase: how many percentage points the candidate's failure rate may exceed the control's by, e.g. {max_increase: 0.5%%}")
			}
		case "latency":
			g.Latency = &LatencyGuard{}
			p.fields(v, kp, []string{"percentile", "max_ratio"}, func(field string, lv *yaml.Node) {
				switch field {
				case "percentile":
					g.Latency.Percentile = p.number(lv, kp+".percentile")
				case "max_ratio":
					g.Latency.MaxRatio = p.number(lv, kp+".max_ratio")
				}
			})
		}
	})
	return g
}

// duration reads a Go duration such as 90s, 10m or 1h30m.
func (p *parser) duration(n *yaml.Node, path string) time.Duration {
	s, ok := p.scalar(n, path)
	if !ok {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		p.add(path, n.Line, "%q is not a duration: write e.g. 90s, 10m or 1h30m", s)
		return 0
	}
	return d
}

// wholeNumber reads a whole number of at least 1.
func (p *parser) wholeNumber(n *yaml.Node, path string) int {
	s, ok := p.scalar(n, path)
	if !ok {
		return 0
	}
	c, err := strconv.Atoi(s)
	if err != nil || c < 1 {
		p.add(path, n.Line, "want a whole number of at least 1, got %s", describe(n))
		return 0
	}
	return c
}

// number reads a finite decimal number.
func (p *parser) number(n *yaml.Node, path string) float64 {
	s, ok := p.scalar(n, path)
	if !ok {
		return 0
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		p.add(path, n.Line, "want a number, got %s", describe(n))
		return 0
	}
	return f
}

// conditions reads a `when` mapping (or a segment): attribute → operator → value(s).
func (p *parser) conditions(path string, n *yaml.Node) []Condition {
	var conds []Condition
	p.entries(n, path, func(attr string, _, ops *yaml.Node) {
		ap := path + "." + attr
		if ops.Kind != yaml.MappingNode {
			p.add(ap, ops.Line, "want operators, e.g. {in: [a, b]}, got %s", describe(ops))
			return
		}
		if len(ops.Content) == 0 {
			p.add(ap, ops.Line, "no operator: write e.g. {in: [a, b]}")
			return
		}
		p.entries(ops, ap, func(op string, _, vn *yaml.Node) {
			op = strings.TrimSpace(op)
			c := Condition{Attribute: attr, Operator: op, line: vn.Line}
			before := p.count
			vp := ap + "." + op
			value := func(i int, sn *yaml.Node) {
				ip := vp
				if vn.Kind == yaml.SequenceNode {
					ip = fmt.Sprintf("%s[%d]", vp, i)
				}
				if strings.HasPrefix(attr, "flag.") {
					p.checkVariantNode(sn, ip)
				}
				if s, ok := p.scalar(sn, ip); ok {
					c.Values = append(c.Values, s)
				}
			}
			if vn.Kind == yaml.SequenceNode {
				if len(vn.Content) == 0 {
					p.add(vp, vn.Line, "empty list: give at least one value")
				}
				p.sequence(vn, vp, value)
			} else {
				value(0, vn)
			}
			c.broken = p.count > before
			conds = append(conds, c)
		})
	})
	return conds
}

// isMapping reports whether n is a mapping, and says what was expected if not.
func (p *parser) isMapping(n *yaml.Node, path, what string) bool {
	n = p.resolve(n, path)
	if n == nil {
		return false
	}
	if n.Kind != yaml.MappingNode {
		p.add(path, n.Line, "want %s as a mapping (key: value), got %s", what, describe(n))
		return false
	}
	return true
}

// fields calls fn for each known field of mapping n and reports unknown ones.
func (p *parser) fields(n *yaml.Node, path string, known []string, fn func(key string, v *yaml.Node)) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		key := kn.Value
		if p.duplicate(n, i, join(path, key)) {
			continue
		}
		if !slices.Contains(known, key) {
			p.add(join(path, key), kn.Line, "unknown field %q%s: known fields are %s", key, didYouMean(key, known), strings.Join(known, ", "))
			continue
		}
		if vn = p.resolve(vn, join(path, key)); vn != nil {
			fn(key, vn)
		}
	}
}

// entries calls fn for each key of a mapping whose keys are names (flags,
// segments, attributes, split variants).
func (p *parser) entries(n *yaml.Node, path string, fn func(key string, kn, vn *yaml.Node)) {
	if !p.isMapping(n, path, "a mapping") {
		return
	}
	var seen map[string]int
	if len(n.Content) > 2*smallSet {
		seen = make(map[string]int, len(n.Content)/2)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		if kn.Kind != yaml.ScalarNode {
			p.add(path, kn.Line, "want a name as key, got %s", describe(kn))
			continue
		}
		if p.duplicateIn(seen, n, i, join(path, kn.Value)) {
			continue
		}
		if vn = p.resolve(vn, join(path, kn.Value)); vn != nil {
			fn(kn.Value, kn, vn)
		}
	}
}

// duplicate reports whether the i-th key of mapping n was written before in
// it: YAML parsers differ on which one wins, so the repeat is refused.
func (p *parser) duplicate(n *yaml.Node, i int, path string) bool {
	return p.duplicateIn(nil, n, i, path)
}

// duplicateIn is duplicate with an index of the keys seen so far, for large
// mappings (flags, segments); with a nil index it scans the earlier keys.
func (p *parser) duplicateIn(seen map[string]int, n *yaml.Node, i int, path string) bool {
	kn := n.Content[i]
	first := 0
	if seen != nil {
		first = seen[kn.Value]
		if first == 0 {
			seen[kn.Value] = i + 1
		}
	} else {
		for j := 0; j < i; j += 2 {
			if n.Content[j].Value == kn.Value {
				first = j + 1
				break
			}
		}
	}
	if first == 0 {
		return false
	}
	p.add(path, kn.Line, "written twice in the same mapping (first at line %d): keep one", n.Content[first-1].Line)
	return true
}

func (p *parser) sequence(n *yaml.Node, path string, fn func(i int, v *yaml.Node)) {
	if n.Kind != yaml.SequenceNode {
		p.add(path, n.Line, "want a list, got %s", describe(n))
		return
	}
	for i, v := range n.Content {
		if v = p.resolve(v, fmt.Sprintf("%s[%d]", path, i)); v != nil {
			fn(i, v)
		}
	}
}

// resolve refuses aliases: following them could expand a small file into an
// enormous one, and a flag file gains little from them.
func (p *parser) resolve(n *yaml.Node, path string) *yaml.Node {
	if n.Kind == yaml.AliasNode {
		p.add(path, n.Line, "YAML aliases (*name) are not supported: write the value out")
		return nil
	}
	return n
}

func (p *parser) scalar(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		p.add(path, n.Line, "want a single value, got %s", describe(n))
		return "", false
	}
	if n.Tag == "!!null" {
		p.add(path, n.Line, "null where a value belongs: write the value (quote it if it is the word null)")
		return "", false
	}
	return n.Value, true
}

// tags reads a flag's tags: short lower-case words, no repeats.
func (p *parser) tags(n *yaml.Node, path string) []string {
	var tags []string
	p.sequence(n, path, func(i int, v *yaml.Node) {
		tp := fmt.Sprintf("%s[%d]", path, i)
		t, ok := p.scalar(v, tp)
		switch {
		case !ok:
		case !tagPattern.MatchString(t):
			p.add(tp, v.Line, "tag %q: write a short lower-case word (a-z, 0-9, _ . -; at most 32 characters, starting with a letter or digit)", t)
		case slices.Contains(tags, t):
			p.add(tp, v.Line, "tag %q is listed twice: list it once", t)
		case len(tags) == maxTags:
			p.add(tp, v.Line, "more than %d tags: keep the ones people filter by", maxTags)
		default:
			tags = append(tags, t)
		}
	})
	return tags
}

const maxTags = 16

func (p *parser) text(n *yaml.Node, path string) string {
	s, _ := p.scalar(n, path)
	return s
}

// variant reads a variant name, refusing booleans and null with advice:
// YAML 1.1 tools rewrite on/off/yes/no as true/false.
func (p *parser) variant(n *yaml.Node, path string) string {
	if !p.checkVariantNode(n, path) {
		return ""
	}
	s, _ := p.scalar(n, path)
	return s
}

func (p *parser) checkVariantNode(n *yaml.Node, path string) bool {
	switch n.Tag {
	case "!!bool":
		p.add(path, n.Line, "%s is a boolean, not a variant name: quote the variant name, e.g. \"on\" (YAML 1.1 tools read on/off/yes/no as booleans)", n.Value)
		return false
	case "!!null":
		p.add(path, n.Line, "null where a variant name belongs: write the variant name, quoted")
		return false
	}
	return true
}

func (p *parser) boolean(n *yaml.Node, path string) *bool {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		p.add(path, n.Line, "want true or false (unquoted), got %s", describe(n))
		return nil
	}
	b := strings.EqualFold(n.Value, "true")
	return &b
}

// percentSigned is percent for a rollout's fields, which read naturally
// with a % sign: 0.5% as well as 0.5.
func (p *parser) percentSigned(n *yaml.Node, path string) int {
	if n.Kind == yaml.ScalarNode && strings.HasSuffix(n.Value, "%") {
		c := *n
		c.Value, c.Tag = strings.TrimSuffix(n.Value, "%"), "!!str"
		n = &c
	}
	return p.percent(n, path)
}

// percent reads a percentage as an exact decimal with at most two places and
// returns it in basis points. Floating point is never involved, so 0.29 is
// 29 basis points on every machine.
func (p *parser) percent(n *yaml.Node, path string) int {
	s, ok := p.scalar(n, path)
	if !ok {
		return 0
	}
	bp, err := parseBasisPoints(s)
	if err != nil {
		p.add(path, n.Line, "%v", err)
	}
	return bp
}

func parseBasisPoints(s string) (int, error) {
	whole, frac, hasDot := strings.Cut(s, ".")
	bad := fmt.Errorf("percentage %q: want a number from 0 to 100 with at most 2 decimals, like 12.5", s)
	if whole == "" || !digits(whole) || (hasDot && (frac == "" || !digits(frac))) {
		return 0, bad
	}
	if len(frac) > 2 {
		return 0, fmt.Errorf("percentage %q has more than 2 decimals: round it to at most 2 (0.01 %% is the smallest share)", s)
	}
	if len(whole) > 3 {
		return 0, bad
	}
	w, _ := strconv.Atoi(whole)
	f, _ := strconv.Atoi((frac + "00")[:2])
	bp := w*100 + f
	if bp > 10000 {
		return 0, fmt.Errorf("percentage %q is more than 100", s)
	}
	return bp, nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// nodeBound returns an upper bound on the number of nodes the YAML parser
// builds for data, from a count of the characters that can start or end
// one: a node of a block collection is on a line of its own or follows
// ": ", "- " or "? "; one in a flow collection follows "[", "{" or ",".
// A comma counts twice, for a flow mapping's key and its implicit null
// value ({a, b}). It over-counts freely (comments, quoted text), never
// under — FuzzNodeBound checks that against the parser itself.
func nodeBound(data []byte) int {
	n := 4 // the document, and a scalar that needs no indicator
	for _, c := range data {
		switch c {
		case ',':
			n += 2
		case ':', '\n', '[', ']', '{', '}', '-', '?':
			n++
		}
	}
	return n
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.Tag {
	case "!!null":
		return "null"
	case "!!bool":
		return "the boolean " + n.Value
	case "!!int", "!!float":
		return "the number " + n.Value
	}
	return strconv.Quote(n.Value)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
