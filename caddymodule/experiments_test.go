package caddymodule

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeflags/edgeflags/rules"
)

func TestBotMatcher(t *testing.T) {
	m := newBotMatcher(defaultBotTokens)
	for ua, want := range map[string]bool{
		"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)":                                                                                              true,
		"Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)":                                                                                               true,
		"AdsBot-Google (+http://www.google.com/adsbot.html)":                                                                                                                    true,
		"Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)":                                                                                   true,
		"facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)":                                                                                             true,
		"Mozilla/5.0 (Linux; Android 7.0;) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 (compatible; PetalBot;+https://webmaster.petalsearch.com/site/petalbot)": true,
		"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.1; +https://openai.com/gptbot)":                                                                true,
		"Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)":                                                                                   true,
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36":                                                           false,
		"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148":                                                         false,
		"Mozilla/5.0 (Linux; Android 9; CUBOT P30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36":                                                    false,
		"curl/8.5.0": false,
		"":           false,
	} {
		if got := m.match(ua); got != want {
			t.Errorf("%q: bot = %v, want %v", ua, got, want)
		}
	}
}

const googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

func TestCrawlersGetDefaults(t *testing.T) {
	flags := "flags:\n  everyone: {rules: [{serve: on}]}\n  rollout: {default: off, rules: [{split: {on: 100}}]}\n"
	for _, tc := range []struct {
		bots string
		want string
	}{
		{"", "off BOT off BOT"},
		{"\t\tbots off\n", "on TARGETING_MATCH on SPLIT"},
		{"\t\tbots Googlebot\n", "off BOT off BOT"},
	} {
		s := startCaddy(t, globalOptions+`	feature_flags {
		flags_file {FLAGS}
`+tc.bots+`	}
}
http://127.0.0.1:{EDGE} {
	feature_flags
	respond "{feature.everyone} {feature.everyone.reason} {feature.rollout} {feature.rollout.reason}"
}
`, flags)
		req, _ := http.NewRequest("GET", s.url+"/", nil)
		req.Header.Set("User-Agent", googlebot)
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != tc.want {
			t.Errorf("bots %q: got %q, want %q", strings.TrimSpace(tc.bots), body, tc.want)
		}
		if strings.HasSuffix(tc.want, "BOT") && len(resp.Cookies()) != 0 {
			t.Errorf("a crawler got an identity cookie: %v", resp.Header["Set-Cookie"])
		}
		if got := s.body(t); got != "on TARGETING_MATCH on SPLIT" {
			t.Errorf("a browser: %q", got)
		}
	}
}

// metricValue reads one sample from Caddy's metrics endpoint; 0 when absent.
func metricValue(t *testing.T, name string, labels string) float64 {
	t.Helper()
	v, _ := metricAt(t, "localhost:"+strconv.Itoa(adminPort()), name, labels)
	return v
}

