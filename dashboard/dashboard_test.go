package dashboard

import (
	"cmp"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeflags/edgeflags/rollout"
	"github.com/edgeflags/edgeflags/rules"
)

// parseFlags compiles a flags document: its flags as a Backend has them
// (variants, off variant and default filled in), in order.
func parseFlags(t *testing.T, yaml string) []*rules.Flag {
	t.Helper()
	set, err := rules.Load(rules.Source{Name: "test.yaml", Data: []byte(yaml)})
	if err != nil {
		t.Fatal(err)
	}
	flags := make([]*rules.Flag, set.Len())
	for i := range flags {
		flags[i] = set.Flag(i)
	}
	return flags
}

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want []string
	}{
		{`flags: {f: {}}`, []string{"Off for everyone."}},
		{`flags: {f: {enabled: false}}`, []string{"Turned off: everyone gets off."}},
		{`flags: {f: {rules: [{serve: on}]}}`, []string{"On for everyone."}},
		{`flags: {f: {variants: [control, treatment], default: control, rules: [{split: {treatment: 10, control: 90}}]}}`,
			[]string{"Treatment for 10 % and control for 90 % of everyone."}},
		// In the order of the buckets, however the source wrote it.
		{`flags: {f: {variants: [off, a, b], rules: [{split: {off: 50, b: 20, a: 30}}]}}`,
			[]string{"A for 30 %, b for 20 % and off for 50 % of everyone."}},
		{`flags:
  f:
    rules:
      - {when: {header.X-Tester: {in: ["1"]}}, serve: on}
      - {when: {country: {in: [DE, FR]}}, split: {on: 10, off: 90}}
`, []string{
			"On for users whose header X-Tester is 1.",
			"On for 10 % and off for 90 % of users whose country is DE or FR.",
			"Off for everyone else.",
		}},
		{`flags: {f: {rules: [{when: {header.X-Tester: {in: ["1"]}}, serve: on}, {split: {on: 25, off: 75}}]}}`, []string{
			"On for users whose header X-Tester is 1.",
			"On for 25 % and off for 75 % of everyone else.",
		}},
		// A rollout the runtime layer has no share for yet is at its first step.
		{`flags: {f: {rollout: {variant: on, steps: [1, 100]}}}`, []string{
			"Rolling out: on for 1 % of the others (identified users), off for the rest.",
		}},
	} {
		f := parseFlags(t, tc.yaml)[0]
		if got := Describe(f); !slices.Equal(got, tc.want) {
			t.Errorf("%s:\n got %q\nwant %q", tc.yaml, got, tc.want)
		}
	}
}

func TestUniform(t *testing.T) {
	for _, tc := range []struct {
		yaml    string
		variant string
		uniform bool
	}{
		{`flags: {f: {}}`, "off", true},
		{`flags: {f: {rules: [{serve: on}]}}`, "on", true},
		{`flags: {f: {rules: [{split: {on: 100, off: 0}}]}}`, "on", true},
		{`flags: {f: {rules: [{split: {on: 10, off: 90}}]}}`, "", false},
		{`flags: {f: {enabled: false, rules: [{split: {on: 10, off: 90}}]}}`, "off", true},
		{`flags: {f: {rules: [{when: {country: {in: [DE]}}, serve: on}]}}`, "", false},
		{`flags: {f: {rollout: {variant: on, steps: [1, 100]}}}`, "", false},
	} {
		v, ok := Uniform(parseFlags(t, tc.yaml)[0])
		if v != tc.variant || ok != tc.uniform {
			t.Errorf("%s: %q, %v; want %q, %v", tc.yaml, v, ok, tc.variant, tc.uniform)
		}
	}
}

func TestWhy(t *testing.T) {
	bucket := 421
	for a, want := range map[Answer]string{
		{Reason: "SPLIT", Rule: "canary", Bucket: &bucket}: "Rule “canary” matched and split the users; this one is in bucket 421 of 10,000 (SPLIT)",
		{Reason: "TARGETING_MATCH", Rule: "rules[0]"}:      "Rule 1 matched (TARGETING_MATCH)",
		{Reason: "DISABLED"}:                               "Turned off: the kill switch (DISABLED)",
		{Reason: "SOMETHING_NEW"}:                          "SOMETHING_NEW",
	} {
		if got := a.Why(); got != want {
			t.Errorf("%+v: %q; want %q", a, got, want)
		}
	}
}

