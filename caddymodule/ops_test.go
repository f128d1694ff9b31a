package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// opsCaddyfile watches {FLAGS} every 100ms, keeps its runtime layer in
// {DIR}, writes the audit log to {DIR}/audit.log, and answers with the
// request's flags.
const opsCaddyfile = `{
	admin localhost:{ADMIN}
	skip_install_trust
	log audit {
		output file {DIR}/audit.log
		include feature_flags.audit
	}
	feature_flags {
		flags_file {FLAGS}
		flags_check_interval 100ms
		state_file {DIR}/state.json
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags
	respond "{feature_flags.all}"
}
`

// body GETs / with the given headers ("Name: value") and returns the body
// of a 200 response.
func (s *site) body(t *testing.T, headers ...string) string {
	t.Helper()
	resp, b := s.request(t, "GET", "/", "", headers...)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	return string(b)
}

// request sends a request with the given headers ("Name: value") and
// returns the response with its body read.
func (s *site) request(t *testing.T, method, path, body string, headers ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, s.url+path, strings.NewReader(body))
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// admin sends a request to the admin API and decodes the JSON answer.
func admin(t *testing.T, method, path, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, "http://localhost:"+strconv.Itoa(adminPort())+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode
}

func writeFlags(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// waitForLoadError waits until GET /feature-flags/ reports a last_error
// that contains want.
func waitForLoadError(t *testing.T, limit time.Duration, want string) {
	t.Helper()
	waitUntil(t, limit, "a load error saying "+want, func() bool {
		var o overview
		admin(t, "GET", "/feature-flags/", "", &o)
		return o.LastError != nil && strings.Contains(o.LastError.Message, want)
	})
}

func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func TestFileChangeAppliesAndABrokenFileIsRefused(t *testing.T) {
	s := startCaddy(t, opsCaddyfile, "flags:\n  banner: {rules: [{serve: off}]}\n")
	flags := filepath.Join(s.dir, "flags.yaml")
	if got := s.body(t); got != "banner=off" {
		t.Fatalf("got %q", got)
	}
	writeFlags(t, flags, "flags:\n  banner: {rules: [{serve: on}]}\n")
	took := waitUntil(t, time.Second, "a changed file applies", func() bool { return s.body(t) == "banner=on" })
	t.Logf("applied %s after the write", took)

	// A broken file: refused whole, the last good flags serve on, and the
	// admin API says why.
	writeFlags(t, flags, "flags:\n  banner: {rules: [{split: {on: 60, off: 30}}]}\n  other: {}\n")
	var o overview
	waitUntil(t, 2*time.Second, "the admin API reports the error", func() bool {
		admin(t, "GET", "/feature-flags/", "", &o)
		return o.LastError != nil
	})
	if e := o.LastError; !strings.Contains(e.Message, "flags.banner.rules[0].split: weights sum to 90, want 100") || !strings.HasSuffix(e.Source, "flags.yaml") ||
		time.Since(e.At) > 10*time.Second {
		t.Errorf("last_error = %+v", e)
	}
	for range 10 {
		if got := s.body(t); got != "banner=on" {
			t.Fatalf("a broken file changed what serves: %q", got)
		}
	}
	var m struct{ Flags []flagSummary }
	admin(t, "GET", "/feature-flags/", "", &m)
	if len(m.Flags) != 1 {
		t.Errorf("the admin API lists %d flags, want the last good set's 1", len(m.Flags))
	}
	// Fixed: it applies, and the error clears.
	writeFlags(t, flags, "flags:\n  banner: {rules: [{serve: off}]}\n  other: {}\n")
	waitUntil(t, time.Second, "the fixed file applies", func() bool { return s.body(t) == "banner=off, other=off" })
	var fixed overview
	admin(t, "GET", "/feature-flags/", "", &fixed)
	if fixed.LastError != nil {
		t.Errorf("last_error after a good load: %+v", fixed.LastError)
	}
}

func TestKillSwitchThroughTheAdminAPI(t *testing.T) {
	s := startCaddy(t, opsCaddyfile, "flags:\n  checkout:\n    owner: payments\n    rules: [{serve: on}]\n  search: {rules: [{serve: on}]}\n")
	if got := s.body(t); got != "checkout=on, search=on" {
		t.Fatalf("got %q", got)
	}
	var errResp struct{ Error string }
	if code := admin(t, "POST", "/feature-flags/flags/checkout/disable", "", &errResp); code != 400 || !strings.Contains(errResp.Error, "actor") {
		t.Errorf("a change without an actor: %d %q", code, errResp.Error)
	}
	if code := admin(t, "POST", "/feature-flags/flags/nope/disable?actor=alice", "", &errResp); code != 404 {
		t.Errorf("an unknown flag: %d %q", code, errResp.Error)
	}
	var c Change
	if code := admin(t, "POST", "/feature-flags/flags/checkout/disable?actor=alice&reason=INC-4711", "", &c); code != 200 {
		t.Fatalf("disable: %d", code)
	}
	if got := s.body(t); got != "checkout=off, search=on" {
		t.Errorf("the very next request after the kill switch: %q", got)
	}
	if !strings.Contains(string(c.Before), `"enabled"`) && !strings.Contains(string(c.After), `"enabled":false`) {
		t.Errorf("the change record's before/after: %s → %s", c.Before, c.After)
	}

	// A file reload keeps the kill switch.
	writeFlags(t, filepath.Join(s.dir, "flags.yaml"), "flags:\n  checkout:\n    owner: payments-v2\n    rules: [{serve: on}]\n  search: {rules: [{serve: off}]}\n")
	waitUntil(t, time.Second, "the file change", func() bool { return s.body(t) == "checkout=off, search=off" })

	// It is in the state file, and in the audit log with who, why and what.
	var st stateFile
	data, _ := os.ReadFile(filepath.Join(s.dir, "state.json"))
	if json.Unmarshal(data, &st) != nil || st.Flags["checkout"].Enabled == nil || *st.Flags["checkout"].Enabled || st.Flags["checkout"].Actor != "alice" {
		t.Errorf("state file: %s", data)
	}
	lines := readLogLines(t, filepath.Join(s.dir, "audit.log"), 1)
	if len(lines) != 1 {
		t.Fatalf("%d audit lines", len(lines))
	}
	a := lines[0]
	if a["logger"] != "feature_flags.audit" || a["actor"] != "alice" || a["reason"] != "INC-4711" || a["flag"] != "checkout" ||
		a["action"] != "disable" || a["remote_addr"] == "" || a["before"] == nil || a["after"] == nil || a["ts"] == nil {
		t.Errorf("audit record: %v", a)
	}
	if after, _ := a["after"].(map[string]any); after["enabled"] != false {
		t.Errorf("audit after: %v", a["after"])
	}

	// The overview lists the change; enable undoes the kill switch.
	var o overview
	admin(t, "GET", "/feature-flags/", "", &o)
	if len(o.RecentChanges) == 0 || o.RecentChanges[0].Flag != "checkout" || o.Flags[0].Runtime == nil {
		t.Errorf("overview: %+v", o)
	}
	admin(t, "POST", "/feature-flags/flags/checkout/enable", `{"actor": "bob", "reason": "fixed"}`, &c)
	if got := s.body(t); got != "checkout=on, search=off" {
		t.Errorf("after enable: %q", got)
	}

	// PUT replaces a flag; a definition that does not compile is refused.
	if code := admin(t, "PUT", "/feature-flags/flags/search?actor=carol", `{"variants": ["a", "b"], "rules": [{"serve": "c"}]}`, &errResp); code != 400 ||
		!strings.Contains(errResp.Error, `unknown variant "c"`) {
		t.Errorf("a bad PUT: %d %q", code, errResp.Error)
	}
	if code := admin(t, "PUT", "/feature-flags/flags/search?actor=carol", `{"variants": ["a", "b"], "rules": [{"serve": "b"}]}`, &c); code != 200 {
		t.Fatalf("PUT: %d", code)
	}
	if got := s.body(t); got != "checkout=on, search=b" {
		t.Errorf("after PUT: %q", got)
	}
	var f struct {
		Definition json.RawMessage
		Runtime    *runtimeEntry
	}
	admin(t, "GET", "/feature-flags/flags/search", "", &f)
	if !strings.Contains(string(f.Definition), `"serve":"b"`) || f.Runtime == nil || f.Runtime.Actor != "carol" {
		t.Errorf("GET flag: %s %+v", f.Definition, f.Runtime)
	}
	// Dropping the runtime layer returns the flag to its file definition.
	admin(t, "DELETE", "/feature-flags/flags/search/runtime?actor=carol", "", &c)
	if got := s.body(t); got != "checkout=on, search=off" {
		t.Errorf("after DELETE runtime: %q", got)
	}

	var ex struct{ Flags []Explanation }
	admin(t, "POST", "/feature-flags/explain", `{"user": "alice", "country": "DE"}`, &ex)
	if len(ex.Flags) != 2 || ex.Flags[0].Flag != "checkout" || ex.Flags[0].Reason != "TARGETING_MATCH" || ex.Flags[0].Rule != "rules[0]" {
		t.Errorf("explain: %+v", ex.Flags)
	}
	if code := admin(t, "POST", "/feature-flags/explain", `{"contry": "DE"}`, &errResp); code != 400 || !strings.Contains(errResp.Error, "contry") {
		t.Errorf("explain with an unknown field: %d %q", code, errResp.Error)
	}
}

// flagOrigin is an HTTP origin for flags_url that honours If-None-Match
// and counts what it answered.
type flagOrigin struct {
	body                 atomic.Pointer[string]
	ok, notModified, all atomic.Int32
	*httptest.Server
}

func newFlagOrigin(t *testing.T, body string) *flagOrigin {
	o := &flagOrigin{}
	o.body.Store(&body)
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.all.Add(1)
		b := *o.body.Load()
		etag := fmt.Sprintf(`"%x"`, len(b)*31+int(b[len(b)-2]))
		if r.Header.Get("If-None-Match") == etag {
			o.notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		o.ok.Add(1)
		w.Header().Set("ETag", etag)
		io.WriteString(w, b)
	}))
	t.Cleanup(o.Close)
	return o
}

