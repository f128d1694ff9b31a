package caddymodule

import (
	"fmt"
	"net/http"
	"net/textproto"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/edgeflags/edgeflags/rules"
)

func init() {
	caddy.RegisterModule(new(Handler))
}

// Handler evaluates every flag once per request and tells the backends: it
// removes incoming headers that spoof its own, adds one X-Feature-<Key>
// header per flag and an X-Features dictionary, sets the identity cookie
// when the visitor has none, and provides the {feature.*} and
// {feature_flags.*} placeholders. It needs the feature_flags global block.
type Handler struct {
	// CookieName overrides the global identity cookie name for this site.
	CookieName string `json:"cookie_name,omitempty"`
	// CookieDomain overrides the global identity cookie domain for this site.
	CookieDomain string `json:"cookie_domain,omitempty"`
	// HeaderPrefix overrides the global per-flag header prefix for this site.
	HeaderPrefix string `json:"header_prefix,omitempty"`
	// Headers is "all" (default): one X-Feature-<Key> header per flag and
	// the X-Features dictionary; or "dictionary": X-Features alone, which
	// costs the proxy less per request (see docs/PERFORMANCE.md).
	Headers string `json:"headers,omitempty"`

	app          *App
	cookieName   string
	cookieDomain string
	prefix       string
	prefixFold   string // lower case, '_' as '-'
	headers      atomic.Pointer[headerNames]
	headersMu    sync.Mutex
}

