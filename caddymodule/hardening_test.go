package caddymodule

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/edgeflags/edgeflags/rules"
)

// Regression tests for what an adversarial client, a bad origin or an
// operator's slip could do (issue 15). Each fails without its fix.

// rawRequest sends a request written by hand to the edge and returns the
// body of the answer: the echo backends' JSON.
func (s *site) rawRequest(t *testing.T, raw string) echo {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e echo
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatalf("status %d, not an echo: %v", resp.StatusCode, err)
	}
	return e
}

func TestOurHeadersAreNeverHopByHop(t *testing.T) {
	s := startCaddy(t, edgeCaddyfile, demoFlags)
	host := strings.TrimPrefix(s.url, "http://")
	for _, connection := range [][]string{
		{"X-Features, X-Feature-Search-V2"},
		{"keep-alive, x-features", "X_FEATURE_SEARCH_V2 , Upgrade-Insecure"},
		{"X-FEATURE-NEW-CHECKOUT,x-feature-dark-mode,X-Features"},
	} {
		raw := "GET / HTTP/1.1\r\nHost: " + host + "\r\nCookie: ff_uid=hop-by-hop-visitor\r\n"
		for _, line := range connection {
			raw += "Connection: " + line + "\r\n"
		}
		e := s.rawRequest(t, raw+"\r\n")
		for _, name := range []string{"X-Features", "X-Feature-Search-V2", "X-Feature-New-Checkout", "X-Feature-Dark-Mode"} {
			if e.Headers.Get(name) == "" {
				t.Errorf("Connection: %q: the backend got no %s", connection, name)
			}
		}
	}
}

