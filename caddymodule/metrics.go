package caddymodule

import (
	"errors"
	"slices"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeflags/edgeflags/rules"
)

// The collectors live at package level so their counts survive config
// reloads; Caddy gives each config load a fresh registry, so they are
// registered with it on every load.
var (
	metricEvaluations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "feature_flags", Name: "evaluations_total",
		Help: "Flag evaluations by flag, variant and reason.",
	}, []string{"flag", "variant", "reason"})
	metricReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "feature_flags", Name: "reloads_total",
		Help: "Attempts to load changed flag sources, by result (ok or error).",
	}, []string{"result"})
	metricVersion = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "feature_flags", Name: "flag_set_info",
		Help: "The flag set serving: 1 for its version, with the number of flags.",
	}, []string{"version"})
	metricFlags = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "feature_flags", Name: "flags",
		Help: "The number of flags serving.",
	})
	metricGeoIPLookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "feature_flags", Name: "geoip_lookups_total",
		Help: "GeoIP lookups, by whether the country was known.",
	}, []string{"result"})
	metricAdminChanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "feature_flags", Name: "admin_changes_total",
		Help: "Changes through the admin API, by action and result.",
	}, []string{"action", "result"})
	metricRuntimeSetAside = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "feature_flags", Name: "runtime_set_aside",
		Help: "Runtime layer entries set aside because they no longer fit the flags.",
	})
	metricSampleRatio = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "feature_flags", Name: "sample_ratio_p_value",
		Help: "P-value of the sample ratio mismatch test of a split (users first exposed per variant in the window against the weights); below 0.001 the split is broken.",
	}, []string{"flag", "rule"})
	metricStoreUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "feature_flags", Name: "state_store_up",
		Help: "1 when the fleet's store (state_storage) answered the last poll, 0 when it did not: the last layer read serves on.",
	})
	metricExposureResets = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "feature_flags", Name: "exposure_resets_total",
		Help: "Times a part of the exposure memory was full and started over (its users are recorded again): raise max_entries.",
	})
)

// The GeoIP counters, resolved once: a lookup counts without a label lookup.
var (
	metricGeoIPKnown   = metricGeoIPLookups.WithLabelValues("known")
	metricGeoIPUnknown = metricGeoIPLookups.WithLabelValues("unknown")
)

// evalCounters are the evaluation counters of one flag set, created as
// they are first needed (so that only answers given appear), and indexed
// so that counting a request's answers looks nothing up by label.
type evalCounters struct {
	set    *rules.Set
	offset []int // per flag: where its variants × reasons start
	cells  []atomic.Pointer[prometheus.Counter]
}

const reasons = 8 // rules.Reason values

func newEvalCounters(set *rules.Set) *evalCounters {
	c := &evalCounters{set: set, offset: make([]int, set.Len())}
	n := 0
	for i := range set.Len() {
		c.offset[i] = n
		n += len(set.Flag(i).Variants) * reasons
	}
	c.cells = make([]atomic.Pointer[prometheus.Counter], n)
	return c
}

// count adds one evaluation of every flag in ev.
func (c *evalCounters) count(ev *rules.Evaluation) {
	for i := range c.offset {
		v, r := ev.Answer(i)
		cell := &c.cells[c.offset[i]+v*reasons+int(r)]
		p := cell.Load()
		if p == nil {
			f := c.set.Flag(i)
			counter := metricEvaluations.WithLabelValues(f.Key, f.Variants[v], r.String())
			p = &counter
			cell.Store(p)
		}
		(*p).Inc()
	}
}

// evalCountersFor returns the counters of set, building them once per set.
func (a *App) evalCountersFor(set *rules.Set) *evalCounters {
	if c := a.counters.Load(); c != nil && c.set == set {
		return c
	}
	c := newEvalCounters(set)
	a.counters.Store(c)
	return c
}

func registerMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{metricEvaluations, metricReloads, metricVersion, metricFlags, metricGeoIPLookups, metricAdminChanges, metricRuntimeSetAside, metricSampleRatio, metricExposureResets,
		metricVariantRequests, metricVariantFailures, metricVariantTTFB, metricRolloutDecisions, metricRolloutPercent, metricStoreUp,
		metricShadowRequests, metricShadowDelta} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

// forgetFlags deletes the evaluation series of the flags, and of the
// variants, that next no longer has: a series lives as long as its flag,
// so that churning flag keys cannot grow /metrics without bound.
func forgetFlags(old, next *rules.Set) {
	for i := range old.Len() {
		f := old.Flag(i)
		j, ok := next.Index(f.Key)
		if !ok {
			metricEvaluations.DeletePartialMatch(prometheus.Labels{"flag": f.Key})
			continue
		}
		for _, v := range f.Variants {
			if !slices.Contains(next.Flag(j).Variants, v) {
				metricEvaluations.DeletePartialMatch(prometheus.Labels{"flag": f.Key, "variant": v})
			}
		}
	}
}