func TestDiff(t *testing.T) {
	before := json.RawMessage(`{"enabled":true,"rules":[{"name":"canary","split":{"on":10,"off":90}}],"variants":["off","on"]}`)
	after := json.RawMessage(`{"enabled":true,"rules":[{"name":"canary","split":{"on":30,"off":70}}],"variants":["off","on"]}`)
	var got []string
	for _, l := range Diff(before, after) {
		got = append(got, l.Mark()+l.Text)
	}
	// Three shared lines around the change; "…" for those left out.
	want := []string{
		` …`,
		`     {`,
		`       "name": "canary",`,
		`       "split": {`,
		`-        "on": 10,`,
		`-        "off": 90`,
		`+        "on": 30,`,
		`+        "off": 70`,
		`       }`,
		`     }`,
		`   ],`,
		` …`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("the diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if d := Diff(before, before); d != nil {
		t.Errorf("no change: %v; want no diff", d)
	}
	created := Diff(nil, json.RawMessage(`{"enabled":false}`))
	if len(created) != 3 || created[1] != (DiffLine{Op: '+', Text: `  "enabled": false`}) {
		t.Errorf("a new flag: %v; want every line added", created)
	}
}

func TestSplitDefinition(t *testing.T) {
	f := parseFlags(t, `flags: {f: {rules: [{name: testers, when: {header.X-Tester: {in: ["1"]}}, serve: on}, {name: canary, split: {on: 10, off: 90}}]}}`)[0]
	post := func(form string) (*rules.Flag, error) {
		r := httptest.NewRequest("POST", "/", strings.NewReader(form))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		def, err := splitDefinition(f, r)
		if err != nil {
			return nil, err
		}
		return rules.ParseFlag("runtime", "f", def)
	}
	got, err := post("rule=1&w.on=30&w.off=70%25")
	if err != nil {
		t.Fatal(err)
	}
	weights := map[string]int{}
	for _, w := range got.Rules[1].Split {
		weights[w.Variant] = w.BasisPoints
	}
	if weights["on"] != 3000 || weights["off"] != 7000 || got.Rules[0].Serve != "on" || got.Rules[1].Name != "canary" {
		t.Errorf("30/70: %+v; want the testers rule kept and the canary at 30/70", got.Rules)
	}
	if f.Rules[1].Split[0].BasisPoints != 1000 {
		t.Error("the form changed the serving definition itself")
	}
	for form, want := range map[string]string{
		"rule=1&w.on=30&w.off=60":     "add up to 90 %",
		"rule=1&w.on=12.345&w.off=88": "at most 2 decimals",
		"rule=1&w.on=-5&w.off=105":    "from 0 to 100",
		"rule=0&w.on=30&w.off=70":     "no split",
		"rule=7&w.on=30&w.off=70":     "no split",
		"w.on=30&w.off=70":            "no split",
	} {
		if _, err := post(form); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want an error saying %q", form, err, want)
		}
	}
}

// backend is a Backend for the handler's own checks: it records what it is
// asked to apply (the edge's Backend is tested through a real Caddy, in
// caddymodule).
type backend struct {
	flags   []Flag
	history []Change
	applied []Request
}

func (b *backend) Flags() []Flag     { return b.flags }
func (b *backend) History() []Change { return b.history }
func (b *backend) Apply(r Request) error {
	b.applied = append(b.applied, r)
	return nil
}
func (b *backend) Ask(q Question) ([]Answer, string, error) {
	return []Answer{{Flag: "checkout", Variant: "on", Reason: "SPLIT", Rule: "rollout", Bucket: new(17)}}, "DE", nil
}
func (b *backend) Viewer(*http.Request) Question { return Question{} }
func (b *backend) Preview(string, string, time.Duration, bool) (*http.Cookie, error) {
	return nil, errors.New("no previews here")
}
func (b *backend) EndPreview(bool) *http.Cookie { return &http.Cookie{Name: "x"} }

