package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/dustin/go-humanize"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/zeebo/xxh3"
	"go.uber.org/zap"

	"github.com/edgeflags/edgeflags/rules"
	"github.com/edgeflags/edgeflags/shadow"
)

func init() {
	caddy.RegisterModule(new(Shadow))
	httpcaddyfile.RegisterHandlerDirective("feature_shadow", parseShadow)
	httpcaddyfile.RegisterDirectiveOrder("feature_shadow", httpcaddyfile.Before, "request_header") // right after feature_flags
}

// Shadow copies the requests of the users a flag's variant selects to a
// shadow upstream — the new service in a dark launch — throws its answers
// away, and compares them with the primary's: the primary request goes on
// untouched, and pays only for a bounded copy. Copies are marked with
// X-Shadow-Request: 1 (the new service must not act on them: keep them to
// side-effect free requests), keep the Host, and are bounded in size, in
// number in flight and in time.
type Shadow struct {
	// Flag and Variant select the users whose requests are shadowed.
	Flag    string `json:"flag"`
	Variant string `json:"variant"`
	// To are the shadow upstreams (host:port), taken in turn.
	To []string `json:"to"`
	// Methods are shadowed; others are skipped. Default: GET, HEAD.
	Methods []string `json:"methods,omitempty"`
	// MaxBody bounds the request body copied and the response bodies
	// compared, in bytes: larger requests are skipped, larger responses
	// compared by hash only. Default: 64 KiB.
	MaxBody int64 `json:"max_body,omitempty"`
	// MaxInflight bounds the copies in flight; beyond it a copy is dropped,
	// never queued. Default: 64.
	MaxInflight int `json:"max_inflight,omitempty"`
	// Timeout bounds a copy. Default: 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// Compare lists what is compared: status, body, and header names.
	// Default: status and body.
	Compare []string `json:"compare,omitempty"`
	// IgnoreJSON are JSON paths whose values are expected to differ
	// ($.timestamp, $.items[*].id).
	IgnoreJSON []string `json:"ignore_json,omitempty"`
	// Calibrate sends, for a share of the shadowed users (by the flag's
	// sticky bucket), a second copy to the primary service: where two
	// answers of the primary differ is noise, not the shadow's difference.
	Calibrate *Calibration `json:"calibrate,omitempty"`
	// Transport configures the shadow connections, as reverse_proxy's
	// http transport does (TLS, timeouts, keep-alive). Default: its
	// defaults.
	Transport *reverseproxy.HTTPTransport `json:"transport,omitempty"`

	app       *App
	logger    *zap.Logger
	opts      shadow.Options
	next      atomic.Uint64 // the upstream to take next
	inflight  chan struct{}
	stats     *shadowStats
	calibrate int // basis points
}

// Calibration is the share of shadowed users whose requests also go to a
// second copy of the primary.
type Calibration struct {
	// Percent of the shadowed users, e.g. 5.
	Percent float64 `json:"percent"`
	// To are the primary service's upstreams.
	To []string `json:"to"`
}

// The defaults of feature_shadow.
const (
	DefaultShadowMaxBody     = 64 << 10
	DefaultShadowMaxInflight = 64
	DefaultShadowTimeout     = 5 * time.Second
)

// CaddyModule returns the Caddy module information.
func (*Shadow) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.feature_shadow",
		New: func() caddy.Module { return new(Shadow) },
	}
}

// secretHeaders are never compared, so their values never reach a log.
var secretHeaders = []string{"Authorization", "Cookie", "Set-Cookie", "Proxy-Authorization"}

// Provision checks the flag and variant, compiles the comparison and
// provisions the transport.
func (h *Shadow) Provision(ctx caddy.Context) error {
	app, err := appFrom(ctx, "feature_shadow")
	if err != nil {
		return err
	}
	return h.provisionWith(ctx, app)
}

