package dashboard

import (
	"bytes"
	"cmp"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/edgeflags/edgeflags/rollout"
)

// page is what every template gets.
type page struct {
	h *Handler
	r *http.Request

	Title, Base, Script, CSRF string
	Style                     template.CSS
	// User is the signed-in user; Actor who changes are made as ("" reads only).
	User, Actor string
	Done        string // what the last change did
	Error       string
	Status      int
	View        any
}

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"pct":    func(v float64) string { return fmt.Sprintf("%.4g %%", v) },
	"num":    func(v uint64) string { return thousands(v) },
	"split":  strings.Fields,
	"inc":    func(i int) int { return i + 1 },
	"list":   func(s ...string) []string { return s },
	"title":  capitalize,
	"join":   strings.Join,
	"plural": func(n int, one, many string) string { return map[bool]string{true: one, false: many}[n == 1] },
}

// thousands writes 1234567 as 1,234,567.
func thousands(v uint64) string {
	s := fmt.Sprint(v)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func (p *page) render(w http.ResponseWriter, name string) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, p); err != nil {
		http.Error(w, "the page could not be rendered: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", fmt.Sprint(buf.Len()))
	w.WriteHeader(cmp.Or(p.Status, http.StatusOK))
	if p.r.Method != http.MethodHead {
		w.Write(buf.Bytes())
	}
}

// fail answers with the error page: what went wrong, in words, and the
// way back.
func (p *page) fail(w http.ResponseWriter, status int, err error) {
	p.Title, p.Status, p.Error = http.StatusText(status), status, err.Error()
	p.render(w, "error.html")
}

// done says what a change did, from the redirect after it.
var done = map[string]string{
	"disable": "The kill switch is on: everyone gets the off variant.", "enable": "The flag is back on.",
	"revert": "The runtime change was reverted: the flag file's definition serves again.", "split": "The new percentages serve now.",
	"rollout_pause": "The rollout is paused.", "rollout_resume": "The rollout goes on.", "rollout_advance": "The rollout moved to its next step.",
	"rollout_abort": "The rollout was aborted: the candidate is back to 0 %.",
	"preview":       "Your browser now previews that variant on this site (a signed cookie, for a limited time).", "preview_end": "Your preview ended.",
}

// row is a flag in the list, and the head of its page.
type row struct {
	Key, Description, Owner, Ticket string
	Tags                            []string
	State                           string
	Stale                           bool
	Unchanged                       time.Time
	Serving                         []string
	Observed                        []Observed
	Search                          string // what the search looks in, lower-case
}

func (h *Handler) row(f Flag) row {
	d := f.Definition
	r := row{Key: d.Key, Description: d.Description, Owner: d.Owner, Ticket: d.Ticket, Tags: d.Tags, State: state(f),
		Unchanged: f.Unchanged, Serving: Describe(d), Observed: f.Observed}
	_, uniform := Uniform(d)
	r.Stale = uniform && !f.Unchanged.IsZero() && h.now().Sub(f.Unchanged) > h.StaleAfter
	r.Search = strings.ToLower(strings.Join(append([]string{d.Key, d.Description, d.Owner, d.Ticket}, d.Tags...), " "))
	return r
}

// state is a flag's state in a word: live, killed, rolling out, paused,
// rolled back.
func state(f Flag) string {
	switch {
	case f.Killed():
		return "killed"
	case f.Rollout == nil:
		return "live"
	}
	switch f.Rollout.Status {
	case rollout.Running:
		return "rolling out"
	case rollout.Paused:
		return "paused"
	case rollout.RolledBack, rollout.Aborted:
		return "rolled back"
	}
	return "live"
}

// States are the states the list filters by.
var States = []string{"live", "killed", "rolling out", "paused", "rolled back", "stale"}

type listView struct {
	Rows                     []row
	Shown, Total             int
	Query, Tag, Owner, State string
	Tags, Owners, States     []string
}

