package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/edgeflags/edgeflags/geoip"
	"github.com/edgeflags/edgeflags/rollout"
	"github.com/edgeflags/edgeflags/rules"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves the feature flags on Caddy's admin endpoint:
//
//	GET    /feature-flags/                       flags, version, sources, last error, recent changes
//	GET    /feature-flags/flags/<key>            one flag as it serves, and its runtime layer entry
//	POST   /feature-flags/flags/<key>/disable    the kill switch      ?actor=…&reason=…
//	POST   /feature-flags/flags/<key>/enable     undo it              ?actor=…&reason=…
//	PUT    /feature-flags/flags/<key>            a whole flag as JSON ?actor=…&reason=…
//	DELETE /feature-flags/flags/<key>/runtime    drop the runtime layer's kill switch and replacement for the flag
//	POST   /feature-flags/flags/<key>/rollout/<pause|resume|advance|abort>   ?actor=…&reason=…
//	POST   /feature-flags/explain                a request context in; each flag's answer out
//
// Changes are validated by the same compiler as files, applied atomically,
// kept in the state file, and audited on the feature_flags.audit logger.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.feature_flags",
		New: func() caddy.Module { return adminAPI{} },
	}
}

// Routes returns the admin routes. They find the running app per request:
// Caddy builds admin routes before apps start.
func (adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/feature-flags/", Handler: caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		return writeAPIError(w, serveAdmin(w, r))
	})}}
}

