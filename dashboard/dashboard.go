// Package dashboard is the flag dashboard: pages for the people who decide
// when a feature goes live, served by the edge itself. It renders what a
// Backend reports and hands a person's changes back to it — the same code
// path as the admin API's — after checking who makes them and that the
// request comes from the dashboard's own pages.
//
// The pages work without JavaScript (forms and links); a small script
// filters the flag list as one types. Everything is embedded: nothing is
// fetched from elsewhere, and the Content-Security-Policy allows no inline
// script.
package dashboard

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgeflags/edgeflags/rollout"
	"github.com/edgeflags/edgeflags/rules"
)

// Flag is one flag as it serves now, with what the edge knows of it.
type Flag struct {
	// Definition is the serving definition (the file's, or a runtime
	// replacement's) as the compiled set has it: variants, off variant,
	// default and enabled filled in.
	Definition *rules.Flag
	// Runtime is the flag's runtime layer entry, when it has one.
	Runtime *Runtime
	// Rollout is the flag's guarded rollout, when it runs one.
	Rollout *Rollout
	// Observed is each variant's traffic, for an observed flag.
	Observed []Observed
	// Unchanged is since when the flag serves as it does, as far as the
	// edge knows: its last change, or the time its source last changed.
	Unchanged time.Time
}

// Killed reports whether the kill switch is on (at runtime or in the
// definition).
func (f Flag) Killed() bool { return !*f.Definition.Enabled }

// Runtime is a runtime layer entry: a kill switch, a replacement, or both.
type Runtime struct {
	Killed, Replaced bool
	Actor, Reason    string
	At               time.Time
}

// Rollout is a guarded rollout's progress.
type Rollout struct {
	Status             rollout.Status
	Candidate, Control string
	Step               int // from 1
	Steps              []float64
	Percent            float64
	Waiting            string
	Evidence           rollout.Evidence
	Guards             []rollout.GuardResult
	Decisions          []rollout.Decision
}

// Observed is one variant's traffic.
type Observed struct {
	Variant            string
	Requests, Failures uint64
	FailureRate        float64 // percent
	P99                float64 // ms
}

// Change is one audited change.
type Change struct {
	At                          time.Time
	Actor, Reason, Flag, Action string
	Before, After               json.RawMessage
	Decision                    *rollout.Decision
}

// Request is a person's change, for the Backend to apply.
type Request struct {
	Flag string
	// Action: disable, enable, revert (drop the runtime replacement),
	// replace (Definition), rollout_pause, rollout_resume,
	// rollout_advance or rollout_abort.
	Action        string
	Actor, Reason string
	RemoteAddr    string
	Definition    json.RawMessage
}

// Question is a request described by hand: what would it get?
type Question struct {
	Unit, User, Country, IP, Host, Path string
	Headers, Cookies                    map[string]string
}

// Answer is one flag's variant for a Question, with why.
type Answer struct {
	Flag, Variant, Reason, Rule string
	Bucket                      *int
}

// Backend is the edge's side: its flags, its changes, its evaluation.
type Backend interface {
	// Flags are every flag as it serves now, in the order of its sources.
	Flags() []Flag
	// History is the latest changes, newest first.
	History() []Change
	// Apply makes a person's change, exactly as the admin API would.
	Apply(Request) error
	// Ask evaluates every flag for q; country is the one it used.
	Ask(q Question) (answers []Answer, country string, err error)
	// Viewer is the question for the person's own request: their
	// identity, address and headers.
	Viewer(r *http.Request) Question
	// Preview returns a cookie that has the browser see flag's variant
	// until it expires, or why it cannot.
	Preview(flag, variant string, ttl time.Duration, secure bool) (*http.Cookie, error)
	// EndPreview returns a cookie that deletes a preview's.
	EndPreview(secure bool) *http.Cookie
}

