package caddymodule

import "strings"

// defaultBotTokens are case-insensitive pieces of the user agents of
// crawlers and link previewers: Googlebot/2.1, bingbot/2.0, AdsBot-Google,
// PetalBot;, Baiduspider, Slurp, facebookexternalhit, … They are chosen so
// that browsers (and phones named Cubot) do not match.
var defaultBotTokens = []string{
	"bot/", "bot-", "bot;", "bot)", "spider", "crawler", "slurp",
	"facebookexternalhit", "mediapartners-google", "bingpreview", "ia_archiver",
}

// botMatcher finds crawler tokens in a user agent without allocating.
type botMatcher struct {
	tokens []string // lower case
	first  [256]bool
}

func newBotMatcher(tokens []string) *botMatcher {
	m := &botMatcher{}
	for _, t := range tokens {
		t = strings.ToLower(t)
		if t == "" {
			continue
		}
		m.tokens = append(m.tokens, t)
		m.first[t[0]] = true
	}
	return m
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// match reports whether ua contains one of the tokens, ignoring case.
func (m *botMatcher) match(ua string) bool {
	if m == nil || len(m.tokens) == 0 {
		return false
	}
	for i := 0; i < len(ua); i++ {
		if !m.first[lower(ua[i])] {
			continue
		}
	next:
		for _, t := range m.tokens {
			if t[0] != lower(ua[i]) || len(ua)-i < len(t) {
				continue
			}
			for j := 1; j < len(t); j++ {
				if lower(ua[i+j]) != t[j] {
					continue next
				}
			}
			return true
		}
	}
	return false
}
