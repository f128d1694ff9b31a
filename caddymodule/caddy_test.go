package caddymodule

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// The integration tests run a real Caddy in this test process (caddytest)
// on free loopback ports; every test that binds ports lives in this package.

var adminPort = sync.OnceValue(func() int { return freePort() })

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// echo is what a test backend answers: which backend, and every request
// header it received.
type echo struct {
	Backend string      `json:"backend"`
	Headers http.Header `json:"headers"`
}

// backend starts a Go HTTP server that answers with an echo.
func backend(t *testing.T, name string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(echo{Backend: name, Headers: r.Header})
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// site is a running Caddy config with an edge at url.
type site struct {
	url    string
	dir    string // {DIR}
	tester *caddytest.Tester
	client *http.Client
}

// startCaddy loads a Caddyfile after replacing {ADMIN}, {EDGE}, {EDGE2},
// {NEW}, {OLD} (test backends), {FLAGS} (a file written from flags), {GEOIP}
// (the demo database) and {DIR} (a temporary directory) in it.
func startCaddy(t *testing.T, caddyfile, flags string) *site {
	t.Helper()
	dir := t.TempDir()
	flagsPath := filepath.Join(dir, "flags.yaml")
	if err := os.WriteFile(flagsPath, []byte(flags), 0o644); err != nil {
		t.Fatal(err)
	}
	edge := freePort()
	r := strings.NewReplacer(
		"{ADMIN}", strconv.Itoa(adminPort()),
		"{EDGE}", strconv.Itoa(edge),
		"{EDGE2}", strconv.Itoa(freePort()),
		"{NEW}", backend(t, "new"),
		"{OLD}", backend(t, "old"),
		"{FLAGS}", flagsPath,
		"{GEOIP}", demoGeoIP,
		"{DIR}", dir,
	)
	tester := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{
		AdminPort: adminPort(),
		// Generous: CI runs these under -race on two cores.
		LoadRequestTimeout: 30 * time.Second, TestRequestTimeout: 30 * time.Second,
	})
	tester.InitServer(r.Replace(caddyfile), "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	return &site{url: "http://127.0.0.1:" + strconv.Itoa(edge), dir: dir, tester: tester, client: &http.Client{Timeout: 10 * time.Second}}
}

// get sends a GET with the given headers ("Name: value") and decodes the echo.
func (s *site) get(t *testing.T, path string, headers ...string) (*http.Response, echo) {
	t.Helper()
	req, _ := http.NewRequest("GET", s.url+path, nil)
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header[k] = append(req.Header[k], v) // as written: no canonicalization
	}
	return s.do(t, req)
}

func (s *site) do(t *testing.T, req *http.Request) (*http.Response, echo) {
	t.Helper()
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e echo
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatalf("%s: status %d, not an echo: %v", req.URL, resp.StatusCode, err)
	}
	return resp, e
}

// globalOptions is the head of every test Caddyfile: loopback is the
// trusted load balancer, and {GEOIP} the demo database.
const globalOptions = `{
	admin localhost:{ADMIN}
	skip_install_trust
	servers {
		trusted_proxies static 127.0.0.1/32
		client_ip_headers X-Forwarded-For
	}
`

// dialFrom returns a client whose connections come from a loopback address
// other than 127.0.0.1: a peer outside trusted_proxies.
func dialFrom(addr string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(addr)}}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) { return d.DialContext(ctx, network, a) },
	}}
}
