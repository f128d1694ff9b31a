package caddymodule

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

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
	// the X-Features dictionary; "dictionary": X-Features alone, which
	// costs the proxy less per request (see docs/PERFORMANCE.md); or
	// "none": no headers, for sites that only route with the feature
	// matcher or use the placeholders. A flag set whose headers backends
	// would refuse is refused (see README, "Header limits").
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
	app.addCookieSite(ctx, h.cookieName)
	if err := app.useHeaders(h.Headers, h.prefix); err != nil {
		return fmt.Errorf("feature_flags: %w", err)
	}
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
	case "", "all", "dictionary", "none":
	default:
		return fmt.Errorf("feature_flags: headers %q: use all (a header per flag and X-Features), dictionary (X-Features only) or none", h.Headers)
	}
	return nil
}

// appFrom returns the feature_flags app, or an error saying how to add it.
func appFrom(ctx caddy.Context, who string) (*App, error) {
	v, err := ctx.AppIfConfigured("feature_flags")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return nil, fmt.Errorf("%s needs the feature_flags app: add a feature_flags global block, e.g. { feature_flags { flags_file flags.yaml } }", who)
	}
	if err != nil {
		return nil, fmt.Errorf("%v (the feature_flags app, which %s needs, did not load)", err, who)
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
	reusable := stripSpoofed(r, h.prefixFold, names.ours)
	if id := s.mintCookie(w, h.cookieName, h.cookieDomain); id != "" && fresh {
		// Bucket this very request by the new id, not only the next one.
		// (After a matcher evaluated, its answer stands.)
		s.cookieID, s.minted = id, true
	}
	s.evaluate()
	h.addHeaders(r, s, names, reusable)
	app.evalCountersFor(s.set).count(&s.ev)
	if app.exposures != nil && !s.Bot() {
		if unit := s.ev.Unit(); unit != "" {
			app.exposures.record(s, unit)
		}
	}
	// The first feature_flags handler of a request observes it (a second
	// one, in a nested route, must not wrap the response again).
	if o := app.observedFor(s.set); len(o.flags) > 0 && s.watch.ResponseWriter == nil && !s.Bot() && s.ev.Unit() != "" {
		return app.serveObserved(o, s, w, r, next)
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
	switch h.Headers {
	case "none":
		return
	case "dictionary":
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
	hn := &headerNames{set: set, names: make([]string, set.Len()), ours: map[string]bool{"X-Features": h.Headers != "none"}}
	for i := range set.Len() {
		if f := set.Flag(i); *f.Header {
			hn.names[i] = textproto.CanonicalMIMEHeaderKey(h.prefix + f.Key)
			if h.Headers == "" || h.Headers == "all" {
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
//
// Our names are never hop-by-hop either: a client naming them in
// Connection would have the proxy remove the headers set here, so they
// are taken out of Connection; and request trailers cannot carry them.
func stripSpoofed(r *http.Request, prefixFold string, ours map[string]bool) (reusable int) {
	hdr := r.Header
	connection := false
	for name := range hdr {
		switch {
		case isOurs(name, prefixFold):
			if ours[name] {
				hdr[name] = nil
				reusable++
			} else {
				delete(hdr, name)
			}
		case name == "Connection":
			connection = true
		}
	}
	if connection {
		unhop(hdr, prefixFold)
	}
	if r.Trailer != nil {
		stripTrailers(r, prefixFold)
	}
	return reusable
}

// isOurs reports whether a header name is one edgeflags sets or reads.
func isOurs(name, prefixFold string) bool {
	return hasPrefixFold(name, prefixFold) || equalFold(name, "x-features") || equalFold(name, "feature-override")
}

// unhop removes our names from the Connection header, in any case and
// list position, on every line of it.
func unhop(hdr http.Header, prefixFold string) {
	lines := hdr["Connection"]
	var kept []string
	changed := false
	for _, line := range lines {
		for _, token := range strings.Split(line, ",") {
			token = strings.TrimSpace(token)
			switch {
			case isOurs(token, prefixFold):
				changed = true
			case token != "":
				kept = append(kept, token)
			}
		}
	}
	switch {
	case !changed:
	case len(kept) == 0:
		delete(hdr, "Connection")
	default:
		hdr["Connection"] = []string{strings.Join(kept, ", ")}
	}
}

// stripTrailers removes our names from the trailers a request declares,
// and from those it sends: net/http fills them in when the body has been
// read to its end, so the body is wrapped to strip them then, before the
// proxy copies them upstream.
func stripTrailers(r *http.Request, prefixFold string) {
	deleteOurs(r.Trailer, prefixFold)
	if _, done := r.Body.(*trailerGuard); !done && r.Body != nil {
		r.Body = &trailerGuard{ReadCloser: r.Body, trailer: r.Trailer, prefixFold: prefixFold}
	}
}

// trailerGuard strips our names from a request's trailers once its body
// is read to the end.
type trailerGuard struct {
	io.ReadCloser
	trailer    http.Header
	prefixFold string
}

func (g *trailerGuard) Read(p []byte) (int, error) {
	n, err := g.ReadCloser.Read(p)
	if err == io.EOF {
		deleteOurs(g.trailer, g.prefixFold)
	}
	return n, err
}

// deleteOurs deletes our names from hdr.
func deleteOurs(hdr http.Header, prefixFold string) {
	for name := range hdr {
		if isOurs(name, prefixFold) {
			delete(hdr, name)
		}
	}
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

// Header limits. Backends refuse requests whose heads are too large:
// Apache httpd more than 100 header fields (LimitRequestFields) or a line
// over 8190 bytes (LimitRequestFieldSize), nginx a line over 8 KiB
// (large_client_header_buffers), Tomcat a head over 8 KiB, Node.js one
// over 16 KiB. The client's own headers and cookies need their share.
const (
	maxPerFlagHeaders     = 64       // per-flag headers of one request
	maxPerFlagHeaderBytes = 8 << 10  // their names and longest values
	warnDictionaryBytes   = 8 << 10  // X-Features past this: a warning
	maxDictionaryBytes    = 64 << 10 // X-Features past this: refused
	warnFlags             = 1000     // about 30 µs per request to evaluate
)

// The header modes of the handlers of a config, as bits of App.headerUse.
const (
	usePerFlagHeaders = 1 << iota
	useDictionary
)

// useHeaders tells the app what a handler sends, so that every later flag
// set is checked against it, and checks the set serving now.
func (a *App) useHeaders(mode string, prefix string) error {
	switch mode {
	case "none":
		return nil
	case "dictionary":
		a.headerUse.Or(useDictionary)
	default:
		a.headerUse.Or(usePerFlagHeaders | useDictionary)
		for cur := a.headerPrefixLen.Load(); int32(len(prefix)) > cur; cur = a.headerPrefixLen.Load() {
			if a.headerPrefixLen.CompareAndSwap(cur, int32(len(prefix))) {
				break
			}
		}
	}
	return a.checkSet(a.Flags())
}

// checkSet refuses a flag set whose headers backends would refuse, and
// warns about one that is merely large.
func (a *App) checkSet(set *rules.Set) error {
	use := a.headerUse.Load()
	if set.Len() > warnFlags {
		a.logger.Warn("many flags: every request evaluates each of them (about 30 ns a flag)", zap.Int("flags", set.Len()))
	}
	if use == 0 {
		return nil
	}
	headers, headerBytes, dictBytes := 0, 0, 0
	prefix := int(max(a.headerPrefixLen.Load(), int32(len(a.HeaderPrefix))))
	for i := range set.Len() {
		f := set.Flag(i)
		longest := 0
		for _, v := range f.Variants {
			longest = max(longest, len(v))
		}
		dictBytes += len(f.Key) + 1 + longest + 2
		if *f.Header {
			headers++
			headerBytes += prefix + len(f.Key) + 2 + longest + 2
		}
	}
	if use&usePerFlagHeaders != 0 && (headers > maxPerFlagHeaders || headerBytes > maxPerFlagHeaderBytes) {
		return fmt.Errorf("%d flags send a header of their own (up to %d bytes), more than backends are sure to accept (%d headers, %d bytes: Apache, nginx and Tomcat refuse more with the client's own headers): send X-Features alone with headers dictionary on the feature_flags directive, or set header: false on the flags backends do not read",
			headers, headerBytes, maxPerFlagHeaders, maxPerFlagHeaderBytes)
	}
	if dictBytes > maxDictionaryBytes {
		return fmt.Errorf("the X-Features header would be up to %d bytes, more than any common backend accepts (nginx, Apache and Tomcat stop at 8 KiB, Node.js at 16 KiB; the limit here is %d): split the flags over several Caddy sites, or use headers none on the feature_flags directive and route with the feature matcher",
			dictBytes, maxDictionaryBytes)
	}
	if dictBytes > warnDictionaryBytes {
		a.logger.Warn("the X-Features header is large: nginx, Apache and Tomcat refuse header lines over 8 KiB by default",
			zap.Int("bytes", dictBytes), zap.Int("flags", set.Len()))
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
