package caddymodule

import (
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
	"unsafe"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/edgeflags/edgeflags/geoip"
	"github.com/edgeflags/edgeflags/rules"
)

// stateVar is the Caddy request variable holding a request's evaluation.
const stateVar = "feature_flags"

// requestState is everything edgeflags knows of one request: the flags'
// answers, computed once, and the attributes they were computed from. It is
// one allocation: the evaluation, header values and dictionary live inline.
// It is never pooled — placeholders may be read after the handler returns
// (log_append, access logs) — so nothing in it is ever reused.
type requestState struct {
	ev   rules.Evaluation
	app  *App
	set  *rules.Set
	r    *http.Request
	repl *caddy.Replacer

	vars       map[string]any // Caddy's request variables
	cookieName string         // the identity cookie's name, as whoever evaluated first read it
	cookieID   string         // the identity cookie, read or just minted; "" when none
	minted     bool           // cookieID was minted for this request
	watch      responseWatch  // the response, for observed flags
	unit       string
	user       string
	unitRead   bool
	loc        geoip.Location
	locRead    bool
	ip         netip.Addr
	ipRead     bool
	now        time.Time
	evaluated  bool
	bot        bool
	botRead    bool
	overrides  []override
	consent    bool // the identity cookie may be read and set

	dict       string
	dictBuf    [384]byte
	headerVals [rules.InlineFlags + 1]string
}

// stateOf returns the request's state, or nil before anything evaluated it.
func stateOf(r *http.Request) *requestState {
	s, _ := caddyhttp.GetVar(r.Context(), stateVar).(*requestState)
	return s
}

// newState starts a request's state and keeps it on the request, so that
// handler, matchers, placeholders and logs see one answer.
// cookieName is the identity cookie's name on this site. It reads the QA
// overrides and strips them; the caller strips spoofed flag headers before
// anything evaluates.
func newState(app *App, r *http.Request, cookieName string) *requestState {
	ctx := r.Context()
	s := &requestState{app: app, set: app.set.Load(), r: r, cookieName: cookieName}
	s.repl, _ = ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	s.vars, _ = ctx.Value(caddyhttp.VarsCtxKey).(map[string]any)
	overrideCookie := cookieValue(r.Header, app.overrides.cookie)
	s.overrides = app.overrides.overridesFor(r.Header, overrideCookie, s.IP, time.Now())
	delete(r.Header, overrideHeader)
	if overrideCookie != "" {
		stripOverrideCookie(r.Header, app.overrides.cookie)
	}
	s.consent = app.usesCookie && app.cookie.consentGiven(r.Header)
	if s.consent {
		s.cookieID = identityCookie(r.Header, cookieName)
	}
	if s.vars != nil {
		s.vars[stateVar] = s
	}
	if s.repl != nil {
		s.repl.Map(s.placeholder)
	}
	return s
}

// mintCookie sets a new identity cookie on the response of a visitor who
// has none, when the cookie is in use, consent is given and the client is
// not a bot. It returns the new id, or "".
func (s *requestState) mintCookie(w http.ResponseWriter, name, domain string) string {
	if s.cookieID != "" || !s.consent || s.Bot() {
		return ""
	}
	if name != s.cookieName && identityCookie(s.r.Header, name) != "" {
		return "" // a matcher read another cookie first; the visitor has this one
	}
	id := mintID()
	s.app.cookie.setCookie(w, s.r, name, domain, id)
	return id
}

// evaluate computes every flag once; later calls do nothing.
func (s *requestState) evaluate() {
	if s.evaluated {
		return
	}
	s.evaluated = true
	s.ev.Reset(s.set, s)
	s.ev.All()
}

// Unit implements rules.Request: the first non-empty identity source.
func (s *requestState) Unit() string {
	if !s.unitRead {
		s.unitRead = true
		for _, src := range s.app.identity {
			if src.placeholder == "" {
				if s.cookieID != "" {
					s.unit = s.cookieID
					break
				}
				continue
			}
			if v := s.placeholderValue(src.placeholder); v != "" {
				s.unit, s.user = v, v
				break
			}
		}
	}
	return s.unit
}

func (s *requestState) placeholderValue(key string) string {
	if s.repl == nil {
		return ""
	}
	v, ok := s.repl.Get(key)
	if !ok {
		return ""
	}
	str, _ := v.(string)
	return str
}

