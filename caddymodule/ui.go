package caddymodule

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/edgeflags/edgeflags/dashboard"
)

func init() {
	caddy.RegisterModule(new(UI))
	httpcaddyfile.RegisterDirective("feature_flags_ui", parseUI)
	httpcaddyfile.RegisterDirectiveOrder("feature_flags_ui", httpcaddyfile.Before, "handle") // after basic_auth and forward_auth; before a catch-all handle
}

// UI serves the flag dashboard (package dashboard) under Base: the flag
// list, each flag's page with its kill switch, percentages, rollout and
// history, and what a user gets. Changes go through the same path as the
// admin API's, made as the signed-in user ({http.auth.user.id}: put the
// dashboard behind basic_auth or forward_auth); without one it reads only,
// unless AnonymousActor says who anonymous changes are made as.
type UI struct {
	// Base is the path the dashboard is served under. Default: /feature-flags.
	Base string `json:"base,omitempty"`
	// AnonymousActor lets requests without a signed-in user change flags,
	// audited as this actor. Empty (the default): they read only.
	AnonymousActor string `json:"anonymous_actor,omitempty"`
	// StaleAfter is how long a flag serving one variant to everyone stays
	// unchanged before it is marked stale. Default: 30 days.
	StaleAfter caddy.Duration `json:"stale_after,omitempty"`
	// PreviewTTL is how long "preview as" lasts. Default: 1 hour.
	PreviewTTL caddy.Duration `json:"preview_ttl,omitempty"`

	ui *dashboard.Handler
}

// CaddyModule returns the Caddy module information.
func (*UI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.feature_flags_ui", New: func() caddy.Module { return new(UI) }}
}

// The defaults of UI.
const (
	DefaultUIBase     = "/feature-flags"
	DefaultStaleAfter = 30 * 24 * time.Hour
	DefaultPreviewTTL = time.Hour
)

// Provision finds the feature_flags app.
func (u *UI) Provision(ctx caddy.Context) error {
	app, err := appFrom(ctx, "the feature_flags_ui directive")
	if err != nil {
		return err
	}
	base := strings.TrimSuffix(u.Base, "/")
	if u.Base == "" {
		base = DefaultUIBase
	}
	if !strings.HasPrefix(base, "/") || strings.ContainsAny(base, "*?#") {
		return fmt.Errorf("feature_flags_ui: base %q: write a path, e.g. /feature-flags", u.Base)
	}
	if u.StaleAfter < 0 || u.PreviewTTL < 0 {
		return fmt.Errorf("feature_flags_ui: stale_after and preview_ttl are durations after now: write e.g. 30d or 1h")
	}
	u.ui = &dashboard.Handler{Backend: &uiBackend{app: app}, Base: base, AnonymousActor: u.AnonymousActor,
		StaleAfter: time.Duration(u.StaleAfter), PreviewTTL: time.Duration(u.PreviewTTL)}
	if u.StaleAfter == 0 {
		u.ui.StaleAfter = DefaultStaleAfter
	}
	if u.PreviewTTL == 0 {
		u.ui.PreviewTTL = DefaultPreviewTTL
	}
	if u.ui.PreviewTTL > MaxOverrideTTL {
		return fmt.Errorf("feature_flags_ui: preview_ttl %s is longer than an override may last (%s)", u.ui.PreviewTTL, MaxOverrideTTL)
	}
	return nil
}

// ServeHTTP serves the dashboard's pages below Base; other paths go on.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if p := r.URL.Path; p != u.ui.Base && !strings.HasPrefix(p, u.ui.Base+"/") {
		return next.ServeHTTP(w, r)
	}
	user, _ := caddyhttp.GetVar(r.Context(), "http.auth.user.id").(string)
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok && user == "" {
		user, _ = repl.GetString("http.auth.user.id")
	}
	u.ui.ServeHTTP(w, r, user)
	return nil
}