func TestChangesAreChecked(t *testing.T) {
	f := parseFlags(t, `flags: {f: {rules: [{serve: on}]}}`)[0]
	const token = "0123456789012345678901234567890123456789abc" // 43 characters, as the handler makes them
	post := func(h *Handler, user string, form url.Values, header map[string]string, withCookie bool) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "http://edge.example/ff/flag/f/disable", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range header {
			r.Header.Set(k, v)
		}
		if withCookie {
			r.AddCookie(&http.Cookie{Name: csrfCookie, Value: token})
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r, user)
		return w
	}
	good := url.Values{"csrf": {token}, "reason": {"INC-1"}, "confirm": {"on"}}
	sameSite := map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://edge.example"}
	for _, tc := range []struct {
		name       string
		user, anon string
		form       url.Values
		header     map[string]string
		cookie     bool
		status     int
		says       string
	}{
		{"another site's page (Sec-Fetch-Site)", "alice", "", good, map[string]string{"Sec-Fetch-Site": "cross-site"}, true, 403, "another site"},
		{"another site's page (Origin)", "alice", "", good, map[string]string{"Origin": "http://evil.example"}, true, 403, "another site"},
		{"no token cookie", "alice", "", good, sameSite, false, 403, "reload the page"},
		{"a wrong token", "alice", "", url.Values{"csrf": {"guess"}, "reason": {"x"}}, sameSite, true, 403, "reload the page"},
		{"nobody signed in", "", "", good, sameSite, true, 403, "read-only"},
		{"a kill switch not confirmed", "alice", "", url.Values{"csrf": {token}, "reason": {"INC-1"}}, sameSite, true, 400, "confirm"},
		{"no reason", "alice", "", url.Values{"csrf": {token}, "reason": {"  "}}, sameSite, true, 400, "needs a reason"},
		{"alice", "alice", "", good, sameSite, true, 303, ""},
		{"anonymous, allowed by the config", "", "kiosk", good, sameSite, true, 303, ""},
	} {
		b := &backend{flags: []Flag{{Definition: f}}}
		h := &Handler{Backend: b, Base: "/ff", AnonymousActor: tc.anon}
		w := post(h, tc.user, tc.form, tc.header, tc.cookie)
		if w.Code != tc.status || !strings.Contains(w.Body.String(), tc.says) {
			t.Errorf("%s: %d %q; want %d saying %q", tc.name, w.Code, w.Body.String(), tc.status, tc.says)
		}
		if tc.status != 303 {
			if len(b.applied) != 0 {
				t.Errorf("%s: refused, yet applied %+v", tc.name, b.applied)
			}
			continue
		}
		if actor := cmp.Or(tc.user, tc.anon); len(b.applied) != 1 || b.applied[0].Actor != actor || b.applied[0].Action != "disable" || b.applied[0].Reason != "INC-1" {
			t.Errorf("%s: applied %+v; want one disable by %s with the reason", tc.name, b.applied, actor)
		}
	}
}

func TestPagesAreLockedDown(t *testing.T) {
	f := parseFlags(t, `flags: {f: {}}`)[0]
	h := &Handler{Backend: &backend{flags: []Flag{{Definition: f}}}, Base: "/ff"}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/ff/", nil), "")
	csp := w.Header().Get("Content-Security-Policy")
	if w.Code != 200 || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("the list: %d, CSP %q; want a strict policy", w.Code, csp)
	}
	var c *http.Cookie
	for _, k := range w.Result().Cookies() {
		if k.Name == csrfCookie {
			c = k
		}
	}
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/ff/" {
		t.Errorf("the token cookie: %+v; want HttpOnly, SameSite=Strict, on /ff/", c)
	}
	if body := w.Body.String(); strings.Contains(body, "<script>") || !strings.Contains(body, `name="csrf"`) && strings.Contains(body, `method="post"`) {
		t.Error("the page has inline script, or a form without the token")
	}
}

