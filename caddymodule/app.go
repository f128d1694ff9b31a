// Package caddymodule is the Caddy side of edgeflags: the feature_flags app
// (global options, the compiled flags, the GeoIP reader), the feature_flags
// handler, the feature matcher (and its CEL function) and the placeholders.
// It is glue only: flags are evaluated by package rules, countries looked
// up by package geoip.
package caddymodule

import (
	"fmt"
	"net/netip"
	"net/textproto"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/edgeflags/edgeflags/geoip"
	"github.com/edgeflags/edgeflags/rules"
)

func init() {
	caddy.RegisterModule(new(App))
}

// Defaults of the identity cookie (DESIGN.md §4).
const (
	DefaultCookieName   = "ff_uid"
	DefaultCookieMaxAge = caddy.Duration(365 * 24 * time.Hour)
	DefaultHeaderPrefix = "X-Feature-"
)

// App is the feature_flags app: it owns the compiled flags and the GeoIP
// reader that every feature_flags handler and feature matcher of a config
// share.
type App struct {
	// FlagsFiles are flag definition files, YAML 1.2 or JSON. All of them
	// (and FlagsURL) form one set; a flag or segment defined twice is an
	// error. They are watched: a change applies within a second, and a
	// broken file is refused whole while the last good flags serve on.
	FlagsFiles []string `json:"flags_files,omitempty"`

	// FlagsCheckInterval is how often the flags files are checked for
	// changes. Default: 500ms.
	FlagsCheckInterval caddy.Duration `json:"flags_check_interval,omitempty"`

	// FlagsURL is an HTTP(S) origin serving a flags file: fetched in the
	// background with If-None-Match, cached under Caddy's data directory,
	// and served from that cache when the origin is down at start-up.
	FlagsURL string `json:"flags_url,omitempty"`

	// FlagsURLInterval is how often FlagsURL is polled. Default: 30s.
	FlagsURLInterval caddy.Duration `json:"flags_url_interval,omitempty"`

	// FlagsURLRedirects is which redirects a FlagsURL fetch follows:
	// same_host (default: on the same host, never from HTTPS to HTTP) or
	// any. Where a redirect led is logged and shown in the admin API.
	FlagsURLRedirects string `json:"flags_url_redirects,omitempty"`

	// AllowEmptyFlags lets a source that defined flags be replaced by one
	// that defines none (an empty, comment-only or {} document). By
	// default such a change is refused: it is far more often a broken
	// origin or a truncated file than the end of every flag.
	AllowEmptyFlags bool `json:"allow_empty_flags,omitempty"`

	// StateFile keeps the admin API's runtime layer across restarts.
	// Default: feature_flags/state.json under Caddy's data directory.
	StateFile string `json:"state_file,omitempty"`

	// StateStorage keeps the runtime layer in Caddy's configured storage
	// instead (the global storage block), shared by every node that uses
	// the same storage and prefix: a fleet. Every node serves a change
	// within about 2 s.
	StateStorage *StateStorage `json:"state_storage,omitempty"`

	// GeoIP is a MaxMind DB format country (or city) database, reloaded
	// when the file changes. Without it every country is XX.
	GeoIP string `json:"geoip,omitempty"`

	// GeoIPCheckInterval is how often the GeoIP file is checked for a new
	// version. Default: 5s.
	GeoIPCheckInterval caddy.Duration `json:"geoip_check_interval,omitempty"`

	// Identity lists where the user's identity comes from, in order: Caddy
	// placeholders such as {http.auth.user.id} or
	// {http.request.header.X-User-Id} (full names), and the word "cookie"
	// for the module's own cookie. The first non-empty one is the unit
	// users are bucketed by. Default: ["cookie"].
	Identity []string `json:"identity,omitempty"`

	// Cookie configures the identity cookie.
	Cookie *Cookie `json:"cookie,omitempty"`

	// HeaderPrefix starts the per-flag request headers. Default: X-Feature-.
	HeaderPrefix string `json:"header_prefix,omitempty"`

	// CountryHeader is a header carrying the client's country set by a CDN
	// (e.g. CF-IPCountry). It is honoured only on requests from the
	// server's trusted_proxies; others get the GeoIP answer.
	CountryHeader string `json:"country_header,omitempty"`

	// OverrideFrom lists the CIDRs whose requests may override flags with
	// a Feature-Override header or cookie (QA, staff networks).
	OverrideFrom []string `json:"override_from,omitempty"`

	// OverrideSecret signs overrides that are honoured from anywhere until
	// they expire (caddy flags sign-override makes them). {env.*}
	// placeholders are allowed; give at least 32 characters.
	OverrideSecret string `json:"override_secret,omitempty"`

	// OverrideCookie is the cookie that may carry an override, base64url
	// encoded. Default: ff_override.
	OverrideCookie string `json:"override_cookie,omitempty"`

	// Bots lists case-insensitive user agent pieces of crawlers, which get
	// every flag's default and record no exposures. Default: a list of
	// common crawlers and link previewers; ["off"] turns it off.
	Bots []string `json:"bots,omitempty"`

	// Exposures turns on exposure events.
	Exposures *Exposures `json:"exposures,omitempty"`

	// FailureStatuses are the response statuses that count as failures
	// for observed flags: codes (502) and classes (5xx). Default: 5xx. An
	// upstream that cannot be reached counts as Caddy answers it, 502.
	FailureStatuses []string `json:"failure_statuses,omitempty"`

	ctx             caddy.Context
	set             atomic.Pointer[rules.Set]
	loader          *loader
	geo             *geoip.Reader
	countryHeader   string // CountryHeader in the canonical form header maps use
	prefixFold      string // HeaderPrefix lower-cased, _ as -
	identity        []identitySource
	usesCookie      bool
	cookie          cookieSettings
	logger          *zap.Logger
	audit           *zap.Logger // feature_flags.audit: one record per admin change
	overrides       overrideSettings
	bots            *botMatcher
	exposures       *exposureSettings
	stopChecks      chan struct{} // stops the sample ratio checks
	stopRollouts    chan struct{} // stops the rollout watcher, which closes rolloutsDone once it saved the counts
	rolloutsDone    chan struct{}
	fleet           *fleetView    // the other nodes, with state_storage
	stopFleet       chan struct{} // stops publishing this node's key, which closes fleetDone once deleted
	fleetDone       chan struct{}
	failures        statusSet
	observed        atomic.Pointer[observedFlags]
	counters        atomic.Pointer[evalCounters]
	headerUse       atomic.Uint32 // usePerFlagHeaders | useDictionary, by this config's handlers
	headerPrefixLen atomic.Int32  // the longest per-flag header prefix in use
	cookieSitesMu   sync.Mutex
	cookieSites     []cookieSite // where each handler's cookie name applies
}