// Value implements rules.Request.
func (s *requestState) Value(kind rules.Kind, name string) string {
	r := s.r
	switch kind {
	case rules.KindUser:
		s.Unit()
		return s.user
	case rules.KindCountry:
		return s.location().Country
	case rules.KindContinent:
		return s.location().Continent
	case rules.KindEU:
		if s.location().EU {
			return "true"
		}
		return "false"
	case rules.KindHost:
		return hostOnly(r.Host)
	case rules.KindPath:
		return r.URL.Path
	case rules.KindMethod:
		return r.Method
	case rules.KindUserAgent:
		return firstValue(r.Header, "User-Agent")
	case rules.KindHeader:
		return firstValue(r.Header, name)
	case rules.KindCookie:
		return cookieValue(r.Header, name)
	case rules.KindQuery:
		return queryValue(r.URL.RawQuery, name)
	}
	return ""
}

// IP implements rules.Request: the client address Caddy resolved, with
// trusted_proxies applied.
func (s *requestState) IP() netip.Addr {
	if !s.ipRead {
		s.ipRead = true
		s.ip = clientAddr(s.vars, s.r.RemoteAddr)
	}
	return s.ip
}

// clientAddr is the client address Caddy resolved (its client_ip
// variable, trusted_proxies applied), or else the peer's.
func clientAddr(vars map[string]any, remoteAddr string) netip.Addr {
	if v, ok := vars[caddyhttp.ClientIPVarKey].(string); ok {
		if ip, err := netip.ParseAddr(v); err == nil {
			return ip
		}
	}
	ap, _ := netip.ParseAddrPort(remoteAddr)
	return ap.Addr()
}

// Now implements rules.Request.
func (s *requestState) Now() time.Time {
	if s.now.IsZero() {
		s.now = time.Now()
	}
	return s.now
}

// Bot implements rules.Request: the user agent is a crawler's.
func (s *requestState) Bot() bool {
	if !s.botRead {
		s.botRead = true
		s.bot = s.app.bots.match(firstValue(s.r.Header, "User-Agent"))
	}
	return s.bot
}

// Override implements rules.Request: a trusted QA override.
func (s *requestState) Override(flag string) (string, bool) {
	for _, o := range s.overrides {
		if o.flag == flag {
			return o.variant, true
		}
	}
	return "", false
}

// location returns the client's country: from a CDN header on requests
// from a trusted proxy, else from GeoIP.
func (s *requestState) location() geoip.Location {
	if s.locRead {
		return s.loc
	}
	s.locRead = true
	s.loc = geoip.Unknown
	if h := s.app.countryHeader; h != "" {
		if trusted, _ := s.vars[caddyhttp.TrustedProxyVarKey].(bool); trusted {
			if loc, ok := geoip.CountryLocation(firstValue(s.r.Header, h)); ok {
				s.loc = loc
				return s.loc
			}
		}
	}
	if s.app.geo != nil {
		s.loc = s.app.geo.Lookup(s.IP())
		if s.loc.Country == "XX" {
			metricGeoIPUnknown.Inc()
		} else {
			metricGeoIPKnown.Inc()
		}
	}
	return s.loc
}

// dictionary returns the X-Features value: every flag as an RFC 9651
// dictionary, built once.
func (s *requestState) dictionary() string {
	s.evaluate()
	if s.dict == "" && s.set.Len() > 0 {
		// The bytes are written once and never again (a requestState is
		// never reused), so they can back the string without a copy.
		b := s.ev.AppendDictionary(s.dictBuf[:0])
		s.dict = unsafe.String(unsafe.SliceData(b), len(b))
	}
	return s.dict
}

func firstValue(h http.Header, name string) string {
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// hostOnly strips the port and lower-cases, allocating only for upper case.
func hostOnly(host string) string {
	if h, _, ok := strings.Cut(host, ":"); ok && !strings.HasPrefix(host, "[") {
		host = h
	} else if strings.HasPrefix(host, "[") {
		if i := strings.IndexByte(host, ']'); i > 0 {
			host = host[1:i]
		}
	}
	for i := 0; i < len(host); i++ {
		if 'A' <= host[i] && host[i] <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}

// queryValue returns the first value of a query parameter, unescaping only
// when it has to.
func queryValue(raw, name string) string {
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != name {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			if u, err := url.QueryUnescape(v); err == nil {
				return u
			}
		}
		return v
	}
	return ""
}

var _ rules.Request = (*requestState)(nil)
