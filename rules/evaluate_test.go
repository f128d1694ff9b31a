package rules

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDesignExample(t *testing.T) {
	set := loadFile(t, "../testdata/flags/design-example.yaml")
	tests := []struct {
		name   string
		req    *testRequest
		want   string
		reason Reason
		rule   int
	}{
		{"staff by user", &testRequest{unit: "alice", values: map[Kind]string{KindUser: "alice"}}, "on", ReasonTargetingMatch, 0},
		{"cookie visitor named alice is not staff", &testRequest{unit: "alice"}, "off", ReasonDefault, -1},
		{"eu pro user in the 25 %", &testRequest{unit: unitInBucket(t, "new-checkout", 0, 2500), values: map[Kind]string{KindEU: "true"}, headers: map[string]string{"X-Plan": "pro"}}, "on", ReasonSplit, 1},
		{"eu pro user outside the 25 %", &testRequest{unit: unitInBucket(t, "new-checkout", 2500, 10000), values: map[Kind]string{KindEU: "true"}, headers: map[string]string{"X-Plan": "pro"}}, "off", ReasonSplit, 1},
		{"eu pro user without identity falls through", &testRequest{values: map[Kind]string{KindEU: "true"}, headers: map[string]string{"X-Plan": "pro"}}, "off", ReasonDefault, -1},
		{"release day 5 %", &testRequest{unit: unitInBucket(t, "new-checkout", 0, 500), now: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}, "on", ReasonSplit, 2},
		{"before release day", &testRequest{unit: unitInBucket(t, "new-checkout", 0, 500), now: time.Date(2026, 12, 1, 8, 59, 59, 0, time.UTC)}, "off", ReasonDefault, -1},
		{"bot gets the default", &testRequest{unit: "alice", values: map[Kind]string{KindUser: "alice"}, bot: true}, "off", ReasonBot, -1},
		{"override", &testRequest{overrides: map[string]string{"new-checkout": "on"}}, "on", ReasonOverride, -1},
		{"override with an unknown variant is ignored", &testRequest{overrides: map[string]string{"new-checkout": "maybe"}}, "off", ReasonDefault, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := evaluate(t, set, "new-checkout", tt.req)
			if res.Variant != tt.want || res.Reason != tt.reason || res.Rule != tt.rule {
				t.Errorf("got %s %s rule %d, want %s %s rule %d", res.Variant, res.Reason, res.Rule, tt.want, tt.reason, tt.rule)
			}
		})
	}
}

// unitInBucket finds a unit whose bucket for salt is in [lo, hi).
func unitInBucket(t testing.TB, salt string, lo, hi int) string {
	t.Helper()
	for i := 0; i < 1_000_000; i++ {
		u := "u" + strconv.Itoa(i)
		if b := Bucket(salt, u); b >= lo && b < hi {
			return u
		}
	}
	t.Fatalf("no unit in [%d, %d)", lo, hi)
	return ""
}

