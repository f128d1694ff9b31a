package caddymodule

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/edgeflags/edgeflags/rules"
)

// Dark launches through a real Caddy: the primary and the shadow are Go
// backends on loopback answering JSON; users are identified by X-User-Id.

// jsonBackend answers {"path", "at" (the time: differs every call), "n"};
// n is 2 instead of 1 on the paths differ selects. It records the Host
// and X-Shadow-Request of what it got.
type jsonBackend struct {
	url    string
	hosts  sync.Map // Host → true
	marked atomic.Int64
	calls  atomic.Int64
}

func newJSONBackend(t *testing.T, delay time.Duration, differ func(path string) bool) *jsonBackend {
	b := &jsonBackend{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.calls.Add(1)
		b.hosts.Store(r.Host, true)
		if r.Header.Get("X-Shadow-Request") == "1" {
			b.marked.Add(1)
		}
		time.Sleep(delay)
		n := 1
		if differ != nil && differ(r.URL.Path) {
			n = 2
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path, "at": time.Now().UnixNano(), "n": n})
	}))
	t.Cleanup(srv.Close)
	b.url = strings.TrimPrefix(srv.URL, "http://")
	return b
}

// ignoreAt leaves out the field every answer has differently.
const ignoreAt = "ignore json $.at"

func startShadow(t *testing.T, flag, shadowTo, options, flags string) (*site, *jsonBackend) {
	t.Helper()
	primary := newJSONBackend(t, 0, nil)
	s := startCaddy(t, strings.NewReplacer("<flag>", flag, "<shadow>", shadowTo, "<primary>", primary.url, "<options>", options).Replace(globalOptions+`	feature_flags {
		flags_file {FLAGS}
		state_file {DIR}/state.json
		identity {http.request.header.X-User-Id}
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags
	feature_shadow <flag> on {
		to <shadow>
		<options>
	}
	reverse_proxy <primary>
}
http://127.0.0.1:{EDGE2} {
	feature_flags
	reverse_proxy <primary>
}
`), flags)
	return s, primary
}

