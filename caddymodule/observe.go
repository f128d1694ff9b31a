package caddymodule

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeflags/edgeflags/rollout"
	"github.com/edgeflags/edgeflags/rules"
	"github.com/edgeflags/edgeflags/stats"
)

// Observing variants: for a flag with observe: true, the handler counts
// per variant the requests that got it, the failures among them and their
// time to first byte — what a canary's health is judged on, by the variant
// each user really got. Crawlers and requests without an identity are not
// counted: they are not the canary's users.

var (
	metricVariantRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "feature_flags", Name: "variant_requests_total",
		Help: "Requests of identified users per variant of an observed flag.",
	}, []string{"flag", "variant"})
	metricVariantFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "feature_flags", Name: "variant_failures_total",
		Help: "Failed requests (failure_statuses; 5xx by default, an unreachable upstream as 502) per variant of an observed flag.",
	}, []string{"flag", "variant"})
	metricVariantTTFB = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "feature_flags", Name: "variant_ttfb_seconds",
		Help: "Time to the response's first byte per variant of an observed flag.",
		// Classic buckets only: a native histogram's sparse buckets cost
		// about 40 ns more per observation (a sync.Map lookup), which
		// would put a guarded flag past its 100 ns budget; the admin
		// API's percentiles come from a 1.6 % log-linear histogram.
		Buckets: prometheus.ExponentialBucketsRange(0.001, 60, 24),
	}, []string{"flag", "variant"})
)

// variantCell is one variant's counts. Cells outlive config reloads.
type variantCell struct {
	requests, failures         atomic.Uint64
	ttfb                       stats.Histogram
	promRequests, promFailures prometheus.Counter
	promTTFB                   prometheus.Observer
}

var (
	variantCellsMu sync.Mutex
	variantCells   = map[string]*variantCell{} // by flag + "\x00" + variant
)

func cellOf(flag, variant string) *variantCell {
	variantCellsMu.Lock()
	defer variantCellsMu.Unlock()
	key := flag + "\x00" + variant
	c := variantCells[key]
	if c == nil {
		c = &variantCell{promRequests: metricVariantRequests.WithLabelValues(flag, variant),
			promFailures: metricVariantFailures.WithLabelValues(flag, variant), promTTFB: metricVariantTTFB.WithLabelValues(flag, variant)}
		variantCells[key] = c
	}
	return c
}

// forgetObserved drops the counts and series of flags no longer observed.
func forgetObserved(set *rules.Set) {
	variantCellsMu.Lock()
	defer variantCellsMu.Unlock()
	for key := range variantCells {
		flag, variant, _ := strings.Cut(key, "\x00")
		if i, ok := set.Index(flag); ok && set.Flag(i).Observe && slices.Contains(set.Flag(i).Variants, variant) {
			continue
		}
		delete(variantCells, key)
		metricVariantRequests.DeleteLabelValues(flag, variant)
		metricVariantFailures.DeleteLabelValues(flag, variant)
		metricVariantTTFB.DeleteLabelValues(flag, variant)
	}
}

// observedFlags are the observed flags of one set, with their cells by
// variant index, and for a flag with a rollout, its step's arms.
type observedFlags struct {
	set      *rules.Set
	flags    []int
	cells    [][]*variantCell
	rollouts []observedRollout
}

// observedRollout is where a rollout's requests are counted: those its
// split decided (rule), by arm.
type observedRollout struct {
	arms      *stepArms // nil: no rollout, or not started yet
	rule      int
	candidate int
}

// observedFor returns set's observed flags, or nil when it has none.
func (a *App) observedFor(set *rules.Set) *observedFlags {
	if o := a.observed.Load(); o != nil && o.set == set {
		return o
	}
	o := &observedFlags{set: set}
	var entries map[string]runtimeEntry
	for i := range set.Len() {
		f := set.Flag(i)
		if !f.Observe {
			continue
		}
		var ro observedRollout
		if f.Rollout != nil {
			if entries == nil {
				entries = a.loader.layer.snapshot()
			}
			if st := entries[f.Key].Rollout; st != nil && st.Plan == rollout.Fingerprint(f.Rollout) {
				ro = observedRollout{arms: armsFor(f.Key, st), rule: len(f.Rules), candidate: slices.Index(f.Variants, f.Rollout.Variant)}
			}
		}
		o.rollouts = append(o.rollouts, ro)
		cells := make([]*variantCell, len(f.Variants))
		for v, name := range f.Variants {
			cells[v] = cellOf(f.Key, name)
		}
		o.flags, o.cells = append(o.flags, i), append(o.cells, cells)
	}
	a.observed.Store(o)
	return o
}