func (h *Handler) serveList(w http.ResponseWriter, p *page) {
	q := p.r.URL.Query()
	v := listView{Query: q.Get("q"), Tag: q.Get("tag"), Owner: q.Get("owner"), State: q.Get("state"), States: States}
	flags := h.Backend.Flags()
	v.Total = len(flags)
	needle := strings.ToLower(strings.TrimSpace(v.Query))
	for _, f := range flags {
		r := h.row(f)
		v.Tags = append(v.Tags, r.Tags...)
		if r.Owner != "" {
			v.Owners = append(v.Owners, r.Owner)
		}
		if strings.Contains(r.Search, needle) && (v.Tag == "" || slices.Contains(r.Tags, v.Tag)) &&
			(v.Owner == "" || r.Owner == v.Owner) && (v.State == "" || r.State == v.State || v.State == "stale" && r.Stale) {
			v.Rows = append(v.Rows, r)
		}
	}
	v.Shown = len(v.Rows)
	v.Tags, v.Owners = sorted(v.Tags), sorted(v.Owners)
	p.Title, p.View = "Feature flags", v
	p.render(w, "list.html")
}

func sorted(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// split is a rule's split, for its percentage control.
type split struct {
	Rule    int
	Words   string
	Weights []weight
}

type weight struct {
	Variant string
	Percent string
}

type historyEntry struct {
	Change
	Diff []DiffLine
}

type flagView struct {
	row
	Flag     Flag
	Variants []string
	Splits   []split
	History  []historyEntry
}

func (h *Handler) serveFlag(w http.ResponseWriter, p *page, key string) {
	f, ok := find(h.Backend.Flags(), key)
	if !ok {
		p.fail(w, http.StatusNotFound, fmt.Errorf("no flag %q: see the list at %s/", key, h.Base))
		return
	}
	d := f.Definition
	v := flagView{row: h.row(f), Flag: f, Variants: d.Variants}
	for i, r := range d.Rules {
		if r.Split == nil {
			continue
		}
		s := split{Rule: i, Words: RuleWords(d, r)}
		for _, w := range bucketOrder(d, r.Split) {
			s.Weights = append(s.Weights, weight{w.Variant, strings.TrimSuffix(percent(w.BasisPoints), " %")})
		}
		v.Splits = append(v.Splits, s)
	}
	for _, c := range h.Backend.History() {
		if c.Flag == key {
			v.History = append(v.History, historyEntry{c, Diff(c.Before, c.After)})
		}
	}
	p.Done = done[p.r.URL.Query().Get("done")]
	p.Title, p.View = key, v
	p.render(w, "flag.html")
}

type explainView struct {
	Question
	Headers, Cookies string
	Country          string
	Answers          []Answer
}

func (h *Handler) serveExplain(w http.ResponseWriter, p *page) {
	q := p.r.URL.Query()
	var in Question
	if q.Has("unit") {
		in = Question{Unit: q.Get("unit"), User: q.Get("user"), Country: q.Get("country"), IP: q.Get("ip"), Host: q.Get("host"),
			Path: q.Get("path"), Headers: pairs(q.Get("headers"), ":"), Cookies: pairs(q.Get("cookies"), "=")}
	} else {
		in = h.Backend.Viewer(p.r)
	}
	v := explainView{Question: in, Headers: unpairs(in.Headers, ": "), Cookies: unpairs(in.Cookies, "=")}
	answers, country, err := h.Backend.Ask(in)
	if err != nil {
		p.Error = err.Error()
	}
	v.Answers, v.Country = answers, country
	p.Done = done[q.Get("done")]
	p.Title, p.View = "What does a user get?", v
	p.render(w, "explain.html")
}

// pairs reads "Name: value" (or name=value) lines.
func pairs(text, sep string) map[string]string {
	m := map[string]string{}
	for line := range strings.SplitSeq(text, "\n") {
		if k, v, ok := strings.Cut(line, sep); ok && strings.TrimSpace(k) != "" {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m
}

func unpairs(m map[string]string, sep string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(strings.ToLower(a), strings.ToLower(b)) })
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + sep + m[k] + "\n")
	}
	return b.String()
}
