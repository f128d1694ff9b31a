package dashboard

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/edgeflags/edgeflags/rules"
)

// Describe says in plain words who gets which variant of f, one line per
// rule, then everyone else: "on for 10 % and off for 90 % of users whose
// country is DE or FR". A disabled flag is one line: everyone gets its off
// variant. A rollout follows the rules, at its candidate's share now.
func Describe(f *rules.Flag) []string {
	if !*f.Enabled {
		return []string{fmt.Sprintf("Turned off: everyone gets %s.", f.OffVariant)}
	}
	var out []string
	for i, r := range f.Rules {
		line := RuleWords(f, r)
		if i > 0 && len(r.When) == 0 {
			line = strings.Replace(line, " everyone.", " everyone else.", 1)
		}
		out = append(out, line)
		if len(r.When) == 0 {
			return out // nobody is left for what follows
		}
	}
	if f.Rollout != nil {
		out = append(out, fmt.Sprintf("Rolling out: %s for %s of the others (identified users), %s for the rest.",
			f.Rollout.Variant, percent(f.CandidateShare()), f.OffVariant))
		return out
	}
	if len(out) == 0 {
		return []string{capitalize(f.Default + " for everyone.")}
	}
	return append(out, capitalize(f.Default+" for everyone else."))
}

// RuleWords says one rule of f in plain words.
func RuleWords(f *rules.Flag, r rules.Rule) string {
	who := "everyone"
	if len(r.When) > 0 {
		who = "users " + conditions(r.When)
	}
	if r.Serve != "" {
		return capitalize(fmt.Sprintf("%s for %s.", r.Serve, who))
	}
	return fmt.Sprintf("%s of %s.", weights(bucketOrder(f, r.Split)), who)
}

// Uniform reports the variant f serves to everyone, when it serves one:
// killed, no rules (the default), or a first rule for everyone with one
// variant at 100 %. Such a flag is code to delete once it stays so.
func Uniform(f *rules.Flag) (string, bool) {
	if !*f.Enabled {
		return f.OffVariant, true
	}
	if len(f.Rules) == 0 {
		if f.Rollout != nil {
			switch f.CandidateShare() {
			case 0:
				return f.OffVariant, true
			case 10000:
				return f.Rollout.Variant, true
			}
			return "", false
		}
		return f.Default, true
	}
	r := f.Rules[0]
	if len(r.When) > 0 {
		return "", false
	}
	if r.Serve != "" {
		return r.Serve, true
	}
	for _, w := range r.Split {
		if w.BasisPoints == 10000 {
			return w.Variant, true
		}
	}
	return "", false
}

// bucketOrder is a split's weights in the order they take buckets (the
// hashing contract): the variants other than the off variant as the flag
// lists them, then the off variant. A split reads the same however its
// source wrote it.
func bucketOrder(f *rules.Flag, split []rules.Weight) []rules.Weight {
	rank := func(v string) int {
		if v == f.OffVariant {
			return len(f.Variants)
		}
		return slices.Index(f.Variants, v)
	}
	out := slices.Clone(split)
	slices.SortStableFunc(out, func(a, b rules.Weight) int { return rank(a.Variant) - rank(b.Variant) })
	return out
}

// weights says a split: "on for 10 % and off for 90 %".
func weights(split []rules.Weight) string {
	parts := make([]string, 0, len(split))
	for _, w := range split {
		parts = append(parts, w.Variant+" for "+percent(w.BasisPoints))
	}
	return capitalize(join(parts, "and"))
}

// percent writes basis points as a percentage: 1250 → "12.5 %".
func percent(bp int) string {
	return strconv.FormatFloat(float64(bp)/100, 'f', -1, 64) + " %"
}

// conditions says what a rule's conditions ask, all of them.
func conditions(when []rules.Condition) string {
	parts := make([]string, 0, len(when))
	for _, c := range when {
		parts = append(parts, condition(c))
	}
	return join(parts, "and")
}

// condition says one condition: "whose country is DE or FR", "in segment
// testers", "who get on of flag new-checkout".
func condition(c rules.Condition) string {
	values := join(c.Values, "or")
	attr, name, _ := strings.Cut(c.Attribute, ".")
	subject := map[string]string{"header": "whose header " + name, "cookie": "whose cookie " + name,
		"query": "whose query parameter " + name, "user_agent": "whose browser (User-Agent)", "ip": "whose IP address",
		"user": "whose user id", "now": "when the time"}[attr]
	if subject == "" {
		subject = "whose " + attr
	}
	switch {
	case attr == "segment" && c.Operator == "in":
		return "in segment " + values
	case attr == "segment":
		return "not in segment " + values
	case attr == "flag" && c.Operator == "in":
		return fmt.Sprintf("who get %s of flag %s", values, name)
	case attr == "flag":
		return fmt.Sprintf("who do not get %s of flag %s", values, name)
	case attr == "eu":
		if c.Operator == "in" && values == "true" || c.Operator == "not_in" && values == "false" {
			return "in the EU"
		}
		return "outside the EU"
	case attr == "ip" && c.Operator == "cidr":
		return "whose IP address is in " + values
	}
	verb := map[string]string{"in": "is", "not_in": "is not", "prefix": "starts with", "suffix": "ends with",
		"contains": "contains", "regex": "matches the pattern", "semver_eq": "is version", "semver_gt": "is a version above",
		"semver_gte": "is version", "semver_lt": "is a version below", "semver_lte": "is version",
		"gt": "is above", "gte": "is at least", "lt": "is below", "lte": "is at most", "after": "is after", "before": "is before"}[c.Operator]
	if verb == "" {
		verb = c.Operator
	}
	suffix := map[string]string{"semver_gte": " or later", "semver_lte": " or earlier"}[c.Operator]
	return subject + " " + verb + " " + values + suffix
}

// join writes a list as people do: "a", "a or b", "a, b or c".
func join(items []string, word string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " " + word + " " + items[len(items)-1]
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// Why says an Answer's reason in plain words, with the reason's name for
// those who read the admin API or the logs.
func (a Answer) Why() string {
	rule := "a rule"
	var n int
	if _, err := fmt.Sscanf(a.Rule, "rules[%d]", &n); err == nil {
		rule = fmt.Sprintf("rule %d", n+1) // as the flag's page numbers them
	} else if a.Rule != "" {
		rule = "rule “" + a.Rule + "”"
	}
	var why string
	switch a.Reason {
	case "DISABLED":
		why = "Turned off: the kill switch"
	case "OVERRIDE":
		why = "A preview or QA override asks for it"
	case "BOT":
		why = "A crawler: it gets the default"
	case "STATIC":
		why = "The flag has no rules: the default"
	case "TARGETING_MATCH":
		why = capitalize(rule) + " matched"
	case "SPLIT":
		why = capitalize(rule) + " matched and split the users"
		if a.Bucket != nil {
			why += fmt.Sprintf("; this one is in bucket %d of 10,000", *a.Bucket)
		}
	case "DEFAULT":
		why = "No rule matched: the default"
	default:
		return a.Reason
	}
	return why + " (" + a.Reason + ")"
}