func (h *Shadow) provisionWith(ctx caddy.Context, app *App) error {
	h.app, h.logger = app, app.logger.Named("shadow") // feature_flags.shadow, the diff log
	set := app.Flags()
	i, ok := set.Index(h.Flag)
	if !ok {
		return fmt.Errorf("feature_shadow: unknown flag %q: it is not in the flags files", h.Flag)
	}
	if !slices.Contains(set.Flag(i).Variants, h.Variant) {
		return fmt.Errorf("feature_shadow: flag %s has no variant %q: its variants are %s", h.Flag, h.Variant, strings.Join(set.Flag(i).Variants, ", "))
	}
	if len(h.To) == 0 {
		return fmt.Errorf("feature_shadow %s: give the shadow upstream, e.g. to 10.0.0.7:9003", h.Flag)
	}
	if len(h.Methods) == 0 {
		h.Methods = []string{http.MethodGet, http.MethodHead}
	}
	if h.MaxBody <= 0 {
		h.MaxBody = DefaultShadowMaxBody
	}
	if h.MaxInflight <= 0 {
		h.MaxInflight = DefaultShadowMaxInflight
	}
	if h.Timeout <= 0 {
		h.Timeout = caddy.Duration(DefaultShadowTimeout)
	}
	if len(h.Compare) == 0 {
		h.Compare = []string{"status", "body"}
	}
	for _, c := range h.Compare {
		switch {
		case c == "status":
			h.opts.Status = true
		case c == "body":
			h.opts.Body = true
		case slices.ContainsFunc(secretHeaders, func(s string) bool { return strings.EqualFold(s, c) }):
			return fmt.Errorf("feature_shadow %s: compare %s: credentials are never compared (their values would reach the diff log)", h.Flag, c)
		case validHeaderName(c):
			h.opts.Headers = append(h.opts.Headers, http.CanonicalHeaderKey(c))
		default:
			return fmt.Errorf("feature_shadow %s: compare %q: give status, body, or header names", h.Flag, c)
		}
	}
	for _, s := range h.IgnoreJSON {
		p, err := shadow.ParsePath(s)
		if err != nil {
			return fmt.Errorf("feature_shadow %s: ignore: %w", h.Flag, err)
		}
		h.opts.Ignore = append(h.opts.Ignore, p)
	}
	if c := h.Calibrate; c != nil {
		if !(c.Percent > 0 && c.Percent <= 100) || len(c.To) == 0 {
			return fmt.Errorf("feature_shadow %s: calibrate: give a percentage above 0 and the primary's upstream, e.g. calibrate 5 10.0.0.5:9000", h.Flag)
		}
		h.calibrate = int(math.Round(c.Percent * 100))
	}
	if h.Transport == nil {
		h.Transport = new(reverseproxy.HTTPTransport)
	}
	if err := h.Transport.Provision(ctx); err != nil {
		return fmt.Errorf("feature_shadow %s: transport: %w", h.Flag, err)
	}
	h.inflight = make(chan struct{}, h.MaxInflight)
	h.stats = shadowStatsOf(h.Flag)
	return nil
}

// Cleanup closes the shadow connections.
func (h *Shadow) Cleanup() error {
	if h.Transport != nil {
		return h.Transport.Cleanup()
	}
	return nil
}

// ServeHTTP serves the request through the rest of the chain, and, when
// the user has the flag's variant, sends a copy to the shadow afterwards.
func (h *Shadow) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	s := stateOf(r)
	if s == nil {
		return next.ServeHTTP(w, r) // no feature_flags handler before this one: nobody is selected
	}
	s.evaluate()
	i, ok := s.set.Index(h.Flag)
	if !ok || s.ev.Variant(i) != h.Variant {
		return next.ServeHTTP(w, r)
	}
	c, why := h.copyRequest(r)
	if c == nil {
		h.stats.count(resultSkipped)
		h.logger.Debug("not shadowed", zap.String("why", why), zap.String("method", r.Method), zap.String("path", r.URL.Path))
		return next.ServeHTTP(w, r)
	}
	select {
	case h.inflight <- struct{}{}:
	default:
		h.stats.count(resultDropped)
		return next.ServeHTTP(w, r)
	}
	tee := &teeWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, kept: limitWriter{new(bytes.Buffer), h.MaxBody}, hash: xxh3.New()}
	start := time.Now()
	err := next.ServeHTTP(tee, r)
	primary := tee.response()
	took := time.Since(start)
	calibrate := h.calibrate > 0 && rules.Bucket(s.set.Flag(i).Salt, s.ev.Unit()) < h.calibrate
	go h.shadow(c, primary, took, calibrate)
	return err
}

// shadowCopy is a request to send to the shadow: its body is kept apart,
// so that each copy sent (the shadow's, a calibration's) reads it whole.
type shadowCopy struct {
	req  *http.Request
	body []byte
}

