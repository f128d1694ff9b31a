package caddymodule

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeflags/edgeflags/rules"
)

// An observed canary through a real Caddy: on goes to an upstream that
// cannot be reached (Caddy answers 502), off to a backend that takes
// 30 ms. Each variant's requests, failures and time to first byte are
// counted — for identified users only.
func TestObservedVariants(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(30 * time.Millisecond)
		w.Write([]byte("old"))
	}))
	defer slow.Close()
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	s := startCaddy(t, strings.NewReplacer("SLOW", strings.TrimPrefix(slow.URL, "http://"), "DEAD", deadAddr).Replace(globalOptions+`	feature_flags {
		flags_file {FLAGS}
		state_file {DIR}/state.json
		identity {http.request.header.X-User-Id}
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags
	@on feature canary on
	reverse_proxy @on DEAD
	reverse_proxy SLOW
}
`), "flags:\n  canary: {observe: true, rules: [{split: {on: 30, off: 70}}]}\n  other: {rules: [{serve: on}]}\n")
	want := map[string]uint64{}
	for i := range 100 {
		user := "observed-user-" + strconv.Itoa(i)
		resp, _ := s.request(t, "GET", "/", "", "X-User-Id: "+user)
		v := "off"
		if rules.Bucket("canary", user) < 3000 {
			v = "on"
		}
		want[v]++
		if (v == "on") != (resp.StatusCode == http.StatusBadGateway) {
			t.Fatalf("%s got %s: status %d", user, v, resp.StatusCode)
		}
	}
	// Not the canary's users: a crawler, and requests without an identity.
	for range 10 {
		s.request(t, "GET", "/", "", "X-User-Id: a-crawler", "User-Agent: "+googlebot)
		s.request(t, "GET", "/", "")
	}

	var f struct {
		Observed map[string]variantReport `json:"observed"`
	}
	admin(t, "GET", "/feature-flags/flags/canary", "", &f)
	on, off := f.Observed["on"], f.Observed["off"]
	t.Logf("on %+v, off %+v", on, off)
	if on.Requests != want["on"] || off.Requests != want["off"] {
		t.Errorf("requests on %d off %d, want %d and %d", on.Requests, off.Requests, want["on"], want["off"])
	}
	if on.Failures != on.Requests || on.FailureRate != 1 || off.Failures != 0 {
		t.Errorf("failures: on %d of %d, off %d; want every on request (502) and no off one", on.Failures, on.Requests, off.Failures)
	}
	if off.TTFBp50 < 30 || off.TTFBp50 > 60 || on.TTFBp50 > 30 {
		t.Errorf("time to first byte: off p50 %v ms (the backend takes 30), on p50 %v ms", off.TTFBp50, on.TTFBp50)
	}
	for _, c := range []struct {
		metric, variant string
		want            uint64
	}{{"caddy_feature_flags_variant_requests_total", "on", want["on"]}, {"caddy_feature_flags_variant_requests_total", "off", want["off"]},
		{"caddy_feature_flags_variant_failures_total", "on", want["on"]}, {"caddy_feature_flags_variant_ttfb_seconds_count", "off", want["off"]}} {
		if got := metricValue(t, c.metric, `flag="canary",variant="`+c.variant+`"`); got != float64(c.want) {
			t.Errorf("%s{variant=%q} = %v, want %d", c.metric, c.variant, got, c.want)
		}
	}
	var o struct{ Flags []flagSummary }
	admin(t, "GET", "/feature-flags/", "", &o)
	if len(o.Flags) != 2 || o.Flags[0].Observed == nil || o.Flags[1].Observed != nil {
		t.Errorf("the overview must show the observed flag's variants, and only its: %+v", o.Flags)
	}
}

func TestFailureStatuses(t *testing.T) {
	set, err := parseStatuses([]string{"5xx", "429"})
	if err != nil || !set.has(500) || !set.has(599) || !set.has(429) || set.has(404) || set.has(200) {
		t.Errorf("5xx 429: %v", err)
	}
	if def, _ := parseStatuses(nil); !def.has(502) || def.has(429) {
		t.Error("the default is 5xx")
	}
	for _, bad := range []string{"6xx", "99", "abc", "600"} {
		if _, err := parseStatuses([]string{bad}); err == nil || !strings.Contains(err.Error(), "give status codes") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// BenchmarkObserveRecord is recording one observed flag's outcome: the
// per-request cost of a guarded canary. Target: ≤ 100 ns, 0 allocations.
func BenchmarkObserveRecord(b *testing.B) {
	set, err := rules.Load(rules.Source{Name: "b.yaml", Data: []byte("flags:\n  canary: {observe: true, rules: [{split: {on: 5, off: 95}}]}\n")})
	if err != nil {
		b.Fatal(err)
	}
	app := &App{}
	o := app.observedFor(set)
	ev := set.NewEvaluation()
	ev.Reset(set, benchUnit("bench-user"))
	ev.All()
	b.ReportAllocs()
	ttfb := 42 * time.Millisecond
	for b.Loop() {
		o.record(ev, false, ttfb)
	}
}

// benchUnit is a request with an identity and nothing else.
type benchUnit string

func (u benchUnit) Unit() string                  { return string(u) }
func (benchUnit) Value(rules.Kind, string) string { return "" }
func (benchUnit) IP() netip.Addr                  { return netip.Addr{} }
func (benchUnit) Now() time.Time                  { return time.Time{} }
func (benchUnit) Bot() bool                       { return false }
func (benchUnit) Override(string) (string, bool)  { return "", false }

// Two feature_flags handlers on one request (the site's and a nested
// route's) count the request once, and the response reaches the client.
func TestObservedOnceWithNestedHandlers(t *testing.T) {
	s := startCaddy(t, globalOptions+`	feature_flags {
		flags_file {FLAGS}
		state_file {DIR}/state.json
		identity {http.request.header.X-User-Id}
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags
	route {
		feature_flags
		reverse_proxy {OLD}
	}
}
`, "flags:\n  nested: {observe: true, rules: [{serve: on}]}\n")
	for range 5 {
		if resp, body := s.request(t, "GET", "/", "", "X-User-Id: nested-user"); resp.StatusCode != 200 || !strings.Contains(string(body), `"old"`) {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	}
	var f struct {
		Observed map[string]variantReport `json:"observed"`
	}
	admin(t, "GET", "/feature-flags/flags/nested", "", &f)
	if f.Observed["on"].Requests != 5 {
		t.Errorf("observed %+v, want 5 requests of on", f.Observed)
	}
}