// record counts one answered request of every observed flag.
func (o *observedFlags) record(ev *rules.Evaluation, failed bool, ttfb time.Duration) {
	for k, i := range o.flags {
		v, _ := ev.Answer(i)
		c := o.cells[k][v]
		c.requests.Add(1)
		c.promRequests.Inc()
		if failed {
			c.failures.Add(1)
			c.promFailures.Inc()
		}
		c.ttfb.Record(ttfb)
		c.promTTFB.Observe(ttfb.Seconds())
		if ro := &o.rollouts[k]; ro.arms != nil && ev.Result(i).Rule == ro.rule {
			arm := 1
			if v == ro.candidate {
				arm = 0
			}
			ro.arms.arm[arm].record(failed, ttfb)
		}
	}
}

// statusSet is a set of HTTP status codes.
type statusSet [10]uint64 // bits 0 … 639

func (s *statusSet) has(code int) bool {
	return code >= 0 && code < 640 && s[code/64]&(1<<(code%64)) != 0
}

func (s *statusSet) add(lo, hi int) {
	for c := lo; c <= hi; c++ {
		s[c/64] |= 1 << (c % 64)
	}
}

// parseStatuses reads failure_statuses: codes (502) and classes (5xx).
func parseStatuses(list []string) (statusSet, error) {
	var s statusSet
	if len(list) == 0 {
		list = []string{"5xx"}
	}
	for _, v := range list {
		if len(v) == 3 && v[0] >= '1' && v[0] <= '5' && strings.EqualFold(v[1:], "xx") {
			lo := int(v[0]-'0') * 100
			s.add(lo, lo+99)
			continue
		}
		code, err := strconv.Atoi(v)
		if err != nil || code < 100 || code > 599 {
			return s, fmt.Errorf("feature_flags: failure_statuses %q: give status codes (502) or classes (5xx)", v)
		}
		s.add(code, code)
	}
	return s, nil
}

// responseWatch notes a response's status and when its first byte was
// written. It lives in the request's state, so watching allocates nothing.
type responseWatch struct {
	caddyhttp.ResponseWriterWrapper
	status int
	first  time.Time
}

func (w *responseWatch) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status, w.first = code, time.Now()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWatch) Write(b []byte) (int, error) {
	w.wrote()
	return w.ResponseWriter.Write(b)
}

func (w *responseWatch) ReadFrom(r io.Reader) (int64, error) {
	w.wrote()
	return w.ResponseWriterWrapper.ReadFrom(r)
}

func (w *responseWatch) wrote() {
	if w.status == 0 {
		w.status, w.first = http.StatusOK, time.Now()
	}
}

// serveObserved runs the rest of the chain watching the response, and
// counts it for the observed flags.
func (a *App) serveObserved(o *observedFlags, s *requestState, w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	start := time.Now()
	s.watch = responseWatch{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
	err := next.ServeHTTP(&s.watch, r)
	status, first := s.watch.status, s.watch.first
	if status == 0 { // nothing written: an error Caddy will answer, or an empty 200
		status, first = http.StatusOK, time.Now()
		if err != nil {
			status = http.StatusInternalServerError
			var he caddyhttp.HandlerError
			if errors.As(err, &he) && he.StatusCode != 0 {
				status = he.StatusCode
			}
		}
	}
	o.record(&s.ev, a.failures.has(status), first.Sub(start))
	return err
}

// variantReport is one variant's traffic, as the admin API shows it:
// counted since the flag was first observed (or the variant added).
type variantReport struct {
	Requests    uint64  `json:"requests"`
	Failures    uint64  `json:"failures"`
	FailureRate float64 `json:"failure_rate"`
	// TTFB percentiles in milliseconds, within 2 %.
	TTFBp50 float64 `json:"ttfb_p50_ms"`
	TTFBp90 float64 `json:"ttfb_p90_ms"`
	TTFBp99 float64 `json:"ttfb_p99_ms"`
}

// observedReport returns flag i's variants' traffic, or nil when it is not
// observed.
func (a *App) observedReport(set *rules.Set, i int) map[string]variantReport {
	o := a.observedFor(set)
	for k, flag := range o.flags {
		if flag != i {
			continue
		}
		out := map[string]variantReport{}
		for v, c := range o.cells[k] {
			r := variantReport{Requests: c.requests.Load(), Failures: c.failures.Load()}
			if r.Requests > 0 {
				r.FailureRate = float64(r.Failures) / float64(r.Requests)
			}
			snap := c.ttfb.Snapshot()
			ms := func(q float64) float64 { return float64(snap.Quantile(q).Microseconds()) / 1000 }
			r.TTFBp50, r.TTFBp90, r.TTFBp99 = ms(0.5), ms(0.9), ms(0.99)
			out[set.Flag(i).Variants[v]] = r
		}
		return out
	}
	return nil
}