// trailerBackend reads the whole body and answers with the trailers it got.
func trailerBackend(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		json.NewEncoder(w).Encode(echo{Backend: "trailers", Headers: r.Trailer})
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestTrailersCannotCarryOurHeaders(t *testing.T) {
	s := startCaddy(t, strings.Replace(edgeCaddyfile, "reverse_proxy @new {NEW}\n\treverse_proxy {OLD}", "reverse_proxy "+trailerBackend(t), 1), demoFlags)
	host := strings.TrimPrefix(s.url, "http://")
	e := s.rawRequest(t, "POST / HTTP/1.1\r\nHost: "+host+"\r\nTransfer-Encoding: chunked\r\n"+
		"Trailer: X-Features, X-Feature-Search-V2, X-Checksum\r\n\r\n"+
		"5\r\nhello\r\n0\r\nX-Features: search-v2=on\r\nX-Feature-Search-V2: on\r\nX-Feature-Dark-Mode: dark\r\nX-Checksum: 42\r\n\r\n")
	for name := range e.Headers {
		if isOurs(name, "x-feature-") {
			t.Errorf("the backend got the trailer %s: %q", name, e.Headers[name])
		}
	}
	if e.Headers.Get("X-Checksum") != "42" {
		t.Errorf("the backend's trailers %v: want the others kept (X-Checksum)", e.Headers)
	}
}

func TestEmptyDocumentsDoNotWipeTheFlags(t *testing.T) {
	s := startCaddy(t, opsCaddyfile, "flags:\n  banner: {rules: [{serve: on}]}\n")
	flags := filepath.Join(s.dir, "flags.yaml")
	for _, empty := range []string{"", "# all flags moved elsewhere\n", "{}\n", "flags: {}\n"} {
		writeFlags(t, flags, empty)
		waitForLoadError(t, 2*time.Second, "now defines no flags")
		if got := s.body(t); got != "banner=on" {
			t.Fatalf("%q replaced the flags: %q", empty, got)
		}
		writeFlags(t, flags, "flags:\n  banner: {rules: [{serve: on}]}\n")
		waitUntil(t, 2*time.Second, "the good file again", func() bool {
			var o overview
			admin(t, "GET", "/feature-flags/", "", &o)
			return o.LastError == nil
		})
	}

	// Said explicitly, an empty set is accepted.
	s = startCaddy(t, strings.Replace(opsCaddyfile, "flags_check_interval 100ms", "flags_check_interval 100ms\n\t\tallow_empty_flags", 1), "flags:\n  banner: {}\n")
	writeFlags(t, filepath.Join(s.dir, "flags.yaml"), "{}\n")
	waitUntil(t, 2*time.Second, "allow_empty_flags applies the empty set", func() bool { return s.body(t) == "" })
}

func TestEmptyOriginAnswerIsNeitherServedNorCached(t *testing.T) {
	origin := newFlagOrigin(t, "flags:\n  banner: {rules: [{serve: on}]}\n")
	url := origin.URL + "/empty-origin.yaml"
	s := startCaddy(t, urlCaddyfile(url), "")
	if got := s.body(t); got != "banner=on" {
		t.Fatalf("got %q", got)
	}
	empty := "# nothing\n\n"
	origin.body.Store(&empty)
	waitForLoadError(t, 3*time.Second, "now defines no flags")
	if got := s.body(t); got != "banner=on" {
		t.Errorf("an empty answer changed what serves: %q", got)
	}
	// A restart while the origin still answers empty starts from the
	// cache, which still holds the flags.
	s2 := startCaddy(t, urlCaddyfile(url), "")
	if got := s2.body(t); got != "banner=on" {
		t.Errorf("a restart while the origin answers empty: %q, want the cached flags", got)
	}
	var o overview
	admin(t, "GET", "/feature-flags/", "", &o)
	if len(o.Sources) != 1 || !o.Sources[0].FromCache {
		t.Errorf("sources: %+v", o.Sources)
	}
}

// TestHalfWrittenFileIsNotLoaded writes a flags file in place, in two
// parts with a pause between them shorter than the check interval; the
// first part alone is valid YAML with fewer flags. It must never serve.
func TestHalfWrittenFileIsNotLoaded(t *testing.T) {
	s := startCaddy(t, strings.Replace(opsCaddyfile, "flags_check_interval 100ms", "flags_check_interval 200ms", 1), "flags:\n  a: {}\n")
	path := filepath.Join(s.dir, "flags.yaml")
	for round := range 6 {
		// Each round starts just after the check that applied the last
		// one; shifting the start puts the half-written window across a
		// check in most rounds.
		time.Sleep(time.Duration(round) * 70 * time.Millisecond)
		half := fmt.Sprintf("a=off, b%d=off", round)
		whole := half + fmt.Sprintf(", c%d=off", round)
		seen := make(chan string, 1)
		go func() { // what serves, while the file is written and after
			for start := time.Now(); time.Since(start) < 3*time.Second; time.Sleep(5 * time.Millisecond) {
				if got := s.body(t); got == half || got == whole {
					seen <- got
					return
				}
			}
			seen <- "nothing"
		}()
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(f, "flags:\n  a: {}\n  b%d: {}\n", round)
		time.Sleep(150 * time.Millisecond)
		fmt.Fprintf(f, "  c%d: {}\n", round)
		f.Close()
		if got := <-seen; got != whole {
			t.Fatalf("round %d: %s served first, want the whole file", round, got)
		}
	}
}

func TestOversizedFileIsNotReadWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "huge.yaml")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(3 << 30) // sparse: 3 GB that take no disk
	f.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err = readSource(path)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "3221225472 bytes, more than the limit of 33554432") {
		t.Errorf("got %v", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("refusing a 3 GB file allocated %d MB", alloc>>20)
	}
}

func TestPutKeepsTheKillSwitchAndTakesYAML(t *testing.T) {
	s := startCaddy(t, opsCaddyfile, "flags:\n  checkout: {rules: [{serve: on}]}\n")
	var c Change
	admin(t, "POST", "/feature-flags/flags/checkout/disable?actor=oncall&reason=INC-9", "", &c)
	if code := admin(t, "PUT", "/feature-flags/flags/checkout?actor=dev", "rules:\n  - split: {on: 50, off: 50}\nowner: payments\n", &c); code != 200 {
		t.Fatalf("PUT with a YAML body: %d %+v", code, c)
	}
	if got := s.body(t); got != "checkout=off" {
		t.Errorf("a PUT after disable lifted the kill switch: %q", got)
	}
	var f struct {
		Definition json.RawMessage
		Runtime    *runtimeEntry
	}
	admin(t, "GET", "/feature-flags/flags/checkout", "", &f)
	if f.Runtime == nil || f.Runtime.Enabled == nil || *f.Runtime.Enabled || !json.Valid(f.Runtime.Flag) || !strings.Contains(string(f.Runtime.Flag), `"owner":"payments"`) {
		t.Errorf("runtime entry: %+v (flag %s)", f.Runtime, f.Runtime.Flag)
	}
	data, _ := os.ReadFile(filepath.Join(s.dir, "state.json"))
	if !json.Valid(data) || !strings.Contains(string(data), `"owner": "payments"`) {
		t.Errorf("state file: %s", data)
	}
	admin(t, "POST", "/feature-flags/flags/checkout/enable?actor=oncall", "", &c)
	if got := s.body(t); got != "checkout=on" && got != "checkout=off" {
		t.Errorf("after enable: %q", got)
	}
	f.Runtime = nil
	admin(t, "GET", "/feature-flags/flags/checkout", "", &f)
	if f.Runtime == nil || f.Runtime.Enabled != nil || !strings.Contains(string(f.Definition), `"split"`) {
		t.Errorf("after enable, the replacement serves without a pin: %+v %s", f.Runtime, f.Definition)
	}
}