// metricAt reads one sample from the metrics endpoint of the admin API at
// admin, and whether it is there.
func metricAt(t *testing.T, admin, name string, labels string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	prefix := name + "{" + labels + "} "
	if labels == "" {
		prefix = name + " "
	}
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

func TestMetrics(t *testing.T) {
	s := startCaddy(t, edgeCaddyfile, demoFlags)
	evals := func() float64 {
		return metricValue(t, "caddy_feature_flags_evaluations_total", `flag="search-v2",reason="TARGETING_MATCH",variant="on"`)
	}
	known := func() float64 { return metricValue(t, "caddy_feature_flags_geoip_lookups_total", `result="known"`) }
	unknown := func() float64 { return metricValue(t, "caddy_feature_flags_geoip_lookups_total", `result="unknown"`) }
	e0, k0, u0 := evals(), known(), unknown()
	for range 7 {
		s.get(t, "/", "X-Forwarded-For: 198.51.100.7") // Germany
	}
	for range 3 {
		s.get(t, "/", "X-Forwarded-For: 10.0.0.1")
	}
	if d := evals() - e0; d != 7 {
		t.Errorf("search-v2 on by TARGETING_MATCH counted %v times, want 7", d)
	}
	if dk, du := known()-k0, unknown()-u0; dk != 7 || du != 3 {
		t.Errorf("GeoIP lookups: %v known, %v unknown; want 7 and 3", dk, du)
	}
	if v := metricValue(t, "caddy_feature_flags_flags", ""); v != 5 {
		t.Errorf("flags gauge: %v, want 5", v)
	}
	if v := metricValue(t, "caddy_feature_flags_evaluations_total", `flag="recommendations",reason="DISABLED",variant="off"`); v < 10 {
		t.Errorf("killed flag evaluations: %v", v)
	}
}

func TestMetricsSurviveAConfigReload(t *testing.T) {
	s := startCaddy(t, edgeCaddyfile, demoFlags)
	s.get(t, "/", "X-Forwarded-For: 198.51.100.7")
	before := metricValue(t, "caddy_feature_flags_evaluations_total", `flag="search-v2",reason="TARGETING_MATCH",variant="on"`)
	s2 := startCaddy(t, edgeCaddyfile, demoFlags) // a new config load
	s2.get(t, "/", "X-Forwarded-For: 198.51.100.7")
	if after := metricValue(t, "caddy_feature_flags_evaluations_total", `flag="search-v2",reason="TARGETING_MATCH",variant="on"`); after != before+1 {
		t.Errorf("after a config reload: %v, want %v", after, before+1)
	}
	if v := metricValue(t, "caddy_feature_flags_reloads_total", `result="ok"`); v < 0 {
		t.Errorf("reloads: %v", v)
	}
}

func TestExposureEvents(t *testing.T) {
	t.Setenv("FF_TEST_EXPOSURE_KEY", "exposure-key-for-tests")
	flags := "flags:\n  a: {rules: [{split: {on: 50, off: 50}}]}\n  b: {rules: [{serve: on}]}\n"
	s := startCaddy(t, globalOptions+`	log exposures {
		output file {DIR}/exposures.log
		include feature_flags.exposure
	}
	feature_flags {
		flags_file {FLAGS}
		exposures {
			key {env.FF_TEST_EXPOSURE_KEY}
			sample 30
			sample b 100
		}
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags
	respond "ok"
}
`, flags)
	const users = 200
	wantA := 0
	for i := range users {
		unit := fmt.Sprintf("exposure-user-%03d", i)
		s.body(t, "Cookie: ff_uid="+unit)
		if rules.Bucket(exposureSalt, unit) < 3000 {
			wantA++
		}
	}
	s.body(t, "User-Agent: "+googlebot, "Cookie: ff_uid=a-crawler-with-a-cookie")
	lines := readLogLines(t, filepath.Join(s.dir, "exposures.log"), users+wantA)
	count := map[string]int{}
	hashed := regexp.MustCompile(`^[0-9a-f]{32}$`)
	for _, l := range lines {
		count[l["flag"].(string)]++
		if u, _ := l["unit"].(string); !hashed.MatchString(u) || strings.Contains(u, "exposure-user") {
			t.Fatalf("unit %q: want the identity's HMAC, never the identity", u)
		}
		if l["logger"] != "feature_flags.exposure" || l["variant"] == nil || l["reason"] == nil || l["country"] != "XX" || l["ts"] == nil {
			t.Fatalf("record: %v", l)
		}
	}
	t.Logf("exposures: %v (a sampled at 30 %%: want %d of %d users)", count, wantA, users)
	if count["b"] != users || count["a"] != wantA {
		t.Errorf("records: %v; want b for every user (%d, none for the crawler) and a for the %d sampled", count, users, wantA)
	}
}

func TestOFREP(t *testing.T) {
	flags := `
flags:
  new-checkout:
    client: true
    rules: [{split: {on: 50, off: 50}}]
  theme:
    variants: [light, dark]
    client: true
    rules: [{when: {country: {in: [DE]}}, serve: dark}]
  server-only:
    rules: [{serve: on}]
`
	s := startCaddy(t, ofrepCaddyfile, flags)
	post := func(path, body string, headers ...string) (*http.Response, map[string]any) {
		resp, raw := s.request(t, "POST", path, body, append(headers, "Content-Type: application/json")...)
		var out map[string]any
		if len(bytes.TrimSpace(raw)) > 0 {
			if err := json.Unmarshal(raw, &out); err != nil {
				t.Fatalf("%s: %d %s", path, resp.StatusCode, raw)
			}
		}
		return resp, out
	}
	unit := unitWith("new-checkout", "off") // 25 % threshold; a 50 % split agrees for units below 2500
	for _, u := range []string{"ofrep-a", "ofrep-b", "ofrep-c", "ofrep-d"} {
		if variantFor("new-checkout", u, 5000) == "on" {
			unit = u
			break
		}
	}

	// Bulk, with targetingKey: the client flags in the spec's shape.
	resp, out := post("/ofrep/v1/evaluate/flags", `{"context": {"targetingKey": "`+unit+`", "country": "DE"}}`, "X-Forwarded-For: 203.0.113.9")
	if resp.StatusCode != 200 || resp.Header.Get("ETag") == "" {
		t.Fatalf("bulk: %d, ETag %q", resp.StatusCode, resp.Header.Get("ETag"))
	}
	got, _ := json.Marshal(out)
	want := `{"flags":[{"key":"new-checkout","metadata":{"bucket":` + strconv.Itoa(rules.Bucket("new-checkout", unit)) +
		`},"reason":"SPLIT","value":true,"variant":"on"},{"key":"theme","reason":"DEFAULT","value":"light","variant":"light"}],"metadata":{"version":"` +
		out["metadata"].(map[string]any)["version"].(string) + `"}}`
	if string(got) != want {
		t.Errorf("bulk body (the country comes from the request, not the body):\n%s\nwant\n%s", got, want)
	}
	// The same context with the ETag: 304.
	resp, _ = post("/ofrep/v1/evaluate/flags", `{"context": {"targetingKey": "`+unit+`"}}`, "X-Forwarded-For: 203.0.113.9", "If-None-Match: "+resp.Header.Get("ETag"))
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %d, want 304", resp.StatusCode)
	}
	// From Germany the answer changes, and so does the ETag.
	resp, out = post("/ofrep/v1/evaluate/flags", `{"context": {"targetingKey": "`+unit+`"}}`, "X-Forwarded-For: 198.51.100.7", "If-None-Match: "+resp.Header.Get("ETag"))
	if resp.StatusCode != 200 || out["flags"].([]any)[1].(map[string]any)["value"] != "dark" {
		t.Errorf("from Germany: %d %v", resp.StatusCode, out)
	}

	// Single flag.
	resp, out = post("/ofrep/v1/evaluate/flags/theme", `{}`, "X-Forwarded-For: 198.51.100.7")
	if resp.StatusCode != 200 || out["key"] != "theme" || out["value"] != "dark" || out["variant"] != "dark" || out["reason"] != "TARGETING_MATCH" {
		t.Errorf("single: %d %v", resp.StatusCode, out)
	}
	for _, key := range []string{"nope", "server-only"} {
		resp, out = post("/ofrep/v1/evaluate/flags/"+key, `{}`)
		if resp.StatusCode != 404 || out["errorCode"] != "FLAG_NOT_FOUND" || out["key"] != key {
			t.Errorf("%s: %d %v", key, resp.StatusCode, out)
		}
	}
	for body, code := range map[string]string{`{`: "PARSE_ERROR", `{"context": []}`: "INVALID_CONTEXT", `{"context": {"targetingKey": 7}}`: "INVALID_CONTEXT",
		`{"context": {"targetingKey": ""}}`: "TARGETING_KEY_MISSING"} {
		resp, out = post("/ofrep/v1/evaluate/flags/theme", body)
		if resp.StatusCode != 400 || out["errorCode"] != code {
			t.Errorf("%s: %d %v, want 400 %s", body, resp.StatusCode, out, code)
		}
		resp, out = post("/ofrep/v1/evaluate/flags", body)
		if resp.StatusCode != 400 || out["errorCode"] != code {
			t.Errorf("bulk %s: %d %v, want 400 %s", body, resp.StatusCode, out, code)
		}
	}
	if r, _ := http.Get(s.url + "/ofrep/v1/evaluate/flags"); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", r.StatusCode)
	}

	// Without targetingKey, the request's own cookie: the same answer the
	// backends get.
	for i := range 20 {
		u := fmt.Sprintf("ofrep-cookie-%02d", i)
		_, out = post("/ofrep/v1/evaluate/flags/new-checkout", `{"context": {}}`, "Cookie: ff_uid="+u)
		_, e := s.get(t, "/", "Cookie: ff_uid="+u)
		if want := e.Headers.Get("X-Feature-New-Checkout") == "on"; out["value"] != want {
			t.Errorf("%s: OFREP says %v, the backend got %s", u, out["value"], e.Headers.Get("X-Feature-New-Checkout"))
		}
	}
	// A first visit through OFREP gets the identity cookie too.
	resp, _ = post("/ofrep/v1/evaluate/flags", `{}`)
	if len(resp.Cookies()) != 1 || resp.Cookies()[0].Name != "ff_uid" {
		t.Errorf("cookies: %v", resp.Header["Set-Cookie"])
	}
}