// Cookie configures the identity cookie.
type Cookie struct {
	// Name of the cookie. Default: ff_uid.
	Name string `json:"name,omitempty"`
	// MaxAge of the cookie. Default: 365 days.
	MaxAge caddy.Duration `json:"max_age,omitempty"`
	// Domain of the cookie; by default the cookie is host-only.
	Domain string `json:"domain,omitempty"`
	// Secure is auto (Secure on TLS requests), always or never. Default: auto.
	Secure string `json:"secure,omitempty"`
	// SameSite is lax, strict or none. Default: lax.
	SameSite string `json:"same_site,omitempty"`
	// Consent, when set, makes the cookie depend on a consent cookie: no
	// identity cookie is read or set until consent is given.
	Consent *Consent `json:"consent,omitempty"`
}

// StateStorage keeps the runtime layer in Caddy's storage.
type StateStorage struct {
	// Prefix of the fleet's keys, so that several fleets can share one
	// store. Default: feature_flags/.
	Prefix string `json:"prefix,omitempty"`
	// Node names this node in the fleet's store (its key under
	// <prefix>nodes/). Default: the host name and the process id. A name
	// that outlives restarts keeps a node's rollout counts across them.
	Node string `json:"node,omitempty"`
}

// Consent names the cookie a consent banner sets.
type Consent struct {
	// Cookie is the consent cookie's name.
	Cookie string `json:"cookie"`
	// Value is a regular expression the consent cookie's value must match;
	// when empty, the cookie's presence is consent.
	Value string `json:"value,omitempty"`
}