func TestStaleFlags(t *testing.T) {
	flags := parseFlags(t, `flags: {done: {rules: [{serve: on}]}, busy: {rules: [{split: {on: 50, off: 50}}]}, fresh: {rules: [{serve: on}]}}`)
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	h := &Handler{StaleAfter: 30 * 24 * time.Hour, Now: func() time.Time { return now }}
	for i, want := range []bool{true, false, false} {
		unchanged := now.Add(-60 * 24 * time.Hour)
		if i == 2 {
			unchanged = now.Add(-time.Hour)
		}
		if got := h.row(Flag{Definition: flags[i], Unchanged: unchanged}).Stale; got != want {
			t.Errorf("%s: stale %v; want %v", flags[i].Key, got, want)
		}
	}
}

// TestEveryPageRenders shows a flag with all there is to show — a rollout
// with guards and decisions, runtime changes, traffic, history — on every
// page: a template that fails on some of it fails here, not in front of a
// person.
func TestEveryPageRenders(t *testing.T) {
	flags := parseFlags(t, `flags:
  checkout:
    description: The new checkout
    owner: team-payments
    tags: [payments]
    rules: [{name: testers, when: {header.X-Tester: {in: ["1"]}}, serve: on}]
    rollout: {variant: on, steps: [1, 5, 25, 100]}
  banner: {enabled: false}
`)
	at := time.Date(2026, 11, 20, 9, 30, 0, 0, time.UTC)
	flags[0].RolloutShare = new(500)
	b := &backend{
		flags: []Flag{
			{Definition: flags[0], Runtime: &Runtime{Replaced: true, Actor: "bob", Reason: "a hotfix", At: at},
				Rollout: &Rollout{Status: rollout.Running, Candidate: "on", Control: "off", Step: 2, Steps: []float64{1, 5, 25, 100}, Percent: 5,
					Waiting: "412 more candidate requests", Evidence: rollout.Evidence{Candidate: rollout.Arm{Requests: 88, Failures: 1}, Control: rollout.Arm{Requests: 1700, Failures: 12}},
					Guards:    []rollout.GuardResult{{Guard: "failure_rate", Verdict: rollout.Inconclusive, Candidate: 1.1, Control: 0.7, Threshold: 0.5, Detail: "p = 0.4"}},
					Decisions: []rollout.Decision{{At: at, Actor: "rollout", Action: rollout.Advance, Step: 1, FromPercent: 1, ToPercent: 5, Reason: "every guard passed"}}},
				Observed: []Observed{{Variant: "off", Requests: 1700, Failures: 12, FailureRate: 0.7, P99: 41}, {Variant: "on", Requests: 88, Failures: 1, FailureRate: 1.1, P99: 44}}},
			{Definition: flags[1], Runtime: &Runtime{Killed: true, Actor: "alice", Reason: "INC-7", At: at}},
		},
		history: []Change{
			{At: at, Actor: "bob", Reason: "a hotfix", Flag: "checkout", Action: "replace", Before: json.RawMessage(`{"enabled":true}`), After: json.RawMessage(`{"enabled":true,"owner":"x"}`)},
			{At: at, Actor: "rollout", Flag: "checkout", Action: "rollout_advance", Decision: &rollout.Decision{Reason: "every guard passed"}},
		},
	}
	h := &Handler{Backend: b, Base: "/ff", StaleAfter: time.Hour}
	for path, says := range map[string][]string{
		"/ff/":                           {"checkout", "rolling out", "team-payments", "off: 1,700 requests", "killed"},
		"/ff/?state=killed&q=ban":        {`value="ban"`, `<span id="shown">1</span> of 2 flags shown`},
		"/ff/flag/checkout":              {"Guarded rollout", `class="now"`, "412 more candidate requests", "inconclusive", "every guard passed", "Changed at runtime by", "bob", "Pause the rollout", "+", "Preview as on"},
		"/ff/flag/banner":                {"Turned off: everyone gets off.", "alice"},
		"/ff/explain?unit=u1&country=DE": {"Every flag", "bucket 17 of 10,000"},
		"/ff/flag/nothing":               {"no flag"},
		"/ff/elsewhere":                  {"no page"},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil), "alice")
		body := w.Body.String()
		for _, s := range says {
			if !strings.Contains(body, s) {
				t.Errorf("%s (%d) does not say %q", path, w.Code, s)
			}
		}
		if strings.Contains(body, "ZgotmplZ") || strings.Contains(body, "<no value>") {
			t.Errorf("%s: a template wrote a value it could not: %s", path, body)
		}
	}
}