// BenchmarkBotMatcher is the crawler check on a browser's user agent: it
// runs once per request.
func BenchmarkBotMatcher(b *testing.B) {
	m := newBotMatcher(defaultBotTokens)
	ua := "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"
	b.ReportAllocs()
	for b.Loop() {
		if m.match(ua) {
			b.Fatal("a browser is not a bot")
		}
	}
}

// The matcher agrees with lower-casing and strings.Contains, on seeded
// random user agents built from the tokens' own letters, for token lists
// with one-byte and overlapping tokens.
func TestBotMatcherAgreesWithContains(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const alphabet = "botBOT/-;)spiderSPIDERcrawlerxX "
	for _, tokens := range [][]string{defaultBotTokens, {"x", "bot/", "Bo"}, {"bb", "bbb", "t)"}} {
		m := newBotMatcher(tokens)
		for range 20_000 {
			b := make([]byte, rng.IntN(24))
			for i := range b {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			}
			ua := string(b)
			want := false
			for _, tok := range tokens {
				want = want || strings.Contains(strings.ToLower(ua), strings.ToLower(tok))
			}
			if got := m.match(ua); got != want {
				t.Fatalf("tokens %q, user agent %q: match %v, want %v", tokens, ua, got, want)
			}
		}
	}
}

// FuzzBotMatcher: any user agent, the same answer as lower-casing and
// strings.Contains, and never a panic.
func FuzzBotMatcher(f *testing.F) {
	f.Add(googlebot)
	f.Add("")
	f.Add("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36")
	m := newBotMatcher(defaultBotTokens)
	f.Fuzz(func(t *testing.T, ua string) {
		want := false
		for _, tok := range defaultBotTokens {
			want = want || strings.Contains(strings.Map(asciiLower, ua), tok)
		}
		if got := m.match(ua); got != want {
			t.Fatalf("%q: match %v, want %v", ua, got, want)
		}
	})
}

// asciiLower lower-cases ASCII letters only, as the matcher does.
func asciiLower(r rune) rune {
	if 'A' <= r && r <= 'Z' {
		return r + 'a' - 'A'
	}
	return r
}