func TestOperators(t *testing.T) {
	tests := []struct {
		name string
		when string
		req  testRequest
		want bool
	}{
		{"in", "header.X-Plan: {in: [pro, enterprise]}", testRequest{headers: map[string]string{"X-Plan": "pro"}}, true},
		{"in misses", "header.X-Plan: {in: [pro, enterprise]}", testRequest{headers: map[string]string{"X-Plan": "free"}}, false},
		{"in is case sensitive", "header.X-Plan: {in: [pro]}", testRequest{headers: map[string]string{"X-Plan": "Pro"}}, false},
		{"in single value", "header.X-Plan: {in: pro}", testRequest{headers: map[string]string{"X-Plan": "pro"}}, true},
		{"in large set", "user: {in: [a, b, c, d, e, f, g, h, i, j, k]}", testRequest{values: map[Kind]string{KindUser: "k"}}, true},
		{"in large set misses", "user: {in: [a, b, c, d, e, f, g, h, i, j, k]}", testRequest{values: map[Kind]string{KindUser: "z"}}, false},
		{"not_in", "header.X-Plan: {not_in: [free]}", testRequest{headers: map[string]string{"X-Plan": "pro"}}, true},
		{"not_in hits", "header.X-Plan: {not_in: [free]}", testRequest{headers: map[string]string{"X-Plan": "free"}}, false},
		{"not_in holds for a missing attribute", "header.X-Plan: {not_in: [free]}", testRequest{}, true},
		{"header name is canonicalized", "header.x-plan: {in: [pro]}", testRequest{headers: map[string]string{"X-Plan": "pro"}}, true},
		{"prefix", "path: {prefix: [/api/, /beta/]}", testRequest{values: map[Kind]string{KindPath: "/beta/x"}}, true},
		{"prefix misses", "path: {prefix: /api/}", testRequest{values: map[Kind]string{KindPath: "/ap"}}, false},
		{"suffix", "host: {suffix: .example.com}", testRequest{values: map[Kind]string{KindHost: "shop.example.com"}}, true},
		{"suffix misses", "host: {suffix: .example.com}", testRequest{values: map[Kind]string{KindHost: "example.org"}}, false},
		{"host values are lower-cased", "host: {in: [Shop.Example.COM]}", testRequest{values: map[Kind]string{KindHost: "shop.example.com"}}, true},
		{"contains", "user_agent: {contains: [iPhone, Android]}", testRequest{values: map[Kind]string{KindUserAgent: "Mozilla/5.0 (Linux; Android 14)"}}, true},
		{"contains misses", "user_agent: {contains: iPhone}", testRequest{values: map[Kind]string{KindUserAgent: "curl/8"}}, false},
		{"regex", `path: {regex: "^/api/v[0-9]+/"}`, testRequest{values: map[Kind]string{KindPath: "/api/v2/orders"}}, true},
		{"regex misses", `path: {regex: "^/api/v[0-9]+/"}`, testRequest{values: map[Kind]string{KindPath: "/api/vx/orders"}}, false},
		{"regex literal prefix misses", `path: {regex: "^/api/v[0-9]+/"}`, testRequest{values: map[Kind]string{KindPath: "/web"}}, false},
		{"regex list is any-of", `path: {regex: ["^/a$", "^/b$"]}`, testRequest{values: map[Kind]string{KindPath: "/b"}}, true},
		{"regex unanchored", `user_agent: {regex: "(?i)bot"}`, testRequest{values: map[Kind]string{KindUserAgent: "GoogleBot"}}, true},
		{"cidr v4", "ip: {cidr: [10.0.0.0/8, 192.168.0.0/16]}", testRequest{ip: netip.MustParseAddr("10.1.2.3")}, true},
		{"cidr v4 misses", "ip: {cidr: [10.0.0.0/8]}", testRequest{ip: netip.MustParseAddr("11.1.2.3")}, false},
		{"cidr v4-mapped request", "ip: {cidr: [10.0.0.0/8]}", testRequest{ip: netip.MustParseAddr("::ffff:10.1.2.3")}, true},
		{"cidr v6", "ip: {cidr: [2001:db8::/32]}", testRequest{ip: netip.MustParseAddr("2001:db8::1")}, true},
		{"cidr v4-mapped prefix", "ip: {cidr: [\"::ffff:10.0.0.0/104\"]}", testRequest{ip: netip.MustParseAddr("10.9.9.9")}, true},
		{"cidr unknown ip", "ip: {cidr: [0.0.0.0/0]}", testRequest{}, false},
		{"ip in", "ip: {in: [203.0.113.7]}", testRequest{ip: netip.MustParseAddr("203.0.113.7")}, true},
		{"ip not_in", "ip: {not_in: [203.0.113.7]}", testRequest{ip: netip.MustParseAddr("203.0.113.8")}, true},
		{"semver_gte", "header.X-App-Version: {semver_gte: 2.4.0}", testRequest{headers: map[string]string{"X-App-Version": "2.10.1"}}, true},
		{"semver_gte equal", "header.X-App-Version: {semver_gte: 2.4.0}", testRequest{headers: map[string]string{"X-App-Version": "v2.4.0"}}, true},
		{"semver_gte below", "header.X-App-Version: {semver_gte: 2.4.0}", testRequest{headers: map[string]string{"X-App-Version": "2.3.99"}}, false},
		{"semver_gte prerelease ranks below release", "header.X-App-Version: {semver_gte: 2.4.0}", testRequest{headers: map[string]string{"X-App-Version": "2.4.0-rc.1"}}, false},
		{"semver_lt", "header.X-App-Version: {semver_lt: 2.4.0}", testRequest{headers: map[string]string{"X-App-Version": "2.4.0-beta.2"}}, true},
		{"semver_lt prerelease order", "header.X-App-Version: {semver_lt: 2.4.0-beta.11}", testRequest{headers: map[string]string{"X-App-Version": "2.4.0-beta.2"}}, true},
		{"semver_eq ignores build", "header.X-App-Version: {semver_eq: 1.2.3}", testRequest{headers: map[string]string{"X-App-Version": "1.2.3+build.7"}}, true},
		{"semver_gt short form", "header.X-App-Version: {semver_gt: \"2\"}", testRequest{headers: map[string]string{"X-App-Version": "2.0.1"}}, true},
		{"semver_lte", "header.X-App-Version: {semver_lte: 1.0.0}", testRequest{headers: map[string]string{"X-App-Version": "1.0.0"}}, true},
		{"semver of garbage is false", "header.X-App-Version: {semver_lt: 9.0.0}", testRequest{headers: map[string]string{"X-App-Version": "latest"}}, false},
		{"gt", "query.age: {gt: 17}", testRequest{query: map[string]string{"age": "18"}}, true},
		{"gt equal", "query.age: {gt: 17}", testRequest{query: map[string]string{"age": "17"}}, false},
		{"gte", "query.age: {gte: 17.5}", testRequest{query: map[string]string{"age": "17.5"}}, true},
		{"lt", "cookie.visits: {lt: 3}", testRequest{cookies: map[string]string{"visits": "2"}}, true},
		{"lte", "cookie.visits: {lte: 3}", testRequest{cookies: map[string]string{"visits": "4"}}, false},
		{"numeric of garbage is false", "cookie.visits: {lt: 3}", testRequest{cookies: map[string]string{"visits": "two"}}, false},
		{"numeric of missing is false", "cookie.visits: {lt: 3}", testRequest{}, false},
		{"NaN matches no comparison", "header.X-Age: {gte: 18}", testRequest{headers: map[string]string{"X-Age": "NaN"}}, false},
		{"NaN matches no lt either", "header.X-Age: {lt: 18}", testRequest{headers: map[string]string{"X-Age": "nan"}}, false},
		{"Inf matches no comparison", "header.X-Age: {gte: 18}", testRequest{headers: map[string]string{"X-Age": "+Inf"}}, false},
		{"-Inf matches no comparison", "header.X-Age: {lt: 18}", testRequest{headers: map[string]string{"X-Age": "-infinity"}}, false},
		{"overflow matches no comparison", "header.X-Age: {gt: 18}", testRequest{headers: map[string]string{"X-Age": "1e999"}}, false},
		{"after", `now: {after: "2026-11-01T00:00:00Z"}`, testRequest{}, true},
		{"after is inclusive", `now: {after: "2026-11-21T12:00:00Z"}`, testRequest{}, true},
		{"before", `now: {before: "2026-11-21T12:00:00Z"}`, testRequest{}, false},
		{"time window", `now: {after: "2026-11-20T00:00:00+01:00", before: "2026-11-22T00:00:00Z"}`, testRequest{}, true},
		{"country", "country: {in: [de, AT]}", testRequest{values: map[Kind]string{KindCountry: "DE"}}, true},
		{"country not_in", "country: {not_in: [DE]}", testRequest{values: map[Kind]string{KindCountry: "XX"}}, true},
		{"continent", "continent: {in: [EU]}", testRequest{values: map[Kind]string{KindContinent: "EU"}}, true},
		{"eu", `eu: {in: ["true"]}`, testRequest{values: map[Kind]string{KindEU: "true"}}, true},
		{"eu unquoted boolean", `eu: {in: [false]}`, testRequest{values: map[Kind]string{KindEU: "false"}}, true},
		{"method", "method: {in: [post]}", testRequest{values: map[Kind]string{KindMethod: "POST"}}, true},
		{"all conditions must hold", "method: {in: [POST]}\n    path: {prefix: /api/}", testRequest{values: map[Kind]string{KindMethod: "POST", KindPath: "/web"}}, false},
		{"empty when always holds", "{}", testRequest{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set := mustLoad(t, "flags:\n  f:\n    rules:\n    - when:\n        "+indent(tt.when)+"\n      serve: on\n")
			req := tt.req
			res := evaluate(t, set, "f", &req)
			if got := res.Variant == "on"; got != tt.want {
				t.Errorf("%s: got %v, want %v (%s)", tt.when, got, tt.want, res.Reason)
			}
		})
	}
}

