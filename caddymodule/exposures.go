package caddymodule

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"

	"go.uber.org/zap"

	"github.com/edgeflags/edgeflags/rules"
)

// Exposures configures exposure events: one record per request and flag
// for an identified user, on the logger feature_flags.exposure, for
// experiment analysis. Caddy's log configuration decides where they go.
type Exposures struct {
	// Key is the HMAC key the identity is hashed with: records carry
	// HMAC-SHA256(key, identity), never the identity. {env.*}
	// placeholders are allowed. Required.
	Key string `json:"key"`
	// Sample is the share of users whose exposures are recorded, in
	// percent (0.01 to 100). Users are sampled by their identity, so a
	// sampled user's every exposure is recorded. Default: 100.
	Sample float64 `json:"sample,omitempty"`
	// Flags sets the sample rate of single flags.
	Flags map[string]float64 `json:"flags,omitempty"`
}

// exposureSettings is Exposures resolved.
type exposureSettings struct {
	key    []byte
	sample int            // basis points
	flags  map[string]int // basis points
	logger *zap.Logger
}

// exposureSalt salts the sampling hash, so that being sampled is
// independent of every flag's buckets.
const exposureSalt = "feature-flags-exposure"

func newExposureSettings(e *Exposures, key string, logger *zap.Logger) (*exposureSettings, error) {
	if len(key) < 16 {
		return nil, fmt.Errorf("feature_flags: exposures key: give at least 16 characters (a secret, e.g. {env.FF_EXPOSURE_KEY}), so identities cannot be recovered from the records")
	}
	bp := func(pct float64, what string) (int, error) {
		if pct == 0 {
			return rules.Buckets, nil
		}
		if pct < 0.01 || pct > 100 || math.IsNaN(pct) {
			return 0, fmt.Errorf("feature_flags: exposures %s %v: give a percentage from 0.01 to 100", what, pct)
		}
		return int(math.Round(pct * 100)), nil
	}
	s := &exposureSettings{key: []byte(key), flags: map[string]int{}, logger: logger}
	var err error
	if s.sample, err = bp(e.Sample, "sample"); err != nil {
		return nil, err
	}
	for flag, pct := range e.Flags {
		if s.flags[flag], err = bp(pct, "sample for "+flag); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// record logs the exposures of an evaluated request with identity unit.
func (x *exposureSettings) record(s *requestState, unit string) {
	bucket := rules.Bucket(exposureSalt, unit)
	var hashed string
	for i := range s.set.Len() {
		key := s.set.Flag(i).Key
		rate, ok := x.flags[key]
		if !ok {
			rate = x.sample
		}
		if bucket >= rate {
			continue
		}
		if hashed == "" {
			mac := hmac.New(sha256.New, x.key)
			mac.Write([]byte(unit))
			hashed = hex.EncodeToString(mac.Sum(nil)[:16])
		}
		res := s.ev.Result(i)
		x.logger.Info("exposure",
			zap.String("flag", key), zap.String("variant", res.Variant), zap.String("reason", res.Reason.String()),
			zap.String("unit", hashed), zap.String("country", s.location().Country), zap.String("version", s.set.Version))
	}
}