// parseUI reads
//
//	feature_flags_ui [<base>] {
//		anonymous_actor <name>
//		stale_after     <duration>
//		preview_ttl     <duration>
//	}
//
// and serves it on <base> and below, wherever the directive is.
func parseUI(h httpcaddyfile.Helper) ([]httpcaddyfile.ConfigValue, error) {
	u := new(UI)
	h.Next()
	if h.NextArg() {
		u.Base = h.Val()
	}
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	for h.NextBlock(0) {
		opt := h.Val()
		if !h.NextArg() {
			return nil, h.ArgErr()
		}
		switch opt {
		case "anonymous_actor":
			u.AnonymousActor = h.Val()
		case "stale_after", "preview_ttl":
			d, err := caddy.ParseDuration(h.Val())
			if err != nil {
				return nil, h.Errf("%s %s: %v (write e.g. 30d, 12h or 90m)", opt, h.Val(), err)
			}
			if opt == "stale_after" {
				u.StaleAfter = caddy.Duration(d)
			} else {
				u.PreviewTTL = caddy.Duration(d)
			}
		default:
			return nil, h.Errf("feature_flags_ui: unknown option %q: known are anonymous_actor, stale_after, preview_ttl", opt)
		}
		if h.NextArg() {
			return nil, h.ArgErr()
		}
	}
	base := strings.TrimSuffix(cmp.Or(u.Base, DefaultUIBase), "/")
	matcher := caddy.ModuleMap{"path": caddyconfig.JSON(caddyhttp.MatchPath{base, base + "/*"}, nil)}
	return h.NewRoute(matcher, u), nil
}

// uiBackend is the app as the dashboard sees it.
type uiBackend struct {
	app *App

	mu sync.Mutex
	// seen is each flag's definition when the dashboard last looked, and
	// since when it is so: changes the dashboard did not see happen (a
	// new flag file) count from when it first saw them.
	seen map[string]seenFlag
}

type seenFlag struct {
	def   string
	since time.Time
}

func (b *uiBackend) Flags() []dashboard.Flag {
	a := b.app
	set := a.set.Load()
	entries := a.loader.layer.snapshot()
	lastChange := map[string]time.Time{}
	for _, c := range a.loader.layer.recentChanges() { // newest first
		if _, ok := lastChange[c.Flag]; !ok {
			lastChange[c.Flag] = c.At
		}
	}
	filesChanged := a.loader.filesModified()
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen == nil {
		b.seen = map[string]seenFlag{}
	}
	out := make([]dashboard.Flag, set.Len())
	for i := range out {
		f := set.Flag(i)
		d := dashboard.Flag{Definition: f}
		if e, ok := entries[f.Key]; ok && (e.Enabled != nil || e.Flag != nil) {
			d.Runtime = &dashboard.Runtime{Killed: e.Enabled != nil && !*e.Enabled, Replaced: e.Flag != nil, Actor: e.Actor, Reason: e.Reason, At: e.At}
		}
		if r := a.rolloutStatus(set, i, entries); r != nil {
			d.Rollout = &dashboard.Rollout{Status: r.Status, Candidate: r.Candidate, Control: r.Control, Step: r.Step, Steps: r.Steps,
				Percent: r.Percent, Waiting: r.Waiting, Evidence: r.Evidence, Guards: r.Guards, Decisions: r.Decisions}
		}
		observed := a.observedReport(set, i)
		for _, v := range f.Variants {
			if o, ok := observed[v]; ok {
				d.Observed = append(d.Observed, dashboard.Observed{Variant: v, Requests: o.Requests, Failures: o.Failures, FailureRate: o.FailureRate, P99: o.TTFBp99})
			}
		}
		def := string(flagJSON(set, f.Key))
		s, ok := b.seen[f.Key]
		switch {
		case !ok && !filesChanged.IsZero():
			s = seenFlag{def, filesChanged}
		case !ok || s.def != def:
			s = seenFlag{def, now}
		}
		b.seen[f.Key] = s
		d.Unchanged = s.since
		for _, t := range []time.Time{lastChange[f.Key], entries[f.Key].At} {
			if t.After(d.Unchanged) {
				d.Unchanged = t
			}
		}
		out[i] = d
	}
	return out
}

func (b *uiBackend) History() []dashboard.Change {
	recent := b.app.loader.layer.recentChanges()
	out := make([]dashboard.Change, len(recent))
	for i, c := range recent {
		out[i] = dashboard.Change{At: c.At, Actor: c.Actor, Reason: c.Reason, Flag: c.Flag, Action: c.Action, Before: c.Before, After: c.After, Decision: c.Decision}
	}
	return out
}