func TestSiteCookieWithAMatcherBeforeTheHandler(t *testing.T) {
	s := startCaddy(t, globalOptions+`	feature_flags {
		flags_file {FLAGS}
	}
}
http://127.0.0.1:{EDGE} {
	route {
		@new feature new-checkout on
		request_header @new X-Routed new
		feature_flags {
			cookie_name shop_uid
		}
		reverse_proxy {OLD}
	}
}
`, "flags:\n  new-checkout: {rules: [{split: {on: 50, off: 50}}]}\n")
	resp, _ := s.get(t, "/")
	if len(resp.Cookies()) != 1 || resp.Cookies()[0].Name != "shop_uid" {
		t.Fatalf("first visit: %v", resp.Header["Set-Cookie"])
	}
	id := unitWith("new-checkout", "on") // on at 25 %, so on at 50 %: without an identity it would be off
	for range 5 {
		resp, e := s.get(t, "/", "Cookie: ff_uid=not-this-one-0001; shop_uid="+id)
		if len(resp.Cookies()) != 0 {
			t.Fatalf("a visitor with the site's cookie got a new one: %v", resp.Header["Set-Cookie"])
		}
		want := variantFor("new-checkout", id, 5000)
		if got := e.Headers.Get("X-Feature-New-Checkout"); got != want || (e.Headers.Get("X-Routed") == "new") != (want == "on") {
			t.Errorf("variant %s (routed %q), the contract says %s for %s", got, e.Headers.Get("X-Routed"), want, id)
		}
		if r := e.Headers.Get("X-Feature-New-Checkout"); r == "" {
			t.Error("no flag header")
		}
	}
}

func TestLastErrorClearsOnRevert(t *testing.T) {
	s := startCaddy(t, opsCaddyfile, "flags:\n  banner: {rules: [{serve: on}]}\n")
	flags := filepath.Join(s.dir, "flags.yaml")
	writeFlags(t, flags, "flags:\n  banner: {rules: [{serve: maybe}]}\n")
	var o overview
	waitUntil(t, 2*time.Second, "the error is reported", func() bool {
		admin(t, "GET", "/feature-flags/", "", &o)
		return o.LastError != nil
	})
	writeFlags(t, flags, "flags:\n  banner: {rules: [{serve: on}]}\n") // the content serving
	waitUntil(t, 2*time.Second, "the error clears", func() bool {
		var o overview
		admin(t, "GET", "/feature-flags/", "", &o)
		return o.LastError == nil
	})
}

func TestURLRedirectsToAnotherHostAreRefused(t *testing.T) {
	origin := newFlagOrigin(t, "flags:\n  banner: {rules: [{serve: on}]}\n")
	target := strings.Replace(origin.URL, "127.0.0.1", "localhost", 1) + "/flags.yaml" // another host
	redirector := httptest.NewServer(http.RedirectHandler(target, http.StatusFound))
	t.Cleanup(redirector.Close)
	err := validate("{\n\tfeature_flags {\n\t\tflags_url " + redirector.URL + "/redirected.yaml\n\t}\n}\n:0 {\n\tfeature_flags\n}")
	if err == nil || !strings.Contains(err.Error(), "to another host, localhost") || !strings.Contains(err.Error(), "flags_url_redirects any") {
		t.Errorf("a redirect to another host: %v", err)
	}
	s := startCaddy(t, strings.Replace(urlCaddyfile(redirector.URL+"/redirected.yaml"), "100ms", "100ms\n\t\tflags_url_redirects any", 1), "")
	if got := s.body(t); got != "banner=on" {
		t.Fatalf("with flags_url_redirects any: %q", got)
	}
	var o overview
	admin(t, "GET", "/feature-flags/", "", &o)
	if len(o.Sources) != 1 || o.Sources[0].FinalURL != target {
		t.Errorf("sources: %+v, want final_url %s", o.Sources, target)
	}
	if err := checkRedirect(false)(httptest.NewRequest("GET", "http://flags.example.com/f.yaml", nil),
		[]*http.Request{httptest.NewRequest("GET", "https://flags.example.com/f.yaml", nil)}); err == nil || !strings.Contains(err.Error(), "from HTTPS") {
		t.Errorf("a downgrade: %v", err)
	}
}

