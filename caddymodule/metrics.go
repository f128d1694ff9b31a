package caddymodule

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
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
)

func registerMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{metricEvaluations, metricReloads, metricVersion, metricFlags, metricGeoIPLookups, metricAdminChanges} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}