// writeAPIError answers an API error itself, as {"error": "…"}: Caddy
// would escape <, > and & in it, and the messages say what to write
// ("?actor=<your name>").
func writeAPIError(w http.ResponseWriter, err error) error {
	var apiErr caddy.APIError
	if !errors.As(err, &apiErr) {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(apiErr.HTTPStatus)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(struct {
		Error string `json:"error"`
	}{apiErr.Err.Error()})
}

// maxAdminBody bounds an admin request body.
const maxAdminBody = 1 << 20

func serveAdmin(w http.ResponseWriter, r *http.Request) error {
	app := active.Load()
	if app == nil {
		return apiError(http.StatusServiceUnavailable, "no feature_flags app is running: add a feature_flags global block to the config")
	}
	rest := strings.TrimPrefix(r.URL.Path, "/feature-flags/")
	switch {
	case rest == "":
		return only(r, http.MethodGet, func() error { return writeJSON(w, app.overview()) })
	case rest == "explain":
		return only(r, http.MethodPost, func() error { return app.serveExplain(w, r) })
	case strings.HasPrefix(rest, "flags/"):
		key, action, _ := strings.Cut(strings.TrimPrefix(rest, "flags/"), "/")
		switch {
		case action == "" && r.Method == http.MethodGet:
			return app.serveFlag(w, key)
		case action == "" && r.Method == http.MethodPut:
			return app.servePut(w, r, key)
		case action == "enable" || action == "disable":
			return only(r, http.MethodPost, func() error { return app.serveEnabled(w, r, key, action == "enable") })
		case action == "runtime":
			return only(r, http.MethodDelete, func() error { return app.serveDropRuntime(w, r, key) })
		case strings.HasPrefix(action, "rollout/"):
			return only(r, http.MethodPost, func() error { return app.serveRolloutCommand(w, r, key, strings.TrimPrefix(action, "rollout/")) })
		case action == "":
			return apiError(http.StatusMethodNotAllowed, "use GET or PUT on /feature-flags/flags/%s", key)
		}
	}
	return apiError(http.StatusNotFound, "no such route: see GET /feature-flags/ and the README's operations guide")
}

func only(r *http.Request, method string, fn func() error) error {
	if r.Method != method {
		return apiError(http.StatusMethodNotAllowed, "use %s here", method)
	}
	return fn()
}

func apiError(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}

// flagSummary is a flag in the overview.
type flagSummary struct {
	Key         string        `json:"key"`
	Enabled     bool          `json:"enabled"`
	Variants    []string      `json:"variants"`
	Default     string        `json:"default"`
	OffVariant  string        `json:"off_variant"`
	Rules       int           `json:"rules"`
	Client      bool          `json:"client,omitempty"`
	Description string        `json:"description,omitempty"`
	Owner       string        `json:"owner,omitempty"`
	Ticket      string        `json:"ticket,omitempty"`
	Tags        []string      `json:"tags,omitempty"`
	Runtime     *runtimeEntry `json:"runtime,omitempty"`
	SampleRatio []sampleRatio `json:"sample_ratio,omitempty"`
	// Observed is each variant's traffic, for a flag with observe: true.
	Observed map[string]variantReport `json:"observed,omitempty"`
	// Rollout is the flag's guarded rollout: status, share and step.
	Rollout *rolloutSummary `json:"rollout,omitempty"`
}

type rolloutSummary struct {
	Status  rollout.Status `json:"status"`
	Percent float64        `json:"percent"`
	Step    int            `json:"step"`
	Steps   int            `json:"steps"`
}

type fleetStatus struct {
	Node  string            `json:"node"`
	Nodes []fleetNodeStatus `json:"nodes"`
}

type overview struct {
	Version string         `json:"version"`
	Sources []sourceStatus `json:"sources"`
	// StateStore is where the runtime layer is kept: state_file <path>,
	// or storage <prefix> for a fleet; StateStoreError says since when
	// and why a fleet's store does not answer (the last layer read serves).
	StateStore      string     `json:"state_store"`
	StateStoreError *loadError `json:"state_store_error,omitempty"`
	// Fleet is this node's name and the nodes it last read from the
	// store, this one first, with the layer generation each serves.
	Fleet *fleetStatus `json:"fleet,omitempty"`
	// Shadows are the shadowed flags' results (feature_shadow).
	Shadows         map[string]shadowSummary `json:"shadows,omitempty"`
	LastError       *loadError               `json:"last_error,omitempty"`
	Flags           []flagSummary            `json:"flags"`
	RuntimeOrphans  []string                 `json:"runtime_orphans,omitempty"`
	RuntimeSetAside map[string]string        `json:"runtime_set_aside,omitempty"`
	RuntimeDiffers  []runtimeDiff            `json:"runtime_differs,omitempty"`
	RecentChanges   []Change                 `json:"recent_changes"`
	Exposures       *exposureStatus          `json:"exposures,omitempty"`
}

func (a *App) overview() overview {
	set := a.set.Load()
	st := a.loader.status()
	entries := a.loader.layer.snapshot()
	o := overview{Version: set.Version, Sources: st.sources, StateStore: a.loader.layer.store.where(), StateStoreError: a.loader.layer.storeError(), LastError: st.lastErr,
		RuntimeOrphans: st.orphans, RuntimeSetAside: st.setAside, RuntimeDiffers: a.loader.differs(entries),
		RecentChanges: a.loader.layer.recentChanges(), Flags: make([]flagSummary, set.Len())}
	for i := range o.Flags {
		f := set.Flag(i)
		o.Flags[i] = flagSummary{Key: f.Key, Enabled: *f.Enabled, Variants: f.Variants, Default: f.Default, OffVariant: f.OffVariant,
			Rules: len(f.Rules), Client: f.Client, Description: f.Description, Owner: f.Owner, Ticket: f.Ticket, Tags: f.Tags}
		if e, ok := entries[f.Key]; ok {
			o.Flags[i].Runtime = &e
		}
		o.Flags[i].SampleRatio = a.exposures.sampleRatios(set, i)
		o.Flags[i].Observed = a.observedReport(set, i)
		if r := a.rolloutStatus(set, i, entries); r != nil {
			o.Flags[i].Rollout = &rolloutSummary{Status: r.Status, Percent: r.Percent, Step: r.Step, Steps: len(r.Steps)}
		}
	}
	o.Exposures = a.exposures.status()
	if a.fleet != nil {
		o.Fleet = &fleetStatus{Node: a.fleet.node, Nodes: a.fleet.status()}
	}
	o.Shadows = shadowSummaries()
	return o
}

func (a *App) serveFlag(w http.ResponseWriter, key string) error {
	set := a.set.Load()
	i, ok := set.Index(key)
	if !ok {
		return apiError(http.StatusNotFound, "no flag %q", key)
	}
	out := struct {
		Key         string                   `json:"key"`
		Definition  *rules.Flag              `json:"definition"`
		Runtime     *runtimeEntry            `json:"runtime,omitempty"`
		SampleRatio []sampleRatio            `json:"sample_ratio,omitempty"`
		Observed    map[string]variantReport `json:"observed,omitempty"`
		Rollout     *rolloutReport           `json:"rollout,omitempty"`
	}{Key: key, Definition: set.Flag(i), SampleRatio: a.exposures.sampleRatios(set, i), Observed: a.observedReport(set, i)}
	entries := a.loader.layer.snapshot()
	if e, ok := entries[key]; ok {
		out.Runtime = &e
	}
	out.Rollout = a.rolloutStatus(set, i, entries)
	return writeJSON(w, out)
}

// who reads the actor and reason of a change from the query string or a
// JSON body {"actor": …, "reason": …}.
func who(r *http.Request, body []byte) (actor, reason string, err error) {
	q := r.URL.Query()
	actor, reason = q.Get("actor"), q.Get("reason")
	if actor == "" && len(body) > 0 {
		var b struct{ Actor, Reason string }
		if json.Unmarshal(body, &b) == nil {
			actor, reason = b.Actor, b.Reason
		}
	}
	if strings.TrimSpace(actor) == "" {
		return "", "", apiError(http.StatusBadRequest, "say who makes the change: add ?actor=<your name> (and &reason=<why>, e.g. an incident id)")
	}
	return actor, reason, nil
}

func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody+1))
	if err != nil {
		return nil, apiError(http.StatusBadRequest, "reading the body: %v", err)
	}
	if len(body) > maxAdminBody {
		return nil, apiError(http.StatusRequestEntityTooLarge, "the body is larger than %d bytes", maxAdminBody)
	}
	return body, nil
}

