package caddymodule

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const exposureCaddyfile = globalOptions + `	log exposures {
		output file {DIR}/exposures.log
		include feature_flags.exposure
	}
	log srm {
		output file {DIR}/srm.log
		include feature_flags.exposure
		level WARN
	}
	feature_flags {
		flags_file {FLAGS}
		state_file {DIR}/state.json
		exposures {
			key {env.FF_TEST_EXPOSURE_KEY}
			max_entries MAX_ENTRIES
		}
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags
	respond "{feature.a}"
}
`

// answer is a response's body and the identity cookie it minted.
type answer struct{ body, minted string }

// concurrently sends n requests from 8 goroutines; cookie(i) is request
// i's identity cookie ("" for none).
func concurrently(t *testing.T, s *site, n int, cookie func(i int) string) []answer {
	t.Helper()
	answers := make([]answer, n)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				req, _ := http.NewRequest("GET", s.url+"/", nil)
				if c := cookie(i); c != "" {
					req.Header.Set("Cookie", "ff_uid="+c)
				}
				resp, err := s.client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				answers[i].body = string(b)
				for _, c := range resp.Cookies() {
					if c.Name == "ff_uid" {
						answers[i].minted = c.Value
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return answers
}

// provisionApp provisions app with flags, as a config load would, without
// starting it.
func provisionApp(t *testing.T, flags string, app *App) *App {
	t.Helper()
	dir := t.TempDir()
	app.FlagsFiles = []string{filepath.Join(dir, "flags.yaml")}
	app.StateFile = filepath.Join(dir, "state.json")
	if err := os.WriteFile(app.FlagsFiles[0], []byte(flags), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := app.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Cleanup() })
	return app
}

// 10,000 requests from 100 users and two flags write 200 records: one per
// user and flag. A variant the user has not had yet is a new record.
func TestExposuresOncePerUserFlagAndVariant(t *testing.T) {
	t.Setenv("FF_TEST_EXPOSURE_KEY", "exposure-key-for-tests")
	// Each test has memory of its own: a config reload keeps it.
	s := startCaddy(t, strings.Replace(exposureCaddyfile, "MAX_ENTRIES", "1000001", 1), "flags:\n  a: {rules: [{split: {on: 50, off: 50}}]}\n  b: {rules: [{serve: on}]}\n")
	user := func(i int) string { return fmt.Sprintf("dedupe-user-%03d", i%100) }
	concurrently(t, s, 10_000, user)
	log := filepath.Join(s.dir, "exposures.log")
	records := func(want int) map[string]int {
		t.Helper()
		readLogLines(t, log, want)
		time.Sleep(200 * time.Millisecond) // a record too many would show by now
		lines := readLogLines(t, log, want)
		per := map[string]int{}
		for _, l := range lines {
			per[fmt.Sprint(l["flag"], "=", l["variant"], " ", l["unit"])]++
		}
		if len(lines) != want || len(per) != want {
			t.Fatalf("%d records, %d distinct; want %d, each user, flag and variant once", len(lines), len(per), want)
		}
		return per
	}
	records(200)

	// b changes variant for everyone: each user's next request is one
	// new record, for b only.
	if code := admin(t, "PUT", "/feature-flags/flags/b?actor=test", `{"rules": [{"serve": "off"}]}`, nil); code != 200 {
		t.Fatalf("PUT: %d", code)
	}
	concurrently(t, s, 1_000, user)
	per := records(300)
	offs := 0
	for k := range per {
		if strings.HasPrefix(k, "b=off ") {
			offs++
		}
	}
	if offs != 100 {
		t.Errorf("%d records of b=off, want one per user (100)", offs)
	}

	var o struct {
		Exposures *exposureStatus `json:"exposures"`
		Flags     []flagSummary   `json:"flags"`
	}
	admin(t, "GET", "/feature-flags/", "", &o)
	if o.Exposures == nil || o.Exposures.Entries != 400 || o.Exposures.MaxEntries < 1_000_001 || o.Exposures.Bytes > 32<<20 {
		t.Errorf("exposures in the overview: %+v; want 400 entries (300 records, 100 users who came back) in at most 32 MiB", o.Exposures)
	}
	if len(o.Flags) != 2 || len(o.Flags[0].SampleRatio) != 1 || o.Flags[0].SampleRatio[0].Users["on"]+o.Flags[0].SampleRatio[0].Users["off"] != 100 {
		t.Errorf("flag a's sample ratio: %+v; want its 100 users", o.Flags)
	}
}

// The window's end is a new record: windows are aligned to the epoch, so
// 24 h windows end at midnight UTC.
func TestExposureWindowEnds(t *testing.T) {
	t.Setenv("FF_TEST_EXPOSURE_KEY", "exposure-key-for-tests")
	app := provisionApp(t, "flags:\n  a: {rules: [{serve: on}]}\n", &App{Exposures: &Exposures{Key: "{env.FF_TEST_EXPOSURE_KEY}"}})
	core, logs := observer.New(zap.InfoLevel)
	app.exposures.logger = zap.New(core)
	h := &Handler{app: app, cookieName: app.cookie.name}
	clock := time.Date(2026, 11, 22, 23, 59, 58, 0, time.UTC)
	app.exposures.now = func() time.Time { return clock }
	serve := func() {
		r, w := newBenchRequest()
		if err := h.ServeHTTP(w, r, noop); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		at   time.Duration
		want int
	}{{0, 1}, {time.Second, 1}, {2 * time.Second, 2}, {time.Hour, 2}} {
		clock = time.Date(2026, 11, 22, 23, 59, 58, 0, time.UTC).Add(step.at)
		serve()
		if n := logs.Len(); n != step.want {
			t.Fatalf("at %s: %d records, want %d", clock.Format(time.TimeOnly), n, step.want)
		}
	}
}

// A healthy 50/50 split over 20,000 users reads P > 0.001. When a page of
// the on variant loses the identity cookie for 30 % of its users, they come
// back as new users and are bucketed again: on gets more exposed users
// than its weight, and the check says so — in the admin API, the metric
// and a warning.
func TestSampleRatioMismatch(t *testing.T) {
	t.Setenv("FF_TEST_EXPOSURE_KEY", "exposure-key-for-tests")
	defer func(d time.Duration) { sampleRatioInterval = d }(sampleRatioInterval)
	sampleRatioInterval = 100 * time.Millisecond
	s := startCaddy(t, strings.Replace(exposureCaddyfile, "MAX_ENTRIES", "1000002", 1), "flags:\n  a: {rules: [{split: {on: 50, off: 50}}]}\n")
	check := func() sampleRatio {
		t.Helper()
		var f struct {
			SampleRatio []sampleRatio `json:"sample_ratio"`
		}
		admin(t, "GET", "/feature-flags/flags/a", "", &f)
		if len(f.SampleRatio) != 1 || f.SampleRatio[0].P == nil {
			t.Fatalf("sample ratio: %+v", f.SampleRatio)
		}
		return f.SampleRatio[0]
	}

	concurrently(t, s, 20_000, func(i int) string { return fmt.Sprintf("healthy-%05d", i) })
	healthy := check()
	t.Logf("healthy: users %v, p %.4g", healthy.Users, *healthy.P)
	if healthy.Users["on"]+healthy.Users["off"] != 20_000 || *healthy.P <= sampleRatioAlarm || healthy.Mismatch {
		t.Fatalf("a healthy split: %+v, p %g; want 20,000 users and p > 0.001", healthy.Users, *healthy.P)
	}

	// Next window of users (a new flag salt would do too): the same split,
	// with the cookie lost on the on variant's page.
	if code := admin(t, "PUT", "/feature-flags/flags/a?actor=test", `{"salt": "second-experiment", "rules": [{"split": {"on": 50, "off": 50}}]}`, nil); code != 200 {
		t.Fatalf("PUT: %d", code)
	}
	// 5,000 new visitors: the edge mints their identities. On their next
	// page, 30 % of those who got on have lost the cookie: they come back
	// as strangers, and are bucketed again.
	first := concurrently(t, s, 5_000, func(int) string { return "" })
	rng := rand.New(rand.NewPCG(5, 6))
	cookies := make([]string, len(first))
	for i, a := range first {
		if a.body != "on" || rng.Float64() >= 0.3 {
			cookies[i] = a.minted
		}
	}
	lost := 0
	next := concurrently(t, s, len(first), func(i int) string { return cookies[i] })
	for _, a := range next {
		if a.minted != "" {
			lost++
		}
	}
	broken := check()
	t.Logf("broken: users %v, p %.4g (%d users lost their cookie)", broken.Users, *broken.P, lost)
	if !broken.Mismatch || *broken.P >= sampleRatioAlarm {
		t.Fatalf("a split whose on variant loses cookies: %+v, p %g; want it flagged", broken.Users, *broken.P)
	}
	waitUntil(t, 5*time.Second, "the metric to read the mismatch", func() bool {
		return metricValue(t, "caddy_feature_flags_sample_ratio_p_value", `flag="a",rule="rules[0]"`) < sampleRatioAlarm
	})
	warnings := readLogLines(t, filepath.Join(s.dir, "srm.log"), 1)
	if len(warnings) != 1 || !strings.HasPrefix(warnings[0]["msg"].(string), "sample ratio mismatch") || warnings[0]["flag"] != "a" {
		t.Fatalf("want one warning about flag a, got %v", warnings)
	}
}

func TestExposureOptionsRefused(t *testing.T) {
	for _, c := range []struct {
		x    Exposures
		want string
	}{
		{Exposures{Key: "short"}, "at least 16 characters"},
		{Exposures{Key: "a-long-enough-key-here", Window: caddy.Duration(10 * time.Second)}, "a minute or more"},
		{Exposures{Key: "a-long-enough-key-here", MaxEntries: -1}, "a positive number"},
	} {
		if _, err := newExposureSettings(&c.x, c.x.Key, zap.NewNop()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error saying %q", c.x, err, c.want)
		}
	}
}