func indent(s string) string {
	return strings.ReplaceAll(s, "\n    ", "\n        ")
}

func TestKillSwitchAndOffVariant(t *testing.T) {
	set := mustLoad(t, `
flags:
  banner:
    variants: [blue, green, hidden]
    off_variant: hidden
    default: blue
    enabled: false
    rules:
    - serve: green
  theme:
    variants: [light, dark]
    default: dark
  plain:
    enabled: false
`)
	req := &testRequest{unit: "u1", overrides: map[string]string{"banner": "green"}}
	if res := evaluate(t, set, "banner", req); res.Variant != "hidden" || res.Reason != ReasonDisabled {
		t.Errorf("killed flag: got %s %s, want hidden DISABLED (the kill switch beats an override)", res.Variant, res.Reason)
	}
	if res := evaluate(t, set, "theme", req); res.Variant != "dark" || res.Reason != ReasonStatic {
		t.Errorf("flag without rules: got %s %s, want dark STATIC", res.Variant, res.Reason)
	}
	if res := evaluate(t, set, "plain", req); res.Variant != "off" || res.Reason != ReasonDisabled {
		t.Errorf("default variants: got %s %s, want off DISABLED", res.Variant, res.Reason)
	}
	f := set.Flag(0)
	if f.OffVariant != "hidden" || f.Default != "blue" || *f.Enabled || !*f.Header || f.Salt != "banner" {
		t.Errorf("normalized definition: %+v", f)
	}
}