// identitySource is one entry of the identity list: a placeholder key, or
// the cookie (key "").
type identitySource struct {
	placeholder string
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "feature_flags",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision loads and compiles the flags and opens the GeoIP database.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	a.audit = a.logger.Named("audit")
	if a.HeaderPrefix == "" {
		a.HeaderPrefix = DefaultHeaderPrefix
	}
	if len(a.Identity) == 0 {
		a.Identity = []string{"cookie"}
	}
	for _, id := range a.Identity {
		src, err := parseIdentity(id)
		if err != nil {
			return err
		}
		a.identity = append(a.identity, src)
		a.usesCookie = a.usesCookie || src.placeholder == ""
	}
	cookie, err := newCookieSettings(a.Cookie)
	if err != nil {
		return err
	}
	a.cookie = cookie
	a.countryHeader = textproto.CanonicalMIMEHeaderKey(a.CountryHeader)
	a.prefixFold = foldHeader(a.HeaderPrefix)
	repl := caddy.NewReplacer() // resolves {env.*} in secrets
	if err := a.provisionOverrides(repl); err != nil {
		return err
	}
	switch {
	case len(a.Bots) == 1 && a.Bots[0] == "off":
	case len(a.Bots) > 0:
		a.bots = newBotMatcher(a.Bots)
	default:
		a.bots = newBotMatcher(defaultBotTokens)
	}
	if a.Exposures != nil {
		key, err := resolveSecret(repl, "exposures key", a.Exposures.Key)
		if err != nil {
			return err
		}
		x, err := newExposureSettings(a.Exposures, key, a.logger.Named("exposure"))
		if err != nil {
			return err
		}
		a.exposures = x
	}

	if a.failures, err = parseStatuses(a.FailureStatuses); err != nil {
		return err
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	var store layerStore
	switch {
	case a.StateStorage != nil && a.StateFile != "":
		return fmt.Errorf("feature_flags: state_file and state_storage both keep the runtime layer: keep one (state_storage for a fleet)")
	case a.StateStorage != nil:
		prefix := a.StateStorage.Prefix
		if prefix == "" {
			prefix = DefaultStatePrefix
		}
		shared := storageStore{storage: ctx.Storage(), prefix: strings.TrimSuffix(prefix, "/") + "/"}
		a.fleet = &fleetView{store: shared, node: firstNonEmpty(a.StateStorage.Node, defaultNodeName())}
		if strings.ContainsAny(a.fleet.node, "/\\") {
			return fmt.Errorf("feature_flags: state_storage node %q: a node name cannot hold / or \\", a.fleet.node)
		}
		store = shared
	default:
		if a.StateFile == "" {
			a.StateFile = filepath.Join(caddy.AppDataDir(), "feature_flags", "state.json")
		}
		store = fileStore{path: a.StateFile}
	}
	layer, err := openRuntimeLayer(store)
	if err != nil {
		return err
	}
	a.loader = newLoader(a, layer)
	if err := a.loader.load(); err != nil {
		return err
	}

	if a.GeoIP != "" {
		reader, err := openGeoIP(a.GeoIP, time.Duration(a.GeoIPCheckInterval), a.logger)
		if err != nil {
			return err
		}
		a.geo = reader
	}
	return nil
}

// envPlaceholder finds {env.NAME} placeholders.
var envPlaceholder = regexp.MustCompile(`\{env\.([^}]+)\}`)

// resolveSecret replaces the placeholders of a secret option, and says
// which environment variable is missing when one is unset or empty.
func resolveSecret(repl *caddy.Replacer, option, raw string) (string, error) {
	for _, m := range envPlaceholder.FindAllStringSubmatch(raw, -1) {
		if os.Getenv(m[1]) == "" {
			return "", fmt.Errorf("feature_flags: %s: the environment variable %s is not set (or empty): set it in the environment Caddy starts in", option, m[1])
		}
	}
	return repl.ReplaceKnown(raw, ""), nil
}

func (a *App) provisionOverrides(repl *caddy.Replacer) error {
	a.overrides.cookie = firstNonEmpty(a.OverrideCookie, DefaultOverrideCookie)
	if !validCookieName(a.overrides.cookie) {
		return fmt.Errorf("feature_flags: override_cookie %q: use letters, digits, - and _", a.overrides.cookie)
	}
	for _, c := range a.OverrideFrom {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			addr, aerr := netip.ParseAddr(c)
			if aerr != nil {
				return fmt.Errorf("feature_flags: override_from %q: give CIDRs, e.g. 10.0.0.0/8 or 2001:db8::/32", c)
			}
			p = netip.PrefixFrom(addr, addr.BitLen())
		}
		a.overrides.from = append(a.overrides.from, p.Masked())
	}
	if a.OverrideSecret != "" {
		secret, err := resolveSecret(repl, "override_secret", a.OverrideSecret)
		if err != nil {
			return err
		}
		if len(secret) < 32 {
			return fmt.Errorf("feature_flags: override_secret: give at least 32 characters, e.g. from openssl rand -base64 32")
		}
		a.overrides.secret = []byte(secret)
	}
	return nil
}

// Validate rejects contradictory options.
func (a *App) Validate() error {
	if !validHeaderName(a.HeaderPrefix) {
		return fmt.Errorf("feature_flags: header_prefix %q: use letters, digits and -, e.g. X-Feature-", a.HeaderPrefix)
	}
	if a.CountryHeader != "" && !validHeaderName(a.CountryHeader) {
		return fmt.Errorf("feature_flags: country_header %q is not a header name", a.CountryHeader)
	}
	switch a.FlagsURLRedirects {
	case "", "same_host", "any":
	default:
		return fmt.Errorf("feature_flags: flags_url_redirects %q: use same_host or any", a.FlagsURLRedirects)
	}
	return nil
}

// active is the running app, for the admin API: Caddy builds admin routes
// before apps start, so the routes look the app up per request.
var active atomic.Pointer[App]