// headerNames are the per-flag header names of one flag set, "" for a flag
// with header: false.
type headerNames struct {
	set   *rules.Set
	names []string
	count int
	ours  map[string]bool // every name this handler sets, X-Features included
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.feature_flags",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision finds the feature_flags app.
func (h *Handler) Provision(ctx caddy.Context) error {
	app, err := appFrom(ctx, "the feature_flags directive")
	if err != nil {
		return err
	}
	h.app = app
	h.cookieName = firstNonEmpty(h.CookieName, app.cookie.name)
	h.cookieDomain = firstNonEmpty(h.CookieDomain, app.cookie.domain)
	h.prefix = firstNonEmpty(h.HeaderPrefix, app.HeaderPrefix)
	h.prefixFold = foldHeader(h.prefix)
	return nil
}

// Validate checks the per-site overrides.
func (h *Handler) Validate() error {
	if h.CookieName != "" && !validCookieName(h.CookieName) {
		return fmt.Errorf("feature_flags: cookie_name %q: use letters, digits, - and _", h.CookieName)
	}
	if h.HeaderPrefix != "" && !validHeaderName(h.HeaderPrefix) {
		return fmt.Errorf("feature_flags: header_prefix %q: use letters, digits and -, e.g. X-Feature-", h.HeaderPrefix)
	}
	switch h.Headers {
	case "", "all", "dictionary":
	default:
		return fmt.Errorf("feature_flags: headers %q: use all (a header per flag and X-Features) or dictionary (X-Features only)", h.Headers)
	}
	return nil
}

// appFrom returns the feature_flags app, or an error saying how to add it.
func appFrom(ctx caddy.Context, who string) (*App, error) {
	v, err := ctx.AppIfConfigured("feature_flags")
	if err != nil {
		return nil, fmt.Errorf("%s needs the feature_flags app: add a feature_flags global block, e.g. { feature_flags { flags_file flags.yaml } } (%v)", who, err)
	}
	return v.(*App), nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	app := h.app
	s := stateOf(r)
	fresh := s == nil
	if fresh {
		s = newState(app, r, h.cookieName)
	}
	names := h.headerNames(s.set)
	reusable := stripSpoofed(r.Header, h.prefixFold, names.ours)
	if id := s.mintCookie(w, h.cookieName, h.cookieDomain); id != "" && fresh {
		// Bucket this very request by the new id, not only the next one.
		// (After a matcher evaluated, its answer stands.)
		s.cookieID = id
	}
	s.evaluate()
	h.addHeaders(r, s, names, reusable)
	app.evalCountersFor(s.set).count(&s.ev)
	if app.exposures != nil && !s.Bot() {
		if unit := s.ev.Unit(); unit != "" {
			app.exposures.record(s, unit)
		}
	}
	return next.ServeHTTP(w, r)
}

// addHeaders sets one header per flag and X-Features. The values share one
// array owned by the request, so a later handler editing one in place
// touches only this request. Adding twenty keys to a request's header map
// would grow it step by step, an allocation each time; so unless the
// client's own spoofed headers left every slot needed (reusable), the
// request gets a new map sized for what it holds.
func (h *Handler) addHeaders(r *http.Request, s *requestState, names *headerNames, reusable int) {
	if h.Headers == "dictionary" {
		r.Header["X-Features"] = s.headerVals[0:1:1]
		s.headerVals[0] = s.dictionary()
		return
	}
	vals := s.headerVals[:]
	if names.count+1 > len(vals) {
		vals = make([]string, names.count+1)
	}
	hdr := r.Header
	if reusable < names.count+1 {
		hdr = make(http.Header, len(r.Header)+names.count+1)
		for k, v := range r.Header {
			hdr[k] = v
		}
		r.Header = hdr
	}
	n := 0
	for i, name := range names.names {
		if name == "" {
			continue
		}
		vals[n] = s.ev.Variant(i)
		hdr[name] = vals[n : n+1 : n+1]
		n++
	}
	vals[n] = s.dictionary()
	hdr["X-Features"] = vals[n : n+1 : n+1]
}

// headerNames returns the header names for set, computing them once per set.
func (h *Handler) headerNames(set *rules.Set) *headerNames {
	if hn := h.headers.Load(); hn != nil && hn.set == set {
		return hn
	}
	h.headersMu.Lock()
	defer h.headersMu.Unlock()
	if hn := h.headers.Load(); hn != nil && hn.set == set {
		return hn
	}
	hn := &headerNames{set: set, names: make([]string, set.Len()), ours: map[string]bool{"X-Features": true}}
	for i := range set.Len() {
		if f := set.Flag(i); *f.Header {
			hn.names[i] = textproto.CanonicalMIMEHeaderKey(h.prefix + f.Key)
			if h.Headers != "dictionary" {
				hn.ours[hn.names[i]] = true
			}
			hn.count++
		}
	}
	h.headers.Store(hn)
	return hn
}

// stripSpoofed removes every incoming header whose name, lower-cased with _
// read as -, starts with the prefix, X-Features (DESIGN.md §3) and
// Feature-Override: the backends must be able to trust what they get. A
// spoof spelled exactly like one of the headers the handler is about to set
// (ours) is blanked instead of deleted — nothing can read its value, and
// its slot in the map is reused; stripSpoofed returns how many were.
func stripSpoofed(hdr http.Header, prefixFold string, ours map[string]bool) (reusable int) {
	for name := range hdr {
		if hasPrefixFold(name, prefixFold) || equalFold(name, "x-features") || equalFold(name, "feature-override") {
			if ours[name] {
				hdr[name] = nil
				reusable++
			} else {
				delete(hdr, name)
			}
		}
	}
	return reusable
}

// foldHeader lower-cases s and reads _ as -.
func foldHeader(s string) string {
	b := []byte(s)
	for i, c := range b {
		b[i] = foldByte(c)
	}
	return string(b)
}

func foldByte(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	case c == '_':
		return '-'
	}
	return c
}

func hasPrefixFold(s, foldedPrefix string) bool {
	if len(s) < len(foldedPrefix) {
		return false
	}
	for i := 0; i < len(foldedPrefix); i++ {
		if foldByte(s[i]) != foldedPrefix[i] {
			return false
		}
	}
	return true
}

func equalFold(s, folded string) bool {
	return len(s) == len(folded) && hasPrefixFold(s, folded)
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