func TestPrerequisites(t *testing.T) {
	set := mustLoad(t, `
flags:
  new-api:
    enabled: true
    rules:
    - when: {country: {in: [DE]}}
      serve: on
  new-checkout:
    rules:
    - when: {flag.new-api: {in: [on]}}
      serve: on
  old-banner:
    rules:
    - when: {flag.new-checkout: {not_in: [on]}}
      serve: on
  killed:
    enabled: false
    rules: [{serve: on}]
  needs-killed:
    rules:
    - when: {flag.killed: {in: [on]}}
      serve: on
`)
	de := &testRequest{values: map[Kind]string{KindCountry: "DE"}}
	fr := &testRequest{values: map[Kind]string{KindCountry: "FR"}}
	for _, tc := range []struct {
		req  *testRequest
		key  string
		want string
	}{
		{de, "new-checkout", "on"}, {fr, "new-checkout", "off"},
		{de, "old-banner", "off"}, {fr, "old-banner", "on"},
		{de, "needs-killed", "off"},
		{&testRequest{overrides: map[string]string{"new-api": "on"}}, "new-checkout", "on"},
	} {
		if got := evaluate(t, set, tc.key, tc.req).Variant; got != tc.want {
			t.Errorf("%s for %v: got %s, want %s", tc.key, tc.req.values, got, tc.want)
		}
	}
}

