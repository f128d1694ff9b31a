package caddymodule

import (
	"errors"
	"fmt"
	"strings"
)

// A minimal reader of RFC 9651 structured-field dictionaries, enough for
// Feature-Override: members whose values are tokens, integers, strings,
// byte sequences or booleans, with parameters (ignored). Inner lists are
// refused.

type itemKind uint8

const (
	kindToken itemKind = iota + 1
	kindInteger
	kindString
	kindBytes
	kindBoolean
)

type member struct {
	key   string
	value string // the token, integer digits, string content, or base64 text
	kind  itemKind
}

// maxDictionaryMembers bounds what one header may carry.
const maxDictionaryMembers = 256

func parseDictionary(s string) ([]member, error) {
	p := sfParser{s: s}
	p.skipSP()
	var out []member
	for !p.done() {
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		m := member{key: key, value: "?1", kind: kindBoolean}
		if p.peek() == '=' {
			p.i++
			if m.value, m.kind, err = p.bareItem(); err != nil {
				return nil, fmt.Errorf("member %s: %w", key, err)
			}
		}
		if err := p.parameters(); err != nil {
			return nil, err
		}
		out = append(out, m)
		if len(out) > maxDictionaryMembers {
			return nil, errors.New("too many members")
		}
		p.skipOWS()
		if p.done() {
			break
		}
		if p.peek() != ',' {
			return nil, fmt.Errorf("expected a comma at %d", p.i)
		}
		p.i++
		p.skipOWS()
		if p.done() {
			return nil, errors.New("trailing comma")
		}
	}
	return out, nil
}

type sfParser struct {
	s string
	i int
}

func (p *sfParser) done() bool { return p.i >= len(p.s) }
func (p *sfParser) peek() byte {
	if p.done() {
		return 0
	}
	return p.s[p.i]
}
func (p *sfParser) skipSP() {
	for !p.done() && p.s[p.i] == ' ' {
		p.i++
	}
}
func (p *sfParser) skipOWS() {
	for !p.done() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *sfParser) key() (string, error) {
	start := p.i
	if c := p.peek(); !(c >= 'a' && c <= 'z' || c == '*') {
		return "", fmt.Errorf("a key must start with a-z or * at %d", p.i)
	}
	for !p.done() && isKeyChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i], nil
}

func isKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '*'
}

func isKey(s string) bool {
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z' || s[0] == '*') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isKeyChar(s[i]) {
			return false
		}
	}
	return true
}

func isTChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~:/", c) >= 0
}

func isToken(s string) bool {
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z' || s[0] == '*') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTChar(s[i]) {
			return false
		}
	}
	return true
}

func (p *sfParser) bareItem() (string, itemKind, error) {
	c := p.peek()
	switch {
	case c == '-' || c >= '0' && c <= '9':
		start := p.i
		if c == '-' {
			p.i++
		}
		digits := 0
		for !p.done() && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
			digits++
		}
		if digits == 0 || digits > 15 {
			return "", 0, errors.New("bad integer")
		}
		if p.peek() == '.' {
			return "", 0, errors.New("decimals are not supported here")
		}
		return p.s[start:p.i], kindInteger, nil
	case c == '"':
		p.i++
		var b strings.Builder
		for !p.done() {
			ch := p.s[p.i]
			p.i++
			switch {
			case ch == '\\':
				if p.done() || (p.s[p.i] != '"' && p.s[p.i] != '\\') {
					return "", 0, errors.New("bad escape in string")
				}
				b.WriteByte(p.s[p.i])
				p.i++
			case ch == '"':
				return b.String(), kindString, nil
			case ch < 0x20 || ch > 0x7e:
				return "", 0, errors.New("bad character in string")
			default:
				b.WriteByte(ch)
			}
		}
		return "", 0, errors.New("unterminated string")
	case c == ':':
		p.i++
		start := p.i
		for !p.done() && p.s[p.i] != ':' {
			ch := p.s[p.i]
			if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '+' || ch == '/' || ch == '=') {
				return "", 0, errors.New("bad byte sequence")
			}
			p.i++
		}
		if p.done() {
			return "", 0, errors.New("unterminated byte sequence")
		}
		v := p.s[start:p.i]
		p.i++
		return v, kindBytes, nil
	case c == '?':
		p.i++
		if b := p.peek(); b == '0' || b == '1' {
			p.i++
			return "?" + string(b), kindBoolean, nil
		}
		return "", 0, errors.New("bad boolean")
	case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '*':
		start := p.i
		for !p.done() && isTChar(p.s[p.i]) {
			p.i++
		}
		return p.s[start:p.i], kindToken, nil
	case c == '(':
		return "", 0, errors.New("inner lists are not supported")
	}
	return "", 0, fmt.Errorf("unexpected %q", c)
}

// parameters skips ;key[=item] parameters.
func (p *sfParser) parameters() error {
	for p.peek() == ';' {
		p.i++
		p.skipSP()
		if _, err := p.key(); err != nil {
			return err
		}
		if p.peek() == '=' {
			p.i++
			if _, _, err := p.bareItem(); err != nil {
				return err
			}
		}
	}
	return nil
}