// copyRequest returns the copy to send, or nil and why it is not shadowed.
// The primary's body is read (up to MaxBody) and put back whole.
func (h *Shadow) copyRequest(r *http.Request) (*shadowCopy, string) {
	if !slices.Contains(h.Methods, r.Method) {
		return nil, "method " + r.Method + " is not shadowed"
	}
	if r.Header.Get("Upgrade") != "" {
		return nil, "a protocol upgrade (WebSocket) is not shadowed"
	}
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength > h.MaxBody {
			return nil, "the body is larger than max_body"
		}
		buf, err := io.ReadAll(io.LimitReader(r.Body, h.MaxBody+1))
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		if err != nil {
			return nil, "the body could not be read"
		}
		if int64(len(buf)) > h.MaxBody {
			return nil, "the body is larger than max_body"
		}
		body = buf
	}
	c := r.Clone(context.Background())
	c.RequestURI, c.URL.Scheme = "", ""
	c.Header.Set("X-Shadow-Request", "1")
	return &shadowCopy{req: c, body: body}, ""
}

type readCloser struct {
	io.Reader
	io.Closer
}

// shadow sends the copy, compares the answers and records the result.
func (h *Shadow) shadow(c *shadowCopy, primary *shadow.Response, primaryTook time.Duration, calibrate bool) {
	defer func() { <-h.inflight }()
	if calibrate {
		if again, _, err := h.send(c, h.Calibrate.To); err == nil {
			h.stats.noise.Learn(shadow.Compare(primary, again, &h.opts))
		}
	}
	answer, took, err := h.send(c, h.To)
	if err != nil {
		result := resultError
		if errors.Is(err, context.DeadlineExceeded) {
			result = resultTimeout
		}
		h.stats.count(result)
		h.logger.Debug("shadow failed", zap.String("flag", h.Flag), zap.String("path", c.req.URL.Path), zap.Error(err))
		return
	}
	metricShadowDelta.WithLabelValues(h.Flag).Observe((took - primaryTook).Seconds())
	all := shadow.Compare(primary, answer, &h.opts)
	diffs := h.stats.noise.Unexplained(all)
	switch {
	case len(all) == 0:
		h.stats.count(resultMatch)
	case len(diffs) == 0:
		h.stats.count(resultMatch)
		h.stats.noisy.Add(1)
	default:
		h.stats.count(resultMismatch)
		h.stats.differ(diffs[0].Where)
		if h.stats.mayLog() {
			h.logger.Info("shadow differs", zap.String("flag", h.Flag), zap.String("method", c.req.Method), zap.String("path", c.req.URL.Path),
				zap.Int("primary_status", primary.Status), zap.Int("shadow_status", answer.Status),
				zap.String("where", diffs[0].Where), zap.String("primary", diffs[0].Primary), zap.String("shadow", diffs[0].Shadow),
				zap.Any("differences", diffs), zap.String("primary_body", logBody(primary)), zap.String("shadow_body", logBody(answer)))
		}
	}
}

// send sends a copy to one of upstreams and reads its answer, bounded.
func (h *Shadow) send(sc *shadowCopy, upstreams []string) (*shadow.Response, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(h.Timeout))
	defer cancel()
	c := sc.req.Clone(ctx)
	c.Body, c.ContentLength = http.NoBody, 0
	if len(sc.body) > 0 {
		c.Body, c.ContentLength = io.NopCloser(bytes.NewReader(sc.body)), int64(len(sc.body))
	}
	c.URL.Host = upstreams[h.next.Add(1)%uint64(len(upstreams))]
	start := time.Now()
	resp, err := h.Transport.RoundTrip(c)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	hash := xxh3.New()
	buf := &bytes.Buffer{}
	n, err := io.Copy(io.MultiWriter(hash, limitWriter{buf, h.MaxBody}), resp.Body)
	if err != nil {
		return nil, 0, err
	}
	out := &shadow.Response{Status: resp.StatusCode, Header: resp.Header, Body: buf.Bytes(), Hash: hash.Sum64(), Truncated: n > h.MaxBody}
	return out, time.Since(start), nil
}

// limitWriter keeps at most n bytes and takes the rest without keeping it.
type limitWriter struct {
	buf *bytes.Buffer
	n   int64
}

func (w limitWriter) Write(p []byte) (int, error) {
	if room := w.n - int64(w.buf.Len()); room > 0 {
		w.buf.Write(p[:min(int64(len(p)), room)])
	}
	return len(p), nil
}

// logBody is a body as the diff log shows it: its first 256 bytes.
func logBody(r *shadow.Response) string {
	b := r.Body
	if len(b) > 256 {
		return string(b[:256]) + "…"
	}
	return string(b)
}