// changeFunc rewrites the runtime layer's entry for a flag (see change).
type changeFunc func(e runtimeEntry, exists bool, set *rules.Set) (runtimeEntry, bool, error)

// serveEnabled is the kill switch and its undo. disable pins enabled:
// false in the runtime layer. enable removes that pin, so the definition
// (the file's, or a runtime replacement's) decides again; only when the
// definition itself says enabled: false does enable pin enabled: true — a
// disagreement with the file that GET /feature-flags/ lists under
// runtime_differs until it is dropped.
func (a *App) serveEnabled(w http.ResponseWriter, r *http.Request, key string, enabled bool) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	action := map[bool]string{true: "enable", false: "disable"}[enabled]
	return a.serveChange(w, r, key, action, body, a.setEnabled)
}

// setEnabled is the kill switch (c.Action disable) and its undo (enable):
// every client's way to it.
func (a *App) setEnabled(c Change) (Change, error) {
	key, enabled := c.Flag, c.Action == "enable"
	return a.change(c, func(e runtimeEntry, exists bool, set *rules.Set) (runtimeEntry, bool, error) {
		if _, ok := set.Index(key); !ok {
			return e, false, apiError(http.StatusNotFound, "no flag %q", key)
		}
		switch {
		case !enabled:
			e.Enabled = &enabled
		case a.loader.definedEnabled(key, e):
			e.Enabled = nil
		default:
			e.Enabled = &enabled
		}
		return e, e.Enabled != nil || e.Flag != nil || e.Rollout != nil, nil
	})
}