// Apply makes the change as the admin API does, by the same functions.
func (b *uiBackend) Apply(r dashboard.Request) error {
	c := Change{Flag: r.Flag, Action: r.Action, Actor: r.Actor, Reason: r.Reason, RemoteAddr: r.RemoteAddr}
	var err error
	switch {
	case r.Action == "disable" || r.Action == "enable":
		_, err = b.app.setEnabled(c)
	case r.Action == "revert":
		_, err = b.app.dropRuntime(c)
	case r.Action == "replace":
		_, err = b.app.replaceFlag(c, r.Definition)
	case strings.HasPrefix(r.Action, "rollout_"):
		_, err = b.app.rolloutCommand(c)
	default:
		err = apiError(http.StatusNotFound, "no change %q", r.Action)
	}
	return forDashboard(err)
}

// uiError is an admin API error as the dashboard shows it.
type uiError struct{ caddy.APIError }

// forDashboard makes an admin API error one the dashboard answers with
// its status; other errors pass as they are.
func forDashboard(err error) error {
	var apiErr caddy.APIError
	if errors.As(err, &apiErr) {
		return uiError{apiErr}
	}
	return err
}

func (e uiError) Error() string { return e.Err.Error() }
func (e uiError) Status() int   { return e.HTTPStatus }

func (b *uiBackend) Ask(q dashboard.Question) ([]dashboard.Answer, string, error) {
	c := ExplainContext{Unit: q.Unit, User: q.User, Country: q.Country, IP: q.IP, Host: q.Host, Path: q.Path, Headers: q.Headers, Cookies: q.Cookies}
	req, err := b.app.explainRequest(c)
	if err != nil {
		return nil, "", err
	}
	answers := explain(b.app.set.Load(), req)
	out := make([]dashboard.Answer, len(answers))
	for i, e := range answers {
		out[i] = dashboard.Answer{Flag: e.Flag, Variant: e.Variant, Reason: e.Reason, Rule: e.Rule, Bucket: e.Bucket}
	}
	return out, cmp.Or(req.loc.Country, "XX"), nil
}

// Viewer is the person's own request as a question: their identity
// cookie, address, host and headers (not their credentials or cookies).
func (b *uiBackend) Viewer(r *http.Request) dashboard.Question {
	q := dashboard.Question{Host: r.Host, Path: "/", Headers: map[string]string{}, Cookies: map[string]string{}}
	if c, err := r.Cookie(b.app.cookie.name); err == nil {
		q.Unit = c.Value
	}
	vars, _ := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	if ip := clientAddr(vars, r.RemoteAddr); ip.IsValid() {
		q.IP = ip.String()
	}
	for _, k := range []string{"User-Agent", "Accept-Language"} {
		if v := r.Header.Get(k); v != "" {
			q.Headers[k] = v
		}
	}
	return q
}

func (b *uiBackend) Preview(flag, variant string, ttl time.Duration, secure bool) (*http.Cookie, error) {
	set := b.app.set.Load()
	i, ok := set.Index(flag)
	if !ok || !slices.Contains(set.Flag(i).Variants, variant) {
		return nil, forDashboard(apiError(http.StatusBadRequest, "flag %q has no variant %q", flag, variant))
	}
	secret := b.app.overrides.secret
	if len(secret) == 0 {
		return nil, forDashboard(apiError(http.StatusConflict, "previews need signed overrides: set override_secret in the feature_flags global block"))
	}
	value, err := SignOverride(secret, map[string]string{flag: variant}, time.Now().Add(ttl))
	if err != nil {
		return nil, err
	}
	return &http.Cookie{Name: b.app.overrides.cookie, Value: overrideCookieValue(value), Path: "/",
		MaxAge: int(ttl.Seconds()), HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode}, nil
}

func (b *uiBackend) EndPreview(secure bool) *http.Cookie {
	return &http.Cookie{Name: b.app.overrides.cookie, Path: "/", MaxAge: -1, HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode}
}

var (
	_ caddyhttp.MiddlewareHandler = (*UI)(nil)
	_ caddy.Provisioner           = (*UI)(nil)
	_ dashboard.Backend           = (*uiBackend)(nil)
)