// teeWriter passes the primary response through and keeps its status,
// headers, first bytes and a hash of the whole.
type teeWriter struct {
	caddyhttp.ResponseWriterWrapper
	status int
	header http.Header
	kept   limitWriter // the first bytes
	size   int64
	hash   *xxh3.Hasher
}

func (t *teeWriter) WriteHeader(code int) {
	if t.status == 0 && code >= 200 {
		t.status, t.header = code, t.Header().Clone()
	}
	t.ResponseWriter.WriteHeader(code)
}

func (t *teeWriter) Write(b []byte) (int, error) {
	if t.status == 0 {
		t.status, t.header = http.StatusOK, t.Header().Clone()
	}
	n, err := t.ResponseWriter.Write(b)
	t.keep(b[:n])
	return n, err
}

// ReadFrom goes through Write, so that the body is kept.
func (t *teeWriter) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(writerOnly{t}, r)
}

type writerOnly struct{ io.Writer }

func (t *teeWriter) keep(b []byte) {
	t.hash.Write(b)
	t.size += int64(len(b))
	t.kept.Write(b)
}

func (t *teeWriter) response() *shadow.Response {
	status := t.status
	if status == 0 {
		status = http.StatusOK
	}
	return &shadow.Response{Status: status, Header: t.header, Body: t.kept.buf.Bytes(), Hash: t.hash.Sum64(), Truncated: t.size > t.kept.n}
}

// The results of a shadowed request, as counted.
const (
	resultMatch    = "match"
	resultMismatch = "mismatch"
	resultError    = "error"
	resultTimeout  = "timeout"
	resultDropped  = "dropped"
	resultSkipped  = "skipped"
)

var shadowResults = []string{resultMatch, resultMismatch, resultError, resultTimeout, resultDropped, resultSkipped}

var (
	metricShadowRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "feature_flags", Name: "shadow_requests_total",
		Help: "Shadowed requests by result: match, mismatch, error, timeout, dropped (max_inflight), skipped (method or body size).",
	}, []string{"flag", "result"})
	metricShadowDelta = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "feature_flags", Name: "shadow_latency_delta_seconds",
		Help:    "The shadow's time to answer minus the primary's, per flag.",
		Buckets: []float64{-1, -0.25, -0.1, -0.05, -0.01, 0, 0.01, 0.05, 0.1, 0.25, 1, 5},
	}, []string{"flag"})
)

// shadowStats are one flag's shadow results; they outlive config reloads.
type shadowStats struct {
	results  [6]atomic.Uint64 // in the order of shadowResults
	noisy    atomic.Uint64    // matches once the primary's own noise is left out
	noise    shadow.Noise
	mu       sync.Mutex
	places   map[string]uint64 // first differing place → mismatches
	lastLog  atomic.Int64      // unix nanoseconds of the last diff logged
	promByID [6]prometheus.Counter
}

var (
	shadowStatsMu sync.Mutex
	shadowStatsBy = map[string]*shadowStats{}
)

func shadowStatsOf(flag string) *shadowStats {
	shadowStatsMu.Lock()
	defer shadowStatsMu.Unlock()
	s := shadowStatsBy[flag]
	if s == nil {
		s = &shadowStats{places: map[string]uint64{}}
		for i, r := range shadowResults {
			s.promByID[i] = metricShadowRequests.WithLabelValues(flag, r)
		}
		shadowStatsBy[flag] = s
	}
	return s
}

func (s *shadowStats) count(result string) {
	i := slices.Index(shadowResults, result)
	s.results[i].Add(1)
	s.promByID[i].Inc()
}

// maxDifferPlaces bounds the places a flag's summary keeps.
const maxDifferPlaces = 256

func (s *shadowStats) differ(where string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, known := s.places[where]; known || len(s.places) < maxDifferPlaces {
		s.places[where]++
	}
}

// mayLog lets one diff a second reach the log.
func (s *shadowStats) mayLog() bool {
	now := time.Now().UnixNano()
	last := s.lastLog.Load()
	return now-last >= int64(time.Second) && s.lastLog.CompareAndSwap(last, now)
}

// shadowSummary is a flag's shadow as the admin API shows it.
type shadowSummary struct {
	Results map[string]uint64 `json:"results"`
	// Differences are the first differing places of the mismatches, with
	// how many each; Noise the places two answers of the primary itself
	// differed at (calibration), and NoiseMatches the answers that matched
	// once those were left out.
	Differences  map[string]uint64 `json:"differences,omitempty"`
	Noise        map[string]uint64 `json:"noise,omitempty"`
	NoiseMatches uint64            `json:"noise_matches,omitempty"`
}