// servePut replaces a flag's definition at runtime. What is stored is the
// flag as parsed, written as JSON, whatever the body's syntax (YAML or
// JSON). A kill switch stays: only enable or DELETE …/runtime lifts it.
func (a *App) servePut(w http.ResponseWriter, r *http.Request, key string) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	f, err := rules.ParseFlag("PUT /feature-flags/flags/"+key, key, body)
	if err != nil {
		return apiError(http.StatusBadRequest, "%v", err)
	}
	def, err := json.Marshal(f)
	if err != nil {
		return apiError(http.StatusInternalServerError, "%v", err)
	}
	// The body is the flag: actor and reason come from the query alone.
	return a.serveChange(w, r, key, "replace", nil, func(c Change) (Change, error) { return a.replaceFlag(c, def) })
}

// replaceFlag replaces flag c.Flag's definition with def (the flag as JSON)
// in the runtime layer. A kill switch stays.
func (a *App) replaceFlag(c Change, def json.RawMessage) (Change, error) {
	return a.change(c, func(e runtimeEntry, exists bool, set *rules.Set) (runtimeEntry, bool, error) {
		next := runtimeEntry{Flag: def, Rollout: e.Rollout} // a new plan restarts the rollout; the same plan goes on
		if e.Enabled != nil && !*e.Enabled {
			next.Enabled = e.Enabled
		}
		return next, true, nil
	})
}

func (a *App) serveDropRuntime(w http.ResponseWriter, r *http.Request, key string) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	return a.serveChange(w, r, key, "drop_runtime", body, a.dropRuntime)
}

// dropRuntime drops the runtime layer's kill switch and replacement of
// flag c.Flag (action drop_runtime), or its replacement alone, keeping a
// kill switch (action revert: the dashboard's undo of a runtime edit).
func (a *App) dropRuntime(c Change) (Change, error) {
	key, keepKill := c.Flag, c.Action == "revert"
	return a.change(c, func(e runtimeEntry, exists bool, set *rules.Set) (runtimeEntry, bool, error) {
		if !exists || e.Enabled == nil && e.Flag == nil || keepKill && e.Flag == nil {
			return e, false, apiError(http.StatusNotFound, "flag %q has no runtime change to drop", key)
		}
		// A rollout's progress is not an override of the definition: it
		// stays (POST …/rollout/abort stops a rollout).
		next := runtimeEntry{Rollout: e.Rollout}
		if keepKill {
			next.Enabled = e.Enabled
		}
		return next, next.Enabled != nil || next.Rollout != nil, nil
	})
}

// serveChange finds who makes the change (query, or a JSON body
// {"actor", "reason"}), applies it with do, and answers with the change
// record.
func (a *App) serveChange(w http.ResponseWriter, r *http.Request, key, action string, body []byte, do func(Change) (Change, error)) error {
	actor, reason, err := who(r, body)
	if err != nil {
		return err
	}
	c, err := do(Change{RemoteAddr: r.RemoteAddr, Flag: key, Action: action, Actor: actor, Reason: reason})
	if err != nil {
		return err
	}
	return writeJSON(w, c)
}