// Handler serves the dashboard under Base.
type Handler struct {
	Backend Backend
	// Base is the path the dashboard is mounted at, e.g. /feature-flags.
	Base string
	// AnonymousActor, when set, lets a request without a signed-in user
	// make changes, audited as this actor. Empty: such requests read only.
	AnonymousActor string
	// StaleAfter is how long a flag that serves one variant to everyone
	// stays unchanged before it is marked stale.
	StaleAfter time.Duration
	// PreviewTTL is how long a preview cookie lasts.
	PreviewTTL time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// csrfCookie holds the token every form repeats (double submit): a
// cross-site page can neither read it nor, being SameSite=Strict, send it.
const csrfCookie = "ff_ui_csrf"

// CSP is the pages' Content-Security-Policy: the script and the style are
// the dashboard's own, nothing inline runs, no frame holds the pages.
var CSP = "default-src 'none'; script-src 'self'; style-src 'sha256-" + styleHash + "'; img-src 'self' data:; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

//go:embed assets
var assets embed.FS

var (
	style       = mustRead("assets/ui.css")
	script      = mustRead("assets/ui.js")
	styleHash   = base64.StdEncoding.EncodeToString(sum(style))
	scriptName  = "ui-" + hex.EncodeToString(sum(script))[:12] + ".js"
	pages       = template.Must(template.New("").Funcs(funcs).ParseFS(assets, "assets/*.html"))
	errReadOnly = errors.New("you are not signed in, so the dashboard is read-only: sign in (the site's basic_auth or forward_auth) to change flags")
)

func mustRead(name string) []byte {
	b, err := assets.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return b
}

func sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// ServeHTTP serves one dashboard request; user is the signed-in user, or
// "" for none.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, user string) {
	rel := strings.TrimPrefix(r.URL.Path, h.Base)
	if rel == "" {
		http.Redirect(w, r, h.Base+"/", http.StatusMovedPermanently)
		return
	}
	if rel == "/"+scriptName {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Write(script)
		return
	}
	p := &page{h: h, r: r, User: user, Base: h.Base, Script: h.Base + "/" + scriptName, Style: template.CSS(style)}
	p.Actor = user
	if p.Actor == "" {
		p.Actor = h.AnonymousActor
	}
	p.CSRF = h.csrfToken(w, r)
	head := w.Header()
	head.Set("Content-Security-Policy", CSP)
	head.Set("X-Content-Type-Options", "nosniff")
	head.Set("Referrer-Policy", "same-origin")
	head.Set("Cache-Control", "no-store")
	if r.Method == http.MethodPost {
		h.servePost(w, r, p, rel)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		head.Set("Allow", "GET, HEAD, POST")
		p.fail(w, http.StatusMethodNotAllowed, errors.New("use GET to read and the page's forms to change"))
		return
	}
	switch {
	case rel == "/":
		h.serveList(w, p)
	case strings.HasPrefix(rel, "/flag/"):
		h.serveFlag(w, p, strings.TrimPrefix(rel, "/flag/"))
	case rel == "/explain":
		h.serveExplain(w, p)
	default:
		p.fail(w, http.StatusNotFound, fmt.Errorf("no page %s here: the flags are at %s/", rel, h.Base))
	}
}

// csrfToken returns the request's token, setting a new one when it has none.
func (h *Handler) csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 43 {
		return c.Value
	}
	b := make([]byte, 32)
	rand.Read(b)
	token := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: token, Path: h.Base + "/", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	r.AddCookie(&http.Cookie{Name: csrfCookie, Value: token}) // the same request's forms
	return token
}