func urlCaddyfile(url string) string {
	return strings.Replace(opsCaddyfile, "flags_file {FLAGS}\n\t\tflags_check_interval 100ms", "flags_url "+url+" 100ms", 1)
}

func TestURLSourceWithETagAndCache(t *testing.T) {
	origin := newFlagOrigin(t, "flags:\n  banner: {rules: [{serve: on}]}\n")
	url := origin.URL + "/flags.yaml"
	s := startCaddy(t, urlCaddyfile(url), "")
	if got := s.body(t); got != "banner=on" {
		t.Fatalf("got %q", got)
	}
	waitUntil(t, 3*time.Second, "conditional polls answered 304", func() bool { return origin.notModified.Load() >= 3 })
	if origin.ok.Load() != 1 {
		t.Errorf("the origin sent the body %d times, want once (then 304s)", origin.ok.Load())
	}
	next := "flags:\n  banner: {rules: [{serve: off}]}\n"
	origin.body.Store(&next)
	waitUntil(t, 3*time.Second, "the origin's change applies", func() bool { return s.body(t) == "banner=off" })
	broken := "flags:\n  banner: {rules: [{serve: maybe}]}\n"
	origin.body.Store(&broken)
	var o2 overview
	waitForLoadError(t, 3*time.Second, `unknown variant "maybe"`)
	if got := s.body(t); got != "banner=off" {
		t.Errorf("a broken origin copy changed what serves: %q", got)
	}
	t.Logf("origin: %d requests, %d bodies, %d not modified", origin.all.Load(), origin.ok.Load(), origin.notModified.Load())

	// The origin goes down; a new config load (as at a restart) starts
	// from the cached last good copy.
	origin.Close()
	s2 := startCaddy(t, urlCaddyfile(url), "")
	if got := s2.body(t); got != "banner=off" {
		t.Errorf("started during an outage: %q, want the cached last good copy", got)
	}
	admin(t, "GET", "/feature-flags/", "", &o2)
	if len(o2.Sources) != 1 || !o2.Sources[0].FromCache {
		t.Errorf("sources: %+v", o2.Sources)
	}
}