// change applies one change c describes (who, to which flag, what): the
// runtime layer's entry for the flag is rewritten by fn, the result
// compiled with the current sources, the state file written, and only then
// the new set swapped in and the change audited. Any failure leaves
// everything as it was. Every change goes this way — admin API and
// rollout decisions alike.
func (a *App) change(c Change, fn changeFunc) (Change, error) {
	key, action := c.Flag, c.Action
	l := a.loader
	l.mu.Lock()
	defer l.mu.Unlock()
	set := a.set.Load()
	before := flagJSON(set, key)
	var fnErr error
	var b built
	err := l.layer.update(key, func(e runtimeEntry, exists bool) (runtimeEntry, bool) {
		had := e
		e, keep, err := fn(e, exists, set)
		fnErr = err
		switch {
		case !keep:
		case strings.HasPrefix(action, "rollout_") && (had.Enabled != nil || had.Flag != nil):
			// The entry's actor and reason are those of its kill switch or
			// replacement; a rollout's decisions carry their own.
			e.Actor, e.Reason, e.At = had.Actor, had.Reason, had.At
		default:
			e.Actor, e.Reason, e.At = c.Actor, c.Reason, time.Now().UTC()
		}
		return e, keep
	}, func(entries map[string]runtimeEntry) error {
		if fnErr != nil {
			return fnErr
		}
		b = l.build(l.base, entries)
		if why, aside := b.setAside[key]; aside {
			return apiError(http.StatusBadRequest, "the change does not compile with the current flags; nothing changed:\n%s", why)
		}
		if err := a.checkSet(b.set); err != nil {
			return apiError(http.StatusBadRequest, "the change would break the flags; nothing changed:\n%v", err)
		}
		c.At, c.Before, c.After = time.Now().UTC(), before, flagJSON(b.set, key)
		return nil
	}, &c)
	if err != nil {
		metricAdminChanges.WithLabelValues(action, "refused").Inc()
		var apiErr caddy.APIError
		if errors.As(err, &apiErr) {
			return Change{}, err
		}
		// The store did not take it: nothing changed, here or elsewhere.
		return Change{}, apiError(http.StatusServiceUnavailable, "%v", err)
	}
	l.adopt(b)
	l.swap(b.set)
	metricAdminChanges.WithLabelValues(action, "ok").Inc()
	a.logChange(c, b.set.Version)
	return c, nil
}

// record keeps a change edgeflags made by itself in the recent changes,
// and writes it to the audit log.
func (a *App) record(c Change, version string) {
	a.loader.layer.record(c)
	a.logChange(c, version)
}

// logChange writes a change to the audit log.
func (a *App) logChange(c Change, version string) {
	fields := []zap.Field{zap.String("actor", c.Actor), zap.String("reason", c.Reason), zap.String("remote_addr", c.RemoteAddr),
		zap.String("flag", c.Flag), zap.String("action", c.Action), zap.String("version", version),
		zap.Reflect("before", c.Before), zap.Reflect("after", c.After)}
	if c.Decision != nil {
		fields = append(fields, zap.Reflect("decision", c.Decision))
	}
	a.audit.Info("flag changed", fields...)
}

// systemActor is the actor of the changes edgeflags makes by itself.
const systemActor = "edgeflags"

// auditSystem records a change edgeflags made by itself; the caller holds
// the loader's lock.
func (a *App) auditSystem(key, action, reason string) {
	version := ""
	if set := a.set.Load(); set != nil {
		version = set.Version
	}
	a.record(Change{At: time.Now().UTC(), Actor: systemActor, Reason: reason, Flag: key, Action: action}, version)
}

// flagJSON is the flag's serving definition as JSON, or nil when the set
// has no such flag.
func flagJSON(set *rules.Set, key string) json.RawMessage {
	i, ok := set.Index(key)
	if !ok {
		return nil
	}
	b, _ := json.Marshal(set.Flag(i))
	return b
}

func (a *App) serveExplain(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	var c ExplainContext
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := dec.Decode(&c); err != nil {
			return apiError(http.StatusBadRequest, "the body must be a JSON request context (unit, user, country, ip, host, path, method, user_agent, headers, cookies, query, now, bot, overrides): %v", err)
		}
	}
	req, err := a.explainRequest(c)
	if err != nil {
		return apiError(http.StatusBadRequest, "%v", err)
	}
	set := a.set.Load()
	return writeJSON(w, struct {
		Version string        `json:"version"`
		Flags   []Explanation `json:"flags"`
	}{set.Version, explain(set, req)})
}

// explainRequest is the request c describes, its country from the
// app's GeoIP database when c gives none.
func (a *App) explainRequest(c ExplainContext) (*explainRequest, error) {
	var geo func(netip.Addr) geoip.Location
	if a.geo != nil {
		geo = a.geo.Lookup
	}
	return newExplainRequest(c, geo)
}

var _ caddy.AdminRouter = adminAPI{}
