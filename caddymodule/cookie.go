package caddymodule

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// cookieSettings is a Cookie with defaults applied and its regex compiled.
type cookieSettings struct {
	name, domain string
	maxAge       int // seconds
	secure       string
	sameSite     http.SameSite
	consent      string // consent cookie name, "" when none is needed
	consentValue *regexp.Regexp
}

func newCookieSettings(c *Cookie) (cookieSettings, error) {
	if c == nil {
		c = &Cookie{}
	}
	s := cookieSettings{name: c.Name, domain: c.Domain, secure: c.Secure, sameSite: http.SameSiteLaxMode}
	if s.name == "" {
		s.name = DefaultCookieName
	}
	if !validCookieName(s.name) {
		return s, fmt.Errorf("feature_flags: cookie name %q: use letters, digits, - and _", s.name)
	}
	maxAge := time.Duration(c.MaxAge)
	if maxAge == 0 {
		maxAge = time.Duration(DefaultCookieMaxAge)
	}
	if maxAge < time.Second {
		return s, fmt.Errorf("feature_flags: cookie max_age %s: give at least a second, e.g. 365d", maxAge)
	}
	s.maxAge = int(maxAge / time.Second)
	switch s.secure {
	case "":
		s.secure = "auto"
	case "auto", "always", "never":
	default:
		return s, fmt.Errorf("feature_flags: cookie secure %q: use auto, always or never", s.secure)
	}
	switch strings.ToLower(c.SameSite) {
	case "", "lax":
	case "strict":
		s.sameSite = http.SameSiteStrictMode
	case "none":
		if s.secure == "never" {
			return s, fmt.Errorf("feature_flags: cookie same_site none needs Secure: browsers drop it otherwise; set secure always or auto")
		}
		s.sameSite = http.SameSiteNoneMode
		s.secure = "always"
	default:
		return s, fmt.Errorf("feature_flags: cookie same_site %q: use lax, strict or none", c.SameSite)
	}
	if c.Consent != nil {
		if !validCookieName(c.Consent.Cookie) {
			return s, fmt.Errorf("feature_flags: cookie consent: %q is not a cookie name", c.Consent.Cookie)
		}
		s.consent = c.Consent.Cookie
		if c.Consent.Value != "" {
			re, err := regexp.Compile(c.Consent.Value)
			if err != nil {
				return s, fmt.Errorf("feature_flags: cookie consent value %q: %v", c.Consent.Value, err)
			}
			s.consentValue = re
		}
	}
	return s, nil
}

func validCookieName(s string) bool {
	return validHeaderName(s)
}

// validID reports whether a cookie value is kept as the identity: 8 to 128
// characters of [A-Za-z0-9_-] (DESIGN.md §4), so an id minted by another
// system carries over and nothing else does.
func validID(v string) bool {
	if len(v) < 8 || len(v) > 128 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c == '-' || c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// mintID returns 128 random bits, base64url without padding (22 characters).
func mintID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand panics rather than return short)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// identityCookie returns the first value of the named cookie that is a
// valid identity: a malformed duplicate must not hide a good one (which
// would mint a new id on every request).
func identityCookie(h http.Header, name string) string {
	return findCookie(h, name, func(v string) (string, bool) {
		v = strings.Trim(v, `"`)
		return v, validID(v)
	})
}

// cookieSite is a handler with the cookie name it uses, and where it sits
// in the config: the modules that provisioned it.
type cookieSite struct {
	parents []caddy.Module
	name    string
}

// parents returns the modules above the one ctx is provisioning.
func parents(ctx caddy.Context) []caddy.Module {
	mods := ctx.Modules()
	return mods[:max(len(mods)-1, 0)]
}

// addCookieSite records the cookie name of a handler, for the matchers of
// its site.
func (a *App) addCookieSite(ctx caddy.Context, name string) {
	a.cookieSitesMu.Lock()
	defer a.cookieSitesMu.Unlock()
	a.cookieSites = append(a.cookieSites, cookieSite{parents(ctx), name})
}

// cookieNameAt returns the identity cookie name for a matcher placed under
// parents: that of the handler nearest to it in the config (the longest
// shared line of parents — its own site, its own route), so that a matcher
// reached before the handler reads the cookie the handler sets. Without
// one handler nearest, or when the nearest disagree, the global name.
func (a *App) cookieNameAt(parents []caddy.Module) string {
	a.cookieSitesMu.Lock()
	defer a.cookieSitesMu.Unlock()
	best, name := -1, a.cookie.name
	for _, site := range a.cookieSites {
		shared := 0
		for shared < len(parents) && shared < len(site.parents) && parents[shared] == site.parents[shared] {
			shared++
		}
		switch {
		case shared > best:
			best, name = shared, site.name
		case shared == best && site.name != name:
			name = a.cookie.name
		}
	}
	return name
}

// cookieValue returns the value of the named cookie without parsing the
// others, and so without allocating. The empty string when absent.
func cookieValue(h http.Header, name string) string {
	return findCookie(h, name, func(v string) (string, bool) {
		if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return v, true
	})
}

// findCookie returns the first value of the named cookie that accept
// takes, as accept returns it; accept gets each value as sent, quotes and
// all, in order.
func findCookie(h http.Header, name string, accept func(string) (string, bool)) string {
	for _, line := range h["Cookie"] {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			if k, v, ok := strings.Cut(strings.TrimSpace(part), "="); ok && k == name {
				if v, ok := accept(v); ok {
					return v
				}
			}
		}
	}
	return ""
}

// consentGiven reports whether the request carries the consent cookie, or
// whether no consent is configured.
func (s *cookieSettings) consentGiven(h http.Header) bool {
	if s.consent == "" {
		return true
	}
	v := cookieValue(h, s.consent)
	if v == "" {
		return false
	}
	return s.consentValue == nil || s.consentValue.MatchString(v)
}

// setCookie adds the identity cookie to the response.
func (s *cookieSettings) setCookie(w http.ResponseWriter, r *http.Request, name, domain, id string) {
	secure := s.secure == "always" || (s.secure == "auto" && r.TLS != nil)
	c := &http.Cookie{
		Name:     name,
		Value:    id,
		Path:     "/",
		Domain:   domain,
		MaxAge:   s.maxAge,
		HttpOnly: true,
		Secure:   secure,
		SameSite: s.sameSite,
	}
	w.Header().Add("Set-Cookie", c.String())
}