// shadowSummaries returns every shadowed flag's summary.
func shadowSummaries() map[string]shadowSummary {
	shadowStatsMu.Lock()
	defer shadowStatsMu.Unlock()
	if len(shadowStatsBy) == 0 {
		return nil
	}
	out := map[string]shadowSummary{}
	for flag, s := range shadowStatsBy {
		sum := shadowSummary{Results: map[string]uint64{}, Noise: s.noise.Places(), NoiseMatches: s.noisy.Load()}
		for i, r := range shadowResults {
			sum.Results[r] = s.results[i].Load()
		}
		s.mu.Lock()
		sum.Differences = maps.Clone(s.places)
		s.mu.Unlock()
		out[flag] = sum
	}
	return out
}

// parseShadow reads the feature_shadow directive:
//
//	feature_shadow <flag> <variant> {
//		to           <host:port>...        # the shadow upstream(s)
//		methods      GET HEAD              # default: GET HEAD
//		max_body     64KiB                 # larger requests are skipped; larger answers compared by hash
//		max_inflight 64                    # beyond it a copy is dropped, never queued
//		timeout      5s
//		compare      status body Content-Type   # status, body and header names; default: status body
//		ignore       json $.timestamp $.items[*].id
//		calibrate    <percent> <primary host:port>...   # old-vs-old copies: the primary's own noise
//		transport    http { … }            # as reverse_proxy's
//	}
func parseShadow(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	s := new(Shadow)
	h.Next()
	if !h.Args(&s.Flag, &s.Variant) {
		return nil, h.Errf("feature_shadow: give the flag and the variant whose users are shadowed, e.g. feature_shadow new-search on")
	}
	for h.NextBlock(0) {
		opt := h.Val()
		if opt == "transport" {
			if !h.NextArg() || h.Val() != "http" {
				return nil, h.Errf("feature_shadow transport: only http, configured as reverse_proxy's")
			}
			s.Transport = new(reverseproxy.HTTPTransport)
			if err := s.Transport.UnmarshalCaddyfile(h.NewFromNextSegment()); err != nil {
				return nil, err
			}
			continue
		}
		args := h.RemainingArgs()
		switch opt {
		case "to":
			s.To = append(s.To, args...)
		case "methods":
			s.Methods = append(s.Methods, args...)
		case "max_body":
			if len(args) != 1 {
				return nil, h.ArgErr()
			}
			n, err := humanize.ParseBytes(args[0])
			if err != nil {
				return nil, h.Errf("feature_shadow max_body %q: give a size such as 64KiB", args[0])
			}
			s.MaxBody = int64(n)
		case "max_inflight":
			n, err := strconv.Atoi(strings.Join(args, ""))
			if err != nil || len(args) != 1 || n < 1 {
				return nil, h.Errf("feature_shadow max_inflight: give a whole number of at least 1")
			}
			s.MaxInflight = n
		case "timeout":
			if len(args) != 1 {
				return nil, h.ArgErr()
			}
			d, err := caddy.ParseDuration(args[0])
			if err != nil {
				return nil, h.Errf("feature_shadow timeout %q: %v", args[0], err)
			}
			s.Timeout = caddy.Duration(d)
		case "compare":
			s.Compare = append(s.Compare, args...)
		case "ignore":
			if len(args) < 2 || args[0] != "json" {
				return nil, h.Errf("feature_shadow ignore: write ignore json <path>..., e.g. ignore json $.timestamp")
			}
			s.IgnoreJSON = append(s.IgnoreJSON, args[1:]...)
		case "calibrate":
			if len(args) < 2 {
				return nil, h.Errf("feature_shadow calibrate: give a percentage and the primary's upstream, e.g. calibrate 5 10.0.0.5:9000")
			}
			p, err := strconv.ParseFloat(strings.TrimSuffix(args[0], "%"), 64)
			if err != nil {
				return nil, h.Errf("feature_shadow calibrate %q: give a percentage, e.g. 5", args[0])
			}
			s.Calibrate = &Calibration{Percent: p, To: args[1:]}
		default:
			return nil, h.Errf("feature_shadow: unknown option %q: options are to, methods, max_body, max_inflight, timeout, compare, ignore, calibrate, transport", opt)
		}
	}
	return s, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Shadow)(nil)
	_ caddy.CleanerUpper          = (*Shadow)(nil)
	_ caddyhttp.MiddlewareHandler = (*Shadow)(nil)
)
