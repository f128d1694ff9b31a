package caddymodule

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
)

// QA overrides (DESIGN.md §4): a Feature-Override header, or a cookie
// holding the same base64url-encoded, with an RFC 9651 dictionary of
// flag=variant members. They are honoured from the override_from CIDRs, or
// when signed: the reserved members ff.exp (expiry, Unix seconds) and
// ff.sig (HMAC-SHA256 over the other members) are valid. Anything else is
// ignored, and always stripped before a backend sees it.
const (
	overrideHeader        = "Feature-Override"
	DefaultOverrideCookie = "ff_override"
	overrideExpKey        = "ff.exp"
	overrideSigKey        = "ff.sig"
)

// override is one flag=variant member.
type override struct{ flag, variant string }

// overrideSettings are the app's override options, resolved.
type overrideSettings struct {
	from   []netip.Prefix
	secret []byte
	cookie string
}

// overridesFor returns the request's trusted overrides, or nil. Each
// Feature-Override header line is read on its own (a signature covers one
// line), then the override cookie; the first that is trusted wins, and the
// others are ignored whole — so an untrusted header cannot hide a trusted
// cookie. It does not modify the request.
func (o *overrideSettings) overridesFor(h http.Header, cookie string, clientIP func() netip.Addr, now time.Time) []override {
	candidates := h[overrideHeader]
	if cookie != "" {
		if dec, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(cookie, "=")); err == nil { // overrideCookieValue's
			candidates = append(candidates[:len(candidates):len(candidates)], string(dec))
		}
	}
	for _, raw := range candidates {
		members, err := parseDictionary(raw)
		if err != nil || !o.trusted(members, clientIP, now) {
			continue
		}
		var out []override
		for _, m := range members {
			if m.key != overrideExpKey && m.key != overrideSigKey && m.kind == kindToken {
				out = append(out, override{m.key, m.value})
			}
		}
		return out
	}
	return nil
}

// MaxOverrideTTL is the longest a signed override is valid: a leaked one
// stops working within a month even if nobody rotates the secret.
const MaxOverrideTTL = 30 * 24 * time.Hour

func (o *overrideSettings) trusted(members []member, clientIP func() netip.Addr, now time.Time) bool {
	if len(o.from) > 0 {
		ip := clientIP().Unmap()
		for _, p := range o.from {
			if p.Contains(ip) {
				return true
			}
		}
	}
	if len(o.secret) == 0 {
		return false
	}
	return verifyOverride(o.secret, members, now) == nil
}

// canonicalOverride is what a signature covers: every member but ff.sig,
// as key=value joined by ", ".
func canonicalOverride(members []member) string {
	var parts []string
	for _, m := range members {
		if m.key != overrideSigKey {
			parts = append(parts, m.key+"="+m.value)
		}
	}
	return strings.Join(parts, ", ")
}

func signature(secret []byte, msg string) []byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(msg))
	return mac.Sum(nil)
}

func verifyOverride(secret []byte, members []member, now time.Time) error {
	var exp, sig *member
	for i := range members {
		switch members[i].key {
		case overrideExpKey:
			exp = &members[i]
		case overrideSigKey:
			sig = &members[i]
		}
	}
	if exp == nil || sig == nil || exp.kind != kindInteger || sig.kind != kindBytes {
		return errors.New("not signed: ff.exp and ff.sig are missing")
	}
	want := signature(secret, canonicalOverride(members))
	got, err := base64.StdEncoding.DecodeString(sig.value)
	if err != nil || !hmac.Equal(got, want) {
		return errors.New("bad signature")
	}
	t, _ := strconv.ParseInt(exp.value, 10, 64)
	if now.Unix() >= t {
		return fmt.Errorf("expired at %s", time.Unix(t, 0).UTC().Format(time.RFC3339))
	}
	if t > now.Add(MaxOverrideTTL+time.Minute).Unix() {
		return fmt.Errorf("valid until %s, more than %s ahead", time.Unix(t, 0).UTC().Format(time.RFC3339), MaxOverrideTTL)
	}
	return nil
}

// SignOverride returns a signed Feature-Override header value for the
// flag=variant pairs, valid until exp: what `caddy flags sign-override` prints.
func SignOverride(secret []byte, pairs map[string]string, exp time.Time) (string, error) {
	if ttl := time.Until(exp); ttl <= 0 || ttl > MaxOverrideTTL {
		return "", fmt.Errorf("an override is valid for more than 0 and at most %s (30 days): give e.g. --ttl 8h", MaxOverrideTTL)
	}
	keys := make([]string, 0, len(pairs))
	for k := range pairs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	members := make([]member, 0, len(pairs)+2)
	for _, k := range keys {
		if !isKey(k) || !isToken(pairs[k]) {
			return "", fmt.Errorf("%s=%s: want a flag key and a variant name", k, pairs[k])
		}
		members = append(members, member{key: k, value: pairs[k], kind: kindToken})
	}
	members = append(members, member{key: overrideExpKey, value: strconv.FormatInt(exp.Unix(), 10), kind: kindInteger})
	sig := base64.StdEncoding.EncodeToString(signature(secret, canonicalOverride(members)))
	return canonicalOverride(members) + ", " + overrideSigKey + "=:" + sig + ":", nil
}

// stripOverrideCookie removes the override cookie from the Cookie header.
// overrideCookieValue is a signed override (SignOverride's) as the
// override cookie carries it: base64url, as overridesFor reads it.
func overrideCookieValue(signed string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(signed))
}

func stripOverrideCookie(h http.Header, name string) {
	lines := h["Cookie"]
	changed := false
	for i, line := range lines {
		if !strings.Contains(line, name+"=") {
			continue
		}
		var kept []string
		for _, part := range strings.Split(line, ";") {
			if k, _, _ := strings.Cut(strings.TrimSpace(part), "="); k != name {
				kept = append(kept, strings.TrimSpace(part))
			}
		}
		lines[i] = strings.Join(kept, "; ")
		changed = true
	}
	if changed {
		out := lines[:0]
		for _, l := range lines {
			if l != "" {
				out = append(out, l)
			}
		}
		if len(out) == 0 {
			delete(h, "Cookie")
		} else {
			h["Cookie"] = out
		}
	}
}
