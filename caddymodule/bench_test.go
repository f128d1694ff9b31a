package caddymodule

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/edgeflags/edgeflags/geoip/geoiptest"
)

// benchApp provisions an app with 20 flags and a 10,000-network GeoIP
// database, as a config load would; observe makes flag-00 an observed one.
func benchApp(b *testing.B, flag00 string) *App {
	dir := b.TempDir()
	flags := "../testdata/flags/bench-20.yaml"
	if flag00 != "" {
		data, err := os.ReadFile(flags)
		if err != nil {
			b.Fatal(err)
		}
		flags = filepath.Join(dir, "flags.yaml")
		data = bytes.Replace(data, []byte("  flag-00:\n    rules: [{split: {on: 25, off: 75}}]\n"), []byte("  flag-00:\n    "+flag00+"\n"), 1)
		if err := os.WriteFile(flags, data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	geo := filepath.Join(dir, "geo.mmdb")
	nets := append(geoiptest.Realistic(10_000, 5), geoiptest.Network{CIDR: "198.51.100.0/24", Country: "DE", Continent: "EU", EU: true})
	if err := geoiptest.Write(geo, geoiptest.MaxMind, nets); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	b.Cleanup(cancel)
	app := &App{FlagsFiles: []string{flags}, GeoIP: geo, Identity: []string{"{http.auth.user.id}", "cookie"}, StateFile: filepath.Join(dir, "state.json")}
	if err := app.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { app.Cleanup() })
	app.logger, app.audit, app.loader.logger = zap.NewNop(), zap.NewNop(), zap.NewNop() // keep benchmark output readable
	app.checkRollouts(time.Now())                                                       // starts a rollout, as the running app's watcher would
	return app
}

func benchHandler(app *App, headers string) *Handler {
	h := &Handler{Headers: headers, app: app}
	h.cookieName, h.prefix, h.prefixFold = app.cookie.name, app.HeaderPrefix, foldHeader(app.HeaderPrefix)
	return h
}

// serveBatches times h on b.N requests, built in batches with the timer
// stopped so that only the handler is measured; cookie, unless nil, gives
// request i's identity. It returns with the timer stopped.
func serveBatches(b *testing.B, h *Handler, cookie func(i int) string) {
	const batch = 64
	reqs := make([]*http.Request, batch)
	ws := make([]http.ResponseWriter, batch)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%batch == 0 {
			b.StopTimer()
			for j := range reqs {
				reqs[j], ws[j] = newBenchRequest()
				if cookie != nil {
					reqs[j].Header.Set("Cookie", "ff_uid="+cookie(i+j))
				}
			}
			b.StartTimer()
		}
		if err := h.ServeHTTP(ws[i%batch], reqs[i%batch], noop); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
}

// newBenchRequest is a request as Caddy's server hands it to handlers: a
// replacer, the vars with the client IP, a browser's headers and the cookie.
func newBenchRequest() (*http.Request, http.ResponseWriter) {
	r := httptest.NewRequest("GET", "http://shop.example.com/api/v2/cart?ref=mail", nil)
	r.RemoteAddr = "198.51.100.7:52113"
	r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36")
	r.Header.Set("Accept", "text/html,application/xhtml+xml")
	r.Header.Set("Accept-Language", "de-DE,de;q=0.9")
	r.Header.Set("Cookie", "session=abc123; ff_uid=Zx3kP0q9bW1mT8rY2vN4cA; _ga=GA1.2.3")
	r.Header.Set("X-Plan", "pro")
	w := httptest.NewRecorder()
	repl := caddy.NewReplacer()
	r = caddyhttp.PrepareRequest(r, repl, w, nil)
	caddyhttp.SetVar(r.Context(), caddyhttp.ClientIPVarKey, "198.51.100.7")
	return r, w
}

var noop = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

// BenchmarkHandler is the whole handler on one request: strip spoofs, read
// the cookie, look up GeoIP, evaluate 20 flags, set 20 headers and
// X-Features. Target: ≤ 3 µs and ≤ 6 allocations. observed is the same
// with flag-00 observed (the response watched, its outcome counted);
// guarded with flag-00's 25 % split a running rollout's step instead
// (counted by arm as well).
func BenchmarkHandler(b *testing.B) {
	b.Run("headers=all", func(b *testing.B) { benchmarkHandler(b, "all", "") })
	b.Run("headers=dictionary", func(b *testing.B) { benchmarkHandler(b, "dictionary", "") })
	b.Run("observed", func(b *testing.B) {
		benchmarkHandler(b, "all", "observe: true\n    rules: [{split: {on: 25, off: 75}}]")
	})
	b.Run("guarded", func(b *testing.B) {
		benchmarkHandler(b, "all", "rollout: {variant: on, steps: [25, 100], step_duration: 24h}")
	})
}

func benchmarkHandler(b *testing.B, headers, flag00 string) {
	app := benchApp(b, flag00)
	h := benchHandler(app, headers)
	serveBatches(b, h, nil)
	r, w := newBenchRequest()
	h.ServeHTTP(w, r, noop)
	if r.Header.Get("X-Features") == "" || (headers == "all") != (r.Header.Get("X-Feature-Flag-01") == "on") || w.Header().Get("Set-Cookie") != "" {
		b.Fatalf("unexpected result: %v / %v", r.Header, w.Header())
	}
}

// BenchmarkHandlerExposures is the handler with exposure records on and
// deduplicated, over a million distinct users (the records go to a JSON
// encoder that discards them). returning: 100,000 users, seen before, so
// requests write nothing; new: every request a user not seen in the window,
// so each writes 20 records. MiB-held is the exposure memory after all the
// users: at most 32 MiB (the default bound) whatever their number.
func BenchmarkHandlerExposures(b *testing.B) {
	for _, users := range []struct {
		name string
		n    int
	}{{"returning", 100_000}, {"new", 1_000_000}} {
		b.Run(users.name, func(b *testing.B) {
			app := benchApp(b, "")
			x, err := newExposureSettings(&Exposures{}, "a-benchmark-exposure-key", zap.New(zapcore.NewCore(
				zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.InfoLevel)))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(x.release)
			app.exposures = x
			h := benchHandler(app, "all")
			ids := make([]string, users.n)
			for i := range ids {
				ids[i] = fmt.Sprintf("bench-user-%07d-xxxxxx", i)
			}
			serve := func(i int, r *http.Request, w http.ResponseWriter) {
				r.Header.Set("Cookie", "ff_uid="+ids[i%len(ids)])
				if err := h.ServeHTTP(w, r, noop); err != nil {
					b.Fatal(err)
				}
			}
			if users.name == "returning" {
				for i := range ids {
					r, w := newBenchRequest()
					serve(i, r, w)
				}
			}
			serveBatches(b, h, func(i int) string { return ids[i%len(ids)] })
			for i := range ids {
				r, w := newBenchRequest()
				serve(i, r, w)
			}
			b.ReportMetric(float64(x.mem.seen.Allocated())/(1<<20), "MiB-held")
			b.ReportMetric(float64(x.mem.seen.Len(x.mem.seen.Epoch(time.Now()))), "entries")
		})
	}
}

func TestBenchRequestIsRealistic(t *testing.T) {
	r, _ := newBenchRequest()
	if cookieValue(r.Header, "ff_uid") != "Zx3kP0q9bW1mT8rY2vN4cA" {
		t.Fatal("the benchmark request has no identity cookie")
	}
}
