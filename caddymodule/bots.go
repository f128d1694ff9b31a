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
// A user agent is scanned once, looking up each position's first two
// bytes in a bitmap of the tokens' first two: in a browser's user agent
// almost no position gets further.
type botMatcher struct {
	tokens []string // lower case
	pairs  [1 << 16 / 64]uint64
	single [256]bool // one-byte tokens
}

func newBotMatcher(tokens []string) *botMatcher {
	m := &botMatcher{}
	for _, t := range tokens {
		t = strings.ToLower(t)
		switch len(t) {
		case 0:
			continue
		case 1:
			m.single[t[0]] = true
		default:
			p := pair(t[0], t[1])
			m.pairs[p/64] |= 1 << (p % 64)
		}
		m.tokens = append(m.tokens, t)
	}
	return m
}

func pair(a, b byte) int { return int(a)<<8 | int(b) }

// lowerTab lower-cases ASCII letters by lookup: the scan does it twice a byte.
var lowerTab = func() (t [256]byte) {
	for i := range t {
		t[i] = byte(i)
		if 'A' <= i && i <= 'Z' {
			t[i] += 'a' - 'A'
		}
	}
	return t
}()

func lower(c byte) byte { return lowerTab[c] }

// match reports whether ua contains one of the tokens, ignoring case.
func (m *botMatcher) match(ua string) bool {
	if m == nil || len(m.tokens) == 0 || ua == "" {
		return false
	}
	c := lower(ua[0])
	for i := 0; i < len(ua); i++ {
		if m.single[c] {
			return true
		}
		if i+1 == len(ua) {
			break
		}
		following := lower(ua[i+1])
		p := pair(c, following)
		c = following
		if m.pairs[p/64]&(1<<(p%64)) == 0 {
			continue
		}
	tokens:
		for _, t := range m.tokens {
			if len(t) < 2 || len(ua)-i < len(t) {
				continue
			}
			for j := range len(t) {
				if lower(ua[i+j]) != t[j] {
					continue tokens
				}
			}
			return true
		}
	}
	return false
}
