package caddymodule

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/zeebo/xxh3"
	"go.uber.org/zap"

	"github.com/edgeflags/edgeflags/rules"
	"github.com/edgeflags/edgeflags/stats"
)

// Exposures configures exposure events: a record, on the logger
// feature_flags.exposure, the first time an identified user gets a flag's
// variant in a window (by default once per user, flag and variant a UTC
// day), for experiment analysis. Caddy's log configuration decides where
// the records go. Knowing the users per variant, the edge also checks
// each split for a sample ratio mismatch.
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
	// Window is how long a user's exposure to a flag's variant is
	// remembered: one record per user, flag and variant per window.
	// Windows are aligned to the Unix epoch, so 24h (the default) means
	// UTC days, the same on every node.
	Window caddy.Duration `json:"window,omitempty"`
	// MaxEntries bounds the memory of the deduplication: one entry per
	// user, flag and variant recorded in the window, 8 bytes each at
	// most 3/4 full. Default: 3,000,000 (32 MiB; e.g. 1 M users with 3
	// flags each). Past it, a part of the memory starts over: its users'
	// next requests are recorded again (duplicates, never a lost record),
	// counted in caddy_feature_flags_exposure_resets_total.
	MaxEntries int `json:"max_entries,omitempty"`
	// EveryRequest records every request, not once per window (no
	// memory, and no sample ratio check).
	EveryRequest bool `json:"every_request,omitempty"`
}

// Defaults of Exposures.
const (
	DefaultExposureWindow     = 24 * time.Hour
	DefaultExposureMaxEntries = 3_000_000
)

// exposureSettings is Exposures resolved.
type exposureSettings struct {
	key    []byte
	sample int            // basis points
	flags  map[string]int // basis points
	logger *zap.Logger
	mem    *exposureMemory // nil: every request is recorded
	memKey string          // mem's key in exposurePool
	splits atomic.Pointer[setSplits]
	warned atomic.Int64 // the window in which a full memory was last reported
	now    func() time.Time
}

// exposureSalt salts the sampling hash, so that being sampled is
// independent of every flag's buckets.
const exposureSalt = "feature-flags-exposure"

