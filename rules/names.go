package rules

import (
	"fmt"
	"regexp"
	"strings"
)

var (
	flagKeyPattern = regexp.MustCompile(`^[a-z][a-z0-9-]{0,63}$`)
	variantPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,63}$`)
	tagPattern     = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,31}$`)
	// header, cookie and query names: RFC 9110 tokens, no wider than that.
	tokenPattern = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
)

// checkFlagKey says what is wrong with a flag or segment name, or "".
func checkFlagKey(key string) string {
	if flagKeyPattern.MatchString(key) {
		return ""
	}
	msg := fmt.Sprintf("%q is not a valid name: use 1 to 64 of a-z, 0-9 and -, starting with a letter", key)
	if low := strings.ToLower(strings.ReplaceAll(key, "_", "-")); low != key && flagKeyPattern.MatchString(low) {
		msg += fmt.Sprintf(" (did you mean %q?)", low)
	}
	return msg
}

// checkVariant says what is wrong with a variant name, or "".
func checkVariant(v string) string {
	switch strings.ToLower(v) {
	case "true", "false", "null":
		return fmt.Sprintf("%q cannot be a variant name: YAML tools read it as a boolean or null; use e.g. on/off or enabled/disabled", v)
	}
	if !variantPattern.MatchString(v) {
		return fmt.Sprintf("%q is not a valid variant name: use 1 to 64 of A-Z, a-z, 0-9, _, . and -, starting with a letter", v)
	}
	return ""
}

// suggest returns the candidate closest to s when it is close enough to be a
// likely typo, or "".
func suggest(s string, candidates []string) string {
	// Allow about one typo per three letters; a one-letter word only differs in case.
	best, bestDist := "", max(len(s)/3, min(len(s)-1, 1))+1
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), strings.ToLower(c)); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func didYouMean(s string, candidates []string) string {
	if c := suggest(s, candidates); c != "" {
		return fmt.Sprintf(" (did you mean %q?)", c)
	}
	return ""
}