func TestRuntimeEntryThatNoLongerFitsIsSetAside(t *testing.T) {
	s := startCaddy(t, opsCaddyfile, "segments:\n  staff: {header.X-Staff: {in: [yes]}}\nflags:\n  banner: {}\n")
	var c Change
	if code := admin(t, "PUT", "/feature-flags/flags/banner?actor=dev", `{"rules": [{"when": {"segment": {"in": ["staff"]}}, "serve": "on"}]}`, &c); code != 200 {
		t.Fatalf("PUT: %d", code)
	}
	if got := s.body(t, "X-Staff: yes"); got != "banner=on" {
		t.Fatalf("got %q", got)
	}
	// The file drops the segment: the file still applies, the entry is set aside.
	writeFlags(t, filepath.Join(s.dir, "flags.yaml"), "flags:\n  banner: {}\n  other: {}\n")
	waitUntil(t, 2*time.Second, "the file applies", func() bool { return s.body(t, "X-Staff: yes") == "banner=off, other=off" })
	var o overview
	admin(t, "GET", "/feature-flags/", "", &o)
	if why := o.RuntimeSetAside["banner"]; !strings.Contains(why, `unknown segment "staff"`) || o.LastError != nil {
		t.Errorf("set aside: %v, last error %+v", o.RuntimeSetAside, o.LastError)
	}
	if len(o.RecentChanges) == 0 || o.RecentChanges[0].Action != "runtime_set_aside" || o.RecentChanges[0].Actor != "edgeflags" {
		t.Errorf("recent changes: %+v", o.RecentChanges)
	}
	if v := metricValue(t, "caddy_feature_flags_runtime_set_aside", ""); v != 1 {
		t.Errorf("runtime_set_aside metric = %v", v)
	}
	// A new config load (as at a restart) starts, with the entry set aside.
	s2 := startCaddy(t, strings.Replace(opsCaddyfile, "{DIR}/state.json", filepath.Join(s.dir, "state.json"), 1), "flags:\n  banner: {}\n")
	if got := s2.body(t, "X-Staff: yes"); got != "banner=off" {
		t.Errorf("restart: %q", got)
	}
	// The segment returns: the entry applies again.
	writeFlags(t, filepath.Join(s2.dir, "flags.yaml"), "segments:\n  staff: {header.X-Staff: {in: [yes]}}\nflags:\n  banner: {}\n")
	waitUntil(t, 2*time.Second, "the entry applies again", func() bool { return s2.body(t, "X-Staff: yes") == "banner=on" })
}

func TestMetricsForgetRemovedFlags(t *testing.T) {
	s := startCaddy(t, opsCaddyfile, "flags:\n  churn-a: {rules: [{serve: on}]}\n  kept: {variants: [x, y, z], rules: [{serve: z}]}\n")
	s.body(t)
	if metricValue(t, "caddy_feature_flags_evaluations_total", `flag="churn-a",reason="TARGETING_MATCH",variant="on"`) == 0 {
		t.Fatal("no series for churn-a")
	}
	writeFlags(t, filepath.Join(s.dir, "flags.yaml"), "flags:\n  churn-b: {rules: [{serve: on}]}\n  kept: {variants: [x, y], rules: [{serve: y}]}\n")
	waitUntil(t, 2*time.Second, "the new set", func() bool { return strings.HasPrefix(s.body(t), "churn-b=on") })
	if metricValue(t, "caddy_feature_flags_evaluations_total", `flag="churn-a",reason="TARGETING_MATCH",variant="on"`) != 0 ||
		metricValue(t, "caddy_feature_flags_evaluations_total", `flag="kept",reason="TARGETING_MATCH",variant="z"`) != 0 {
		t.Error("the series of a removed flag, or a removed variant, is still exported")
	}
	if metricValue(t, "caddy_feature_flags_evaluations_total", `flag="kept",reason="TARGETING_MATCH",variant="y"`) == 0 {
		t.Error("a kept flag lost its series")
	}
}