func TestSegments(t *testing.T) {
	set := mustLoad(t, `
segments:
  staff:
    user: {in: [alice]}
  office:
    ip: {cidr: [10.0.0.0/8]}
  insiders:
    segment: {in: [staff, office]}
  outsiders:
    segment: {not_in: [insiders]}
flags:
  preview:
    rules:
    - when: {segment: {in: [insiders]}}
      serve: on
  survey:
    rules:
    - when: {segment: {in: [outsiders]}, country: {in: [FR]}}
      serve: on
`)
	for _, tc := range []struct {
		name string
		req  *testRequest
		key  string
		want string
	}{
		{"staff user", &testRequest{values: map[Kind]string{KindUser: "alice"}}, "preview", "on"},
		{"office ip", &testRequest{ip: netip.MustParseAddr("10.2.3.4")}, "preview", "on"},
		{"anyone else", &testRequest{ip: netip.MustParseAddr("8.8.8.8")}, "preview", "off"},
		{"outsider in FR", &testRequest{values: map[Kind]string{KindCountry: "FR"}}, "survey", "on"},
		{"insider in FR", &testRequest{values: map[Kind]string{KindCountry: "FR", KindUser: "alice"}}, "survey", "off"},
	} {
		if got := evaluate(t, set, tc.key, tc.req).Variant; got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestNoIdentitySkipsSplits(t *testing.T) {
	set := mustLoad(t, `
flags:
  rollout:
    variants: [off, on, beta]
    default: beta
    rules:
    - split: {on: 100}
    - when: {country: {in: [DE]}}
      serve: on
`)
	req := &testRequest{values: map[Kind]string{KindCountry: "DE"}}
	res := evaluate(t, set, "rollout", req)
	if res.Variant != "on" || res.Reason != ReasonTargetingMatch || res.Rule != 1 || res.Bucket != -1 {
		t.Errorf("no identity: got %+v, want the next rule to serve on, unbucketed", res)
	}
	res = evaluate(t, set, "rollout", &testRequest{})
	if res.Variant != "beta" || res.Reason != ReasonDefault {
		t.Errorf("no identity, no rule: got %+v, want default beta", res)
	}
	res = evaluate(t, set, "rollout", &testRequest{unit: "someone"})
	if res.Variant != "on" || res.Reason != ReasonSplit || res.Bucket != Bucket("rollout", "someone") {
		t.Errorf("identified: got %+v", res)
	}
}

func TestSaltAndBucketAcrossRules(t *testing.T) {
	set := mustLoad(t, `
flags:
  renamed:
    salt: old-name
    rules:
    - when: {country: {in: [DE]}}
      split: {on: 50, off: 50}
    - split: {on: 50, off: 50}
`)
	unit := "user-42"
	de := evaluate(t, set, "renamed", &testRequest{unit: unit, values: map[Kind]string{KindCountry: "DE"}})
	fr := evaluate(t, set, "renamed", &testRequest{unit: unit, values: map[Kind]string{KindCountry: "FR"}})
	if de.Bucket != Bucket("old-name", unit) || fr.Bucket != de.Bucket || de.Variant != fr.Variant {
		t.Errorf("a unit keeps one bucket in every rule of a flag: DE %+v, FR %+v", de, fr)
	}
}

func TestEvaluationReadsLazilyAndOnce(t *testing.T) {
	set := mustLoad(t, `
flags:
  a: {rules: [{split: {on: 50, off: 50}}]}
  b: {rules: [{split: {on: 50, off: 50}}]}
  c: {}
`)
	req := &testRequest{unit: "x"}
	ev := set.NewEvaluation()
	ev.Reset(set, req)
	if _, ok := ev.Lookup("c"); !ok || req.unitCalls != 0 {
		t.Fatalf("a flag without splits read the identity %d times", req.unitCalls)
	}
	ev.All()
	if req.unitCalls != 1 {
		t.Errorf("identity read %d times, want once per evaluation", req.unitCalls)
	}
	if got := string(ev.AppendDictionary(nil)); got != "a="+ev.Result(0).Variant+", b="+ev.Result(1).Variant+", c=off" {
		t.Errorf("dictionary: %s", got)
	}
}

func TestTooManyRules(t *testing.T) {
	src := "flags:\n  f:\n    rules:\n" + strings.Repeat("    - serve: on\n", MaxRules+1)
	_, err := Load(Source{Name: "big.yaml", Data: []byte(src)})
	if err == nil || !strings.Contains(err.Error(), "big.yaml: flags.f.rules: 1001 rules; a flag has at most 1000") {
		t.Fatalf("got %v", err)
	}
}