// shadowResults waits until the flag's results add up to want (or 10 s
// pass) and returns them.
func shadowResultsOf(t *testing.T, flag string, want uint64) shadowSummary {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var o overview
		admin(t, "GET", "/feature-flags/", "", &o)
		sum := o.Shadows[flag]
		var total uint64
		for _, n := range sum.Results {
			total += n
		}
		if total >= want || time.Now().After(deadline) {
			return sum
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestShadowIdenticalBackendsMatch(t *testing.T) {
	shadowBackend := newJSONBackend(t, 0, nil)
	s, _ := startShadow(t, "shadow-same", shadowBackend.url, ignoreAt, "flags:\n  shadow-same: {rules: [{split: {on: 50, off: 50}}]}\n")
	selected, aSelectedUser := 0, ""
	for i := range 1000 {
		user := "same-" + strconv.Itoa(i)
		if rules.Bucket("shadow-same", user) < 5000 {
			selected++
			aSelectedUser = user
		}
		if resp, body := s.request(t, "GET", "/item/"+strconv.Itoa(i), "", "X-User-Id: "+user); resp.StatusCode != 200 || !strings.Contains(string(body), `"n":1`) {
			t.Fatalf("primary: %d %s", resp.StatusCode, body)
		}
	}
	s.request(t, "POST", "/order", `{"id": 1}`, "X-User-Id: "+aSelectedUser)
	sum := shadowResultsOf(t, "shadow-same", uint64(selected)+1)
	t.Logf("1000 requests, %d of the variant: %v", selected, sum.Results)
	if sum.Results["match"] != uint64(selected) || sum.Results["mismatch"] != 0 || sum.Results["skipped"] != 1 {
		t.Errorf("results %v, want %d matches (the variant's users), no mismatch, and the POST skipped (safe methods by default)", sum.Results, selected)
	}
	if got := shadowBackend.marked.Load(); got != int64(selected) {
		t.Errorf("the shadow got %d marked copies, want %d", got, selected)
	}
	if _, ok := shadowBackend.hosts.Load(strings.TrimPrefix(s.url, "http://")); !ok {
		t.Error("the copies do not keep the request's Host")
	}
}

func TestShadowCountsDifferences(t *testing.T) {
	differ := func(path string) bool { return crc32.ChecksumIEEE([]byte(path))%20 == 0 } // 5 % of paths
	shadowBackend := newJSONBackend(t, 0, differ)
	s, _ := startShadow(t, "shadow-differ", shadowBackend.url, ignoreAt, "flags:\n  shadow-differ: {rules: [{serve: on}]}\n")
	want := 0
	for i := range 1000 {
		path := "/item/" + strconv.Itoa(i)
		if differ(path) {
			want++
		}
		s.request(t, "GET", path, "", "X-User-Id: differ-user")
	}
	sum := shadowResultsOf(t, "shadow-differ", 1000)
	t.Logf("results %v, differences %v (%d paths differ)", sum.Results, sum.Differences, want)
	if got := sum.Results["mismatch"]; got != uint64(want) || want < 40 || want > 60 {
		t.Errorf("%d mismatches, want %d (5 %% ± 1 of 1000 paths)", got, want)
	}
	if sum.Differences["body $.n"] != uint64(want) {
		t.Errorf("differences %v, want every mismatch at body $.n (and $.at, which differs every call, ignored)", sum.Differences)
	}
}

// A shadow that takes 2 s costs the primary nothing: the p99 of the
// shadowed site and of the same site without a shadow, measured in turns
// in one run, stay within the run's noise; copies beyond max_inflight are
// dropped. A shadow that refuses connections counts errors.
func TestShadowSlowOrDownCostsThePrimaryNothing(t *testing.T) {
	slow := newJSONBackend(t, 2*time.Second, nil)
	s, _ := startShadow(t, "shadow-slow", slow.url, ignoreAt+"\n\t\tmax_inflight 4", "flags:\n  shadow-slow: {rules: [{serve: on}]}\n")
	var shadowed, unshadowed []time.Duration
	edge2 := fmt.Sprintf("http://127.0.0.1:%s", edgePort2(t, s))
	for i := range 200 {
		for _, c := range []struct {
			url string
			out *[]time.Duration
		}{{s.url, &shadowed}, {edge2, &unshadowed}} {
			req, _ := http.NewRequest("GET", c.url+"/item/"+strconv.Itoa(i), nil)
			req.Header.Set("X-User-Id", "slow-user")
			start := time.Now()
			resp, err := s.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			*c.out = append(*c.out, time.Since(start))
		}
	}
	p99 := func(d []time.Duration) time.Duration {
		slices.Sort(d)
		return d[len(d)*99/100]
	}
	a, b := p99(shadowed), p99(unshadowed)
	t.Logf("primary p99 with a 2 s shadow %s, without %s", a, b)
	if a > b+50*time.Millisecond && a > 2*b {
		t.Errorf("the shadowed site's p99 %s is beyond the unshadowed one's %s", a, b)
	}
	sum := shadowResultsOf(t, "shadow-slow", 200)
	if sum.Results["dropped"] < 150 {
		t.Errorf("results %v: with 4 copies in flight of 2 s each, most of 200 quick requests must be dropped", sum.Results)
	}

	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	s2, _ := startShadow(t, "shadow-down", deadAddr, ignoreAt, "flags:\n  shadow-down: {rules: [{serve: on}]}\n")
	for i := range 20 {
		if resp, _ := s2.request(t, "GET", "/item/"+strconv.Itoa(i), "", "X-User-Id: down-user"); resp.StatusCode != 200 {
			t.Fatalf("the primary with the shadow down: %d", resp.StatusCode)
		}
	}
	if sum := shadowResultsOf(t, "shadow-down", 20); sum.Results["error"] != 20 {
		t.Errorf("results %v, want 20 errors", sum.Results)
	}
}

// edgePort2 finds the second site's port from the test's Caddyfile: the
// one whose requests are not shadowed.
func edgePort2(t *testing.T, s *site) string {
	t.Helper()
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct{ Listen []string } `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	admin(t, "GET", "/config/", "", &cfg)
	for _, srv := range cfg.Apps.HTTP.Servers {
		for _, l := range srv.Listen {
			if port := l[strings.LastIndex(l, ":")+1:]; !strings.HasSuffix(s.url, ":"+port) {
				return port
			}
		}
	}
	t.Fatal("no second site")
	return ""
}

// Only safe methods, bodies within max_body, and the flag's variant are
// shadowed.
func TestShadowSkips(t *testing.T) {
	shadowBackend := newJSONBackend(t, 0, nil)
	s, primary := startShadow(t, "shadow-skip", shadowBackend.url, ignoreAt+"\n\t\tmethods GET POST\n\t\tmax_body 1KiB", "flags:\n  shadow-skip: {rules: [{when: {header.X-Beta: {in: [\"1\"]}}, serve: on}]}\n")
	s.request(t, "GET", "/not-selected", "", "X-User-Id: u")
	s.request(t, "PUT", "/a-put", "x", "X-User-Id: u", "X-Beta: 1")
	s.request(t, "POST", "/big", strings.Repeat("x", 2048), "X-User-Id: u", "X-Beta: 1")
	s.request(t, "GET", "/socket", "", "X-User-Id: u", "X-Beta: 1", "Connection: Upgrade", "Upgrade: websocket")
	resp, body := s.request(t, "POST", "/small", `{"q": 1}`, "X-User-Id: u", "X-Beta: 1")
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"/small"`) {
		t.Fatalf("primary: %d %s", resp.StatusCode, body)
	}
	sum := shadowResultsOf(t, "shadow-skip", 4)
	t.Logf("results %v", sum.Results)
	if sum.Results["skipped"] != 3 || sum.Results["match"] != 1 {
		t.Errorf("results %v: want the PUT, the 2 KiB POST and the upgrade skipped, the small POST matched, the unselected user not counted", sum.Results)
	}
	if primary.calls.Load() != 5 || shadowBackend.calls.Load() != 1 {
		t.Errorf("the primary got %d requests (want all 5), the shadow %d (want 1)", primary.calls.Load(), shadowBackend.calls.Load())
	}
}

// Calibration: with $.at not ignored, every answer differs there — but so
// do two answers of the primary, so it is noise, not the shadow's
// difference; a real difference is still one.
func TestShadowCalibrationLearnsNoise(t *testing.T) {
	differ := func(path string) bool { return path == "/different" }
	shadowBackend := newJSONBackend(t, 0, differ)
	second := newJSONBackend(t, 0, nil) // a second copy of the primary service
	s, _ := startShadow(t, "shadow-noise", shadowBackend.url, "calibrate 100 "+second.url+"\n\t\tcompare status body",
		"flags:\n  shadow-noise: {rules: [{serve: on}]}\n")
	for i := range 50 {
		s.request(t, "GET", "/same/"+strconv.Itoa(i), "", "X-User-Id: noisy")
	}
	s.request(t, "GET", "/different", "", "X-User-Id: noisy")
	sum := shadowResultsOf(t, "shadow-noise", 51)
	t.Logf("results %v, noise %v, noise matches %d", sum.Results, sum.Noise, sum.NoiseMatches)
	if sum.Noise["body $.at"] == 0 || sum.NoiseMatches < 40 || sum.Results["mismatch"] != 1 || sum.Differences["body $.n"] != 1 {
		t.Errorf("calibration: %+v; want $.at learned as noise, the same paths matching, /different a mismatch at $.n", sum)
	}
}

// BenchmarkShadowPrimaryPath is what a request pays for its shadow on the
// primary path: selected, the copy of the request, the tee of the
// response and the hand-off to a goroutine (the shadow upstream is a
// closed port: the copy fails at once); not selected, the variant check
// alone; baseline, the response without feature_shadow.
func BenchmarkShadowPrimaryPath(b *testing.B) {
	for _, c := range []struct{ name, variant string }{{"selected", "on"}, {"not-selected", "off"}, {"baseline", ""}} {
		b.Run(c.name, func(b *testing.B) {
			app := benchApp(b, "")
			dead, _ := net.Listen("tcp", "127.0.0.1:0")
			addr := dead.Addr().String()
			dead.Close()
			h := &Shadow{Flag: "flag-01", Variant: cmp.Or(c.variant, "on"), To: []string{addr}, MaxInflight: 1 << 20}
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			if err := h.provisionWith(ctx, app); err != nil {
				b.Fatal(err)
			}
			h.logger = zap.NewNop()
			handler := benchHandler(app, "all")
			body := []byte(`{"ok": true}`)
			respond := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Content-Type", "application/json")
				w.Write(body)
				return nil
			})
			shadowed := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return h.ServeHTTP(w, r, respond) })
			if c.variant == "" {
				shadowed = respond // the response alone: what the others add is theirs
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				r, w := newBenchRequest()
				handler.ServeHTTP(w, r, noop) // the request's evaluation, as feature_flags leaves it
				b.StartTimer()
				shadowed.ServeHTTP(w, r)
			}
		})
	}
}