func TestDuplicateIdentityCookies(t *testing.T) {
	s := startCaddy(t, edgeCaddyfile, demoFlags)
	for _, cookie := range []string{
		"ff_uid=bad!; ff_uid=good-visitor-0001",
		"ff_uid=; ff_uid=good-visitor-0001; ff_uid=another-visitor",
	} {
		req, _ := http.NewRequest("GET", s.url+"/", nil)
		req.Header.Set("Cookie", cookie)
		resp, e := s.do(t, req)
		if len(resp.Cookies()) != 0 {
			t.Errorf("%s: a new id was minted: %v", cookie, resp.Header["Set-Cookie"])
		}
		if got, want := e.Headers.Get("X-Feature-New-Checkout"), variantFor("new-checkout", "good-visitor-0001", 2500); got != want {
			t.Errorf("%s: %s, want %s (the first valid id)", cookie, got, want)
		}
	}
}

func TestOverrideHeaderTwiceAndCookie(t *testing.T) {
	t.Setenv("FF_TEST_OVERRIDE_SECRET", overrideSecret)
	s := startCaddy(t, globalOptions+`	feature_flags {
		flags_file {FLAGS}
		override_secret {env.FF_TEST_OVERRIDE_SECRET}
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags
	reverse_proxy {NEW}
}
`, demoFlags)
	signedOn, _ := SignOverride([]byte(overrideSecret), map[string]string{"search-v2": "on"}, time.Now().Add(time.Hour))
	signedOff, _ := SignOverride([]byte(overrideSecret), map[string]string{"search-v2": "off", "dark-mode": "dark"}, time.Now().Add(time.Hour))
	cookie := "ff_uid=override-visitor; ff_override=" + base64.RawURLEncoding.EncodeToString([]byte(signedOn))
	for _, tc := range []struct {
		name    string
		headers []string
		want    string // search-v2, dark-mode
	}{
		{"an untrusted header does not hide a signed cookie", []string{"Feature-Override: search-v2=off", "Cookie: " + cookie}, "on light"},
		{"the first trusted header line wins", []string{"Feature-Override: " + signedOff, "Feature-Override: " + signedOn}, "off dark"},
		{"an untrusted first line is skipped", []string{"Feature-Override: search-v2=on, dark-mode=dark", "Feature-Override: " + signedOff}, "off dark"},
		{"a trusted header beats the cookie", []string{"Feature-Override: " + signedOff, "Cookie: " + cookie}, "off dark"},
	} {
		_, e := s.get(t, "/", tc.headers...)
		if got := e.Headers.Get("X-Feature-Search-V2") + " " + e.Headers.Get("X-Feature-Dark-Mode"); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestSignOverrideTTL(t *testing.T) {
	secret := []byte(overrideSecret)
	for _, ttl := range []time.Duration{0, -time.Hour, 31 * 24 * time.Hour} {
		if _, err := SignOverride(secret, map[string]string{"a": "on"}, time.Now().Add(ttl)); err == nil || !strings.Contains(err.Error(), "at most 720h0m0s (30 days)") {
			t.Errorf("ttl %s: %v", ttl, err)
		}
	}
	// A signature made elsewhere for longer is not honoured either.
	members, _ := parseDictionary("a=on, ff.exp=" + fmt.Sprint(time.Now().Add(60*24*time.Hour).Unix()))
	sig := base64.StdEncoding.EncodeToString(signature(secret, canonicalOverride(members)))
	members, _ = parseDictionary(canonicalOverride(members) + ", ff.sig=:" + sig + ":")
	if err := verifyOverride(secret, members, time.Now()); err == nil || !strings.Contains(err.Error(), "ahead") {
		t.Errorf("a 60-day signature: %v", err)
	}
}

func TestLooseTrustedProxiesWarn(t *testing.T) {
	s := startCaddy(t, `{
	admin localhost:{ADMIN}
	skip_install_trust
	log {
		output file {DIR}/caddy.log
		level WARN
	}
	servers {
		trusted_proxies static 127.0.0.1/32
	}
	feature_flags {
		flags_file {FLAGS}
		override_from 10.0.0.0/8
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags
	respond "{feature_flags.all}"
}
`, "flags:\n  a: {}\n")
	s.body(t)
	var found bool
	for _, line := range readLogLines(t, filepath.Join(s.dir, "caddy.log"), 1) {
		if msg, _ := line["msg"].(string); strings.Contains(msg, "add trusted_proxies_strict") {
			found = true
		}
	}
	if !found {
		data, _ := os.ReadFile(filepath.Join(s.dir, "caddy.log"))
		t.Errorf("no warning about trusted proxies without trusted_proxies_strict:\n%s", data)
	}
}

func TestHeaderLimits(t *testing.T) {
	var many strings.Builder
	many.WriteString("flags:\n")
	for i := range maxPerFlagHeaders + 1 {
		fmt.Fprintf(&many, "  flag-%03d: {}\n", i)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "many.yaml")
	os.WriteFile(path, []byte(many.String()), 0o644)
	global := "{\n\tfeature_flags {\n\t\tflags_file " + path + "\n\t}\n}\n"
	err := validate(global + ":0 {\n\tfeature_flags\n}")
	if err == nil || !strings.Contains(err.Error(), "65 flags send a header of their own") || !strings.Contains(err.Error(), "headers dictionary") {
		t.Errorf("65 per-flag headers: %v", err)
	}
	if err := validate(global + ":0 {\n\tfeature_flags {\n\t\theaders dictionary\n\t}\n}"); err != nil {
		t.Errorf("the same with headers dictionary: %v", err)
	}

	// The X-Features dictionary past 64 KiB: refused unless headers none.
	many.Reset()
	many.WriteString("flags:\n")
	for i := range 3000 {
		fmt.Fprintf(&many, "  a-rather-long-flag-key-%04d: {header: false}\n", i)
	}
	os.WriteFile(path, []byte(many.String()), 0o644)
	if err := validate(global + ":0 {\n\tfeature_flags {\n\t\theaders dictionary\n\t}\n}"); err == nil || !strings.Contains(err.Error(), "the X-Features header would be up to") {
		t.Errorf("a 100 KB X-Features: %v", err)
	}
	if err := validate(global + ":0 {\n\tfeature_flags {\n\t\theaders none\n\t}\n}"); err != nil {
		t.Errorf("the same with headers none: %v", err)
	}

	// A reload that would cross the limit is refused; the last good set serves.
	s := startCaddy(t, opsCaddyfile, "flags:\n  a: {}\n")
	writeFlags(t, filepath.Join(s.dir, "flags.yaml"), strings.Replace(many.String(), "{header: false}", "{}", -1))
	waitForLoadError(t, 5*time.Second, "flags send a header of their own")
	if got := s.body(t); got != "a=off" {
		t.Errorf("got %q", got)
	}
}

// TestFlagsRoundTripThroughTheRuntimeLayer: whatever the parser accepts as
// a flag (YAML or JSON) is stored as JSON and reads back the same.
func TestFlagsRoundTripThroughTheRuntimeLayer(t *testing.T) {
	for _, body := range []string{
		"rules:\n  - split: {on: 12.5, off: 87.5}\n",
		"variants: [a, b, c]\noff_variant: b\ndefault: c\nenabled: false\nsalt: s1\nclient: true\nheader: false\ndescription: \"x: y\"\n",
		"rules:\n- name: r\n  when: {country: {in: DE}, header.x-plan: {not_in: [free]}, now: {after: \"2026-01-01T00:00:00Z\"}, ip: {cidr: 10.0.0.0/8}}\n  serve: on\n",
		`{"rules": [{"when": {"query.v": {"semver_gte": "1.2.3", "regex": ["^a", "b$"]}}, "serve": "on"}]}`,
	} {
		f, err := rules.ParseFlag("body", "k", []byte(body))
		if err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		first, _ := json.Marshal(f)
		g, err := rules.ParseFlag("state", "k", first)
		if err != nil {
			t.Fatalf("%s does not parse back: %v", first, err)
		}
		if second, _ := json.Marshal(g); string(second) != string(first) {
			t.Errorf("round trip of %q:\n%s\n%s", body, first, second)
		}
	}
}