// Start watches the flag sources and makes the app the admin API's.
func (a *App) Start() error {
	a.loader.start()
	if a.exposures != nil && a.exposures.mem != nil {
		a.stopChecks = make(chan struct{})
		go a.exposures.watchSampleRatios(a.set.Load, a.stopChecks)
	}
	a.stopRollouts, a.rolloutsDone = make(chan struct{}), make(chan struct{})
	go a.watchRollouts(a.stopRollouts, a.rolloutsDone)
	if a.fleet != nil {
		a.stopFleet, a.fleetDone = make(chan struct{}), make(chan struct{})
		go a.watchFleet(a.fleet, a.stopFleet, a.fleetDone)
	}
	active.Store(a)
	a.logStart()
	a.warnLooseProxies()
	return nil
}

// logStart says what serves: the flags, from where, and the GeoIP database.
func (a *App) logStart() {
	set := a.set.Load()
	st := a.loader.status()
	var sources []string
	for _, src := range st.sources {
		sources = append(sources, fmt.Sprintf("%s (%d flags)", src.Location, src.Flags))
	}
	fields := []zap.Field{zap.Int("flags", set.Len()), zap.String("version", set.Version), zap.Strings("sources", sources),
		zap.String("state", a.loader.layer.store.where()), zap.Int("runtime_entries", len(a.loader.layer.snapshot()))}
	if a.geo != nil {
		db := a.geo.Database()
		fields = append(fields, zap.String("geoip", db.Path), zap.String("geoip_type", db.Type), zap.Time("geoip_built", db.Built))
	} else {
		fields = append(fields, zap.String("geoip", "none: every country is XX"))
	}
	a.logger.Info("feature flags serving", fields...)
}

// warnLooseProxies warns when the client address edgeflags relies on (for
// GeoIP and override_from) can be chosen by the client: behind a load
// balancer that appends to X-Forwarded-For, Caddy takes the left-most
// address — the client's own words — unless trusted_proxies_strict is set.
func (a *App) warnLooseProxies() {
	if a.GeoIP == "" && len(a.overrides.from) == 0 {
		return
	}
	v, err := a.ctx.AppIfConfigured("http")
	if err != nil {
		return
	}
	httpApp, ok := v.(*caddyhttp.App)
	if !ok {
		return
	}
	for _, name := range sortedKeys(httpApp.Servers) {
		if srv := httpApp.Servers[name]; trustsProxies(srv) && srv.TrustedProxiesStrict == 0 {
			a.logger.Warn("the server trusts proxies but not strictly: behind a load balancer that appends to X-Forwarded-For, a client can choose the address edgeflags sees, and so its GeoIP country and override_from; add trusted_proxies_strict to the servers block",
				zap.String("server", name))
		}
	}
}

// Stop stops watching; Cleanup releases the GeoIP reader.
func (a *App) Stop() error {
	active.CompareAndSwap(a, nil)
	a.loader.close()
	if a.stopChecks != nil {
		close(a.stopChecks)
	}
	if a.stopRollouts != nil {
		close(a.stopRollouts)
		<-a.rolloutsDone
	}
	if a.stopFleet != nil {
		close(a.stopFleet)
		<-a.fleetDone
	}
	return nil
}

// Cleanup releases the shared GeoIP reader and exposure memory.
func (a *App) Cleanup() error {
	if a.exposures != nil {
		a.exposures.release()
	}
	if a.geo != nil {
		_, err := geoPool.Delete(geoKey(a.GeoIP, time.Duration(a.GeoIPCheckInterval)))
		return err
	}
	return nil
}

// trustsProxies reports whether a provisioned server has trusted_proxies.
// Caddy clears the exported raw field once the module is loaded, and keeps
// the loaded source unexported, so it is read by reflection (a read that
// cannot change it); if a Caddy version renames it, no warning is given.
func trustsProxies(srv *caddyhttp.Server) bool {
	f := reflect.ValueOf(srv).Elem().FieldByName("trustedProxies")
	return f.IsValid() && f.Kind() == reflect.Interface && !f.IsNil()
}

// Flags returns the flag set now serving.
func (a *App) Flags() *rules.Set { return a.set.Load() }

var placeholderPattern = regexp.MustCompile(`^\{[A-Za-z0-9_.:-]+\}$`)

func parseIdentity(s string) (identitySource, error) {
	if s == "cookie" {
		return identitySource{}, nil
	}
	if !placeholderPattern.MatchString(s) {
		return identitySource{}, fmt.Errorf("feature_flags: identity %q: use a placeholder such as {http.auth.user.id} or {http.request.header.X-User-Id} (full names), or the word cookie", s)
	}
	return identitySource{placeholder: strings.Trim(s, "{}")}, nil
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '-' || c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