func newExposureSettings(e *Exposures, key string, logger *zap.Logger) (*exposureSettings, error) {
	if len(key) < 16 {
		return nil, fmt.Errorf("feature_flags: exposures key: give at least 16 characters (a secret, e.g. {env.FF_EXPOSURE_KEY}), so identities cannot be recovered from the records")
	}
	if e.Window < 0 || (e.Window > 0 && time.Duration(e.Window) < time.Minute) {
		return nil, fmt.Errorf("feature_flags: exposures window %v: give a duration of a minute or more, e.g. 24h", time.Duration(e.Window))
	}
	if e.MaxEntries < 0 {
		return nil, fmt.Errorf("feature_flags: exposures max_entries %d: give a positive number, e.g. %d", e.MaxEntries, DefaultExposureMaxEntries)
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
	s := &exposureSettings{key: []byte(key), flags: map[string]int{}, logger: logger, now: time.Now}
	var err error
	if s.sample, err = bp(e.Sample, "sample"); err != nil {
		return nil, err
	}
	for flag, pct := range e.Flags {
		if s.flags[flag], err = bp(pct, "sample for "+flag); err != nil {
			return nil, err
		}
	}
	if !e.EveryRequest {
		window, maxEntries := orDefault(time.Duration(e.Window), DefaultExposureWindow), orDefault(e.MaxEntries, DefaultExposureMaxEntries)
		s.memKey = exposureMemoryKey(window, maxEntries)
		s.mem = loadExposureMemory(s.memKey, window, maxEntries)
	}
	return s, nil
}

// orDefault returns v, or def when v is zero.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// exposureMemory is what survives a config reload: the users seen in the
// window, and the users per variant of each split. Without it a reload
// would record every user again.
type exposureMemory struct {
	seen   *stats.Seen
	mu     sync.Mutex
	splits map[string]*splitUsers // by splitKey
}

var exposurePool = caddy.NewUsagePool()

func (*exposureMemory) Destruct() error { return nil }

func exposureMemoryKey(window time.Duration, maxEntries int) string {
	return "exposures/" + window.String() + "/" + strconv.Itoa(maxEntries)
}

func loadExposureMemory(key string, window time.Duration, maxEntries int) *exposureMemory {
	v, _, _ := exposurePool.LoadOrNew(key, func() (caddy.Destructor, error) {
		return &exposureMemory{seen: stats.NewSeen(window, maxEntries), splits: map[string]*splitUsers{}}, nil
	})
	return v.(*exposureMemory)
}

func (x *exposureSettings) release() {
	if x.mem != nil {
		_, _ = exposurePool.Delete(x.memKey)
	}
}

// record logs the exposures of an evaluated request with identity unit:
// each sampled flag's, the first time in the window for its variant.
func (x *exposureSettings) record(s *requestState, unit string) {
	bucket := rules.Bucket(exposureSalt, unit)
	minted := s.minted && unit == s.cookieID
	var hashed string
	if x.mem == nil {
		for i := range s.set.Len() {
			if x.sampled(s, bucket, i) {
				x.log(s, unit, i, minted, &hashed)
			}
		}
		return
	}
	seen := x.mem.seen
	epoch := seen.Epoch(x.now())
	group := xxh3.HashString(unit)
	// Remember a chunk of flags under the user's lock, then log the new
	// ones outside it.
	for base := 0; base < s.set.Len(); base += 64 {
		var fresh uint64
		batch := seen.Lock(group, epoch)
		returned := base == 0 && !minted && batch.Add(group^returningMark)
		for i := base; i < min(base+64, s.set.Len()); i++ {
			if !x.sampled(s, bucket, i) {
				continue
			}
			res := s.ev.Result(i)
			fp := xxh3.HashStringSeed(res.Variant, xxh3.HashStringSeed(s.set.Flag(i).Key, group))
			if batch.Add(fp) {
				fresh |= 1 << (i - base)
			}
		}
		batch.Unlock()
		if batch.Reset {
			x.full(epoch)
		}
		if returned {
			x.countSplits(s, epoch)
		}
		for ; fresh != 0; fresh &= fresh - 1 {
			x.log(s, unit, base+bits.TrailingZeros64(fresh), minted, &hashed)
		}
	}
}

// sampled reports whether flag i's exposures are recorded for a user in
// bucket (under exposureSalt).
func (x *exposureSettings) sampled(s *requestState, bucket, i int) bool {
	rate, ok := x.flags[s.set.Flag(i).Key]
	if !ok {
		rate = x.sample
	}
	return bucket < rate
}

// returningMark makes a user's fingerprint in the window's memory from
// the user's group hash: the mark that the user came back.
const returningMark = 0x9E3779B97F4A7C15

// countSplits counts a user who came back in the window (see srm.go) in
// the variant of each split that bucketed the user.
func (x *exposureSettings) countSplits(s *requestState, epoch int64) {
	splits := x.splitsFor(s.set)
	for i := range s.set.Len() {
		if v, reason := s.ev.Answer(i); reason == rules.ReasonSplit {
			splits.count(i, s.ev.Result(i).Rule, v, epoch)
		}
	}
}

// log writes flag i's record; hashed caches the user's HMAC for the
// request's next records. A minted identity's first record says so.
func (x *exposureSettings) log(s *requestState, unit string, i int, minted bool, hashed *string) {
	if *hashed == "" {
		mac := hmac.New(sha256.New, x.key)
		mac.Write([]byte(unit))
		*hashed = hex.EncodeToString(mac.Sum(nil)[:16])
	}
	res := s.ev.Result(i)
	x.logger.Info("exposure",
		zap.String("flag", s.set.Flag(i).Key), zap.String("variant", res.Variant), zap.String("reason", res.Reason.String()),
		zap.String("unit", *hashed), zap.String("country", s.location().Country), zap.String("version", s.set.Version),
		zap.Bool("new_identity", minted))
}

// full counts a part of the memory starting over, and says so once a
// window: the bound is too small for the traffic.
func (x *exposureSettings) full(epoch int64) {
	metricExposureResets.Inc()
	if x.warned.Swap(epoch) != epoch {
		x.logger.Warn("exposure memory is full: users are recorded again within the window; raise max_entries",
			zap.Int("max_entries", x.mem.seen.Capacity()), zap.Int("bytes", x.mem.seen.Bytes()))
	}
}

// exposureStatus is the exposure memory, as the admin API shows it.
type exposureStatus struct {
	Window      string    `json:"window"`
	WindowStart time.Time `json:"window_start"`
	Entries     int       `json:"entries"`
	MaxEntries  int       `json:"max_entries"`
	Bytes       int       `json:"max_bytes"`
	Resets      int64     `json:"resets"`
}

func (x *exposureSettings) status() *exposureStatus {
	if x == nil || x.mem == nil {
		return nil
	}
	seen := x.mem.seen
	epoch := seen.Epoch(x.now())
	return &exposureStatus{Window: seen.Window().String(), WindowStart: seen.Start(epoch),
		Entries: seen.Len(epoch), MaxEntries: seen.Capacity(), Bytes: seen.Bytes(), Resets: seen.Resets()}
}