// sameOrigin refuses a request another site's page sent: by the browser's
// Sec-Fetch-Site or Origin, and by the double-submitted token.
func (h *Handler) sameOrigin(r *http.Request) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return fmt.Errorf("refused: the request came from another site (Sec-Fetch-Site: %s); change flags from the dashboard's own pages", site)
	}
	if origin := r.Header.Get("Origin"); origin != "" && origin != "null" {
		u, err := url.Parse(origin)
		if err != nil || !strings.EqualFold(u.Host, r.Host) {
			return fmt.Errorf("refused: the request came from another site (Origin: %s); change flags from the dashboard's own pages", origin)
		}
	}
	c, err := r.Cookie(csrfCookie)
	form := r.PostFormValue("csrf")
	if err != nil || form == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(form)) != 1 {
		return errors.New("refused: the form did not come from this dashboard, or the page is out of date: reload the page and try again")
	}
	return nil
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Handler) servePost(w http.ResponseWriter, r *http.Request, p *page, rel string) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		p.fail(w, http.StatusBadRequest, fmt.Errorf("reading the form: %v", err))
		return
	}
	if err := h.sameOrigin(r); err != nil {
		p.fail(w, http.StatusForbidden, err)
		return
	}
	switch {
	case rel == "/preview":
		h.servePreview(w, r, p)
		return
	case !strings.HasPrefix(rel, "/flag/"):
		p.fail(w, http.StatusNotFound, fmt.Errorf("no form posts to %s", rel))
		return
	}
	if p.Actor == "" {
		p.fail(w, http.StatusForbidden, errReadOnly)
		return
	}
	key, action, _ := strings.Cut(strings.TrimPrefix(rel, "/flag/"), "/")
	f, ok := find(h.Backend.Flags(), key)
	if !ok {
		p.fail(w, http.StatusNotFound, fmt.Errorf("no flag %q: it may have been removed from the flag files", key))
		return
	}
	req := Request{Flag: key, Action: action, Actor: p.Actor, Reason: strings.TrimSpace(r.PostFormValue("reason")), RemoteAddr: r.RemoteAddr}
	if req.Reason == "" {
		p.fail(w, http.StatusBadRequest, errors.New("say why: every change needs a reason (an incident, a ticket, a decision)"))
		return
	}
	switch action {
	case "disable":
		if r.PostFormValue("confirm") == "" {
			p.fail(w, http.StatusBadRequest, errors.New("turning a flag off for everyone needs its box ticked: go back and confirm"))
			return
		}
	case "enable", "revert", "rollout_pause", "rollout_resume", "rollout_advance", "rollout_abort":
	case "split":
		def, err := splitDefinition(f.Definition, r)
		if err != nil {
			p.fail(w, http.StatusBadRequest, err)
			return
		}
		req.Action, req.Definition = "replace", def
	default:
		p.fail(w, http.StatusNotFound, fmt.Errorf("no change %q: the flag page's forms say what can change", action))
		return
	}
	if err := h.Backend.Apply(req); err != nil {
		p.fail(w, statusOf(err), err)
		return
	}
	http.Redirect(w, r, h.Base+"/flag/"+url.PathEscape(key)+"?done="+url.QueryEscape(action), http.StatusSeeOther)
}

// StatusError is an error with the HTTP status it answers with.
type StatusError interface {
	error
	Status() int
}

func statusOf(err error) int {
	var s StatusError
	if errors.As(err, &s) {
		return s.Status()
	}
	return http.StatusBadRequest
}

// splitDefinition is f with rule N's split set to the form's percentages
// (rule=N, w.<variant>=percent): a runtime replacement of the flag.
func splitDefinition(f *rules.Flag, r *http.Request) (json.RawMessage, error) {
	n, err := strconv.Atoi(r.PostFormValue("rule"))
	if err != nil || n < 0 || n >= len(f.Rules) || f.Rules[n].Split == nil {
		return nil, errors.New("the form names no split of this flag: reload the page")
	}
	c := *f
	c.Rules = slices.Clone(f.Rules)
	split := slices.Clone(f.Rules[n].Split)
	total := 0
	for i, w := range split {
		v := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(r.PostFormValue("w."+w.Variant)), "%"))
		pct, err := strconv.ParseFloat(v, 64)
		bp := int(math.Round(pct * 100))
		if err != nil || pct < 0 || pct > 100 || math.Abs(float64(bp)-pct*100) > 1e-6 {
			return nil, fmt.Errorf("%s: %q is not a percentage from 0 to 100 with at most 2 decimals", w.Variant, v)
		}
		split[i].BasisPoints = bp
		total += bp
	}
	if total != 10000 {
		return nil, fmt.Errorf("the percentages add up to %s, not 100 %%: every user needs a variant", percent(total))
	}
	c.Rules[n].Split = split
	return json.Marshal(&c)
}

func find(flags []Flag, key string) (Flag, bool) {
	for _, f := range flags {
		if f.Definition.Key == key {
			return f, true
		}
	}
	return Flag{}, false
}

func (h *Handler) servePreview(w http.ResponseWriter, r *http.Request, p *page) {
	flag, variant := r.PostFormValue("flag"), r.PostFormValue("variant")
	back := h.Base + "/explain"
	if flag == "" {
		http.SetCookie(w, h.Backend.EndPreview(r.TLS != nil))
		http.Redirect(w, r, back+"?done=preview_end", http.StatusSeeOther)
		return
	}
	c, err := h.Backend.Preview(flag, variant, h.PreviewTTL, r.TLS != nil)
	if err != nil {
		p.fail(w, statusOf(err), err)
		return
	}
	http.SetCookie(w, c)
	http.Redirect(w, r, back+"?done=preview", http.StatusSeeOther)
}