func TestURLSourceDownWithoutCacheFailsToLoad(t *testing.T) {
	err := validate("{\n\tfeature_flags {\n\t\tflags_url http://127.0.0.1:1/never.yaml\n\t}\n}\n:0 {\n\tfeature_flags\n}")
	if err == nil || !strings.Contains(err.Error(), "there is no cached copy") {
		t.Errorf("got %v", err)
	}
}

// TestConfigMapSwapOfFlagsFile replays a Kubernetes ConfigMap update: the
// flags file is a link through ..data, swapped to a new directory.
func TestConfigMapSwapOfFlagsFile(t *testing.T) {
	dir := t.TempDir()
	link := func(target, name string) {
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.Symlink(target, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	for i, v := range []string{"off", "on"} {
		d := filepath.Join(dir, fmt.Sprintf("..2026_11_21_0%d", i))
		os.Mkdir(d, 0o755)
		os.WriteFile(filepath.Join(d, "flags.yaml"), []byte("flags:\n  banner: {rules: [{serve: "+v+"}]}\n"), 0o644)
	}
	link("..2026_11_21_00", "..data")
	link("..data/flags.yaml", "flags.yaml")
	s := startCaddy(t, strings.Replace(opsCaddyfile, "flags_file {FLAGS}", "flags_file "+filepath.Join(dir, "flags.yaml"), 1), "")
	if got := s.body(t); got != "banner=off" {
		t.Fatalf("got %q", got)
	}
	link("..2026_11_21_01", "..data")
	os.RemoveAll(filepath.Join(dir, "..2026_11_21_00"))
	took := waitUntil(t, time.Second, "the swapped ConfigMap applies", func() bool { return s.body(t) == "banner=on" })
	t.Logf("applied %s after the swap", took)
}

// TestReloadRemovingAMatchedFlag: the matcher names a flag a reload removes;
// the server keeps serving, the matcher stops matching, and a warning says why.
func TestReloadRemovingAMatchedFlag(t *testing.T) {
	s := startCaddy(t, strings.Replace(opsCaddyfile, "\tfeature_flags\n\trespond \"{feature_flags.all}\"", `	feature_flags
	@new feature checkout on
	respond @new "new"
	respond "old"`, 1), "flags:\n  checkout: {rules: [{serve: on}]}\n  other: {}\n")
	if got := s.body(t); got != "new" {
		t.Fatalf("got %q", got)
	}
	writeFlags(t, filepath.Join(s.dir, "flags.yaml"), "flags:\n  other: {}\n")
	waitUntil(t, time.Second, "the reload", func() bool { return s.body(t) == "old" })
	for range 5 {
		if got := s.body(t); got != "old" {
			t.Fatalf("got %q", got)
		}
	}
}
