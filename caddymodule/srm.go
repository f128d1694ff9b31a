package caddymodule

import (
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/edgeflags/edgeflags/rules"
	"github.com/edgeflags/edgeflags/stats"
)

// The sample ratio mismatch check: the users of each variant of a split
// who came back in the window, against the split's weights. A user comes
// back with an identity from the request — the cookie the edge minted
// earlier, or a placeholder identity such as a logged-in user's id — not
// one minted for this very request: every minted identity is a fair draw,
// so counting those would hide what the check is for. A split that
// assigns as configured reads P > 0.001; a mismatch means something
// treats the variants' users differently — a page of one variant that
// loses the identity cookie (its users are bucketed again, and do not come
// back as themselves), a cache or a bot serving one variant, or users
// leaving one variant after a page — and the experiment's results cannot
// be trusted as they are.

// sampleRatioAlarm is the P below which a split is reported.
const sampleRatioAlarm = 0.001

// sampleRatioInterval is how often the check runs for the metric and the
// log. A variable so that tests need not wait.
var sampleRatioInterval = 10 * time.Second

// splitUsers counts the users of each variant of one split — a flag's
// rule with split — who came back in the current window.
type splitUsers struct {
	flag, rule string
	variants   []string
	weights    []float64 // per variant, basis points
	mu         sync.Mutex
	epoch      atomic.Int64
	users      []atomic.Int64 // per variant
	warned     int64          // the window last reported in, under mu
}

// add counts a user exposed to variant v in window epoch.
func (u *splitUsers) add(v int, epoch int64) {
	if u.epoch.Load() != epoch {
		u.mu.Lock()
		if u.epoch.Load() != epoch {
			for i := range u.users {
				u.users[i].Store(0)
			}
			u.epoch.Store(epoch)
		}
		u.mu.Unlock()
	}
	u.users[v].Add(1)
}

// setSplits are the splitUsers of one flag set, by flag and rule index.
type setSplits struct {
	set   *rules.Set
	flags [][]*splitUsers
}

func (s *setSplits) count(flag, rule, v int, epoch int64) {
	if rule >= 0 && rule < len(s.flags[flag]) {
		if u := s.flags[flag][rule]; u != nil {
			u.add(v, epoch)
		}
	}
}

// splitsFor returns the counts of set's splits, built once per set. A split
// whose flag, salt, rule and weights are unchanged keeps its counts across
// flag reloads and config reloads; a changed split starts from zero (users
// who were bucketed under the old weights would skew the new ones).
func (x *exposureSettings) splitsFor(set *rules.Set) *setSplits {
	if s := x.splits.Load(); s != nil && s.set == set {
		return s
	}
	s := &setSplits{set: set, flags: make([][]*splitUsers, set.Len())}
	mem := x.mem
	mem.mu.Lock()
	kept := map[string]*splitUsers{}
	for i := range set.Len() {
		f := set.Flag(i)
		for r, rule := range f.Rules {
			if len(rule.Split) == 0 {
				continue
			}
			weights := make([]float64, len(f.Variants))
			key := f.Key + "\x00" + f.Salt + "\x00" + strconv.Itoa(r)
			for _, w := range rule.Split {
				for v, name := range f.Variants {
					if name == w.Variant {
						weights[v] += float64(w.BasisPoints)
					}
				}
				key += "\x00" + w.Variant + "=" + strconv.Itoa(w.BasisPoints)
			}
			u := mem.splits[key]
			if u == nil {
				u = &splitUsers{flag: f.Key, rule: set.RuleName(i, r), variants: f.Variants, weights: weights,
					users: make([]atomic.Int64, len(f.Variants))}
			}
			kept[key] = u
			if s.flags[i] == nil {
				s.flags[i] = make([]*splitUsers, len(f.Rules))
			}
			s.flags[i][r] = u
		}
	}
	for key, u := range mem.splits {
		if kept[key] == nil {
			metricSampleRatio.DeleteLabelValues(u.flag, u.rule)
		}
	}
	mem.splits = kept
	mem.mu.Unlock()
	x.splits.Store(s)
	return s
}

// sampleRatio is one split's check, as the admin API shows it.
type sampleRatio struct {
	Rule     string             `json:"rule"`
	Users    map[string]int64   `json:"users"`    // per variant: users who came back in the window
	Expected map[string]float64 `json:"expected"` // the split's shares
	// ChiSquare and P are null until every variant expects 5 users.
	ChiSquare   *float64  `json:"chi_square"`
	P           *float64  `json:"p_value"`
	Mismatch    bool      `json:"mismatch"` // P < 0.001
	WindowStart time.Time `json:"window_start"`
}

// check tests u in window epoch.
func (u *splitUsers) check(epoch int64, seen *stats.Seen) (sampleRatio, stats.SampleRatio) {
	observed := make([]int64, len(u.users))
	if u.epoch.Load() == epoch {
		for v := range u.users {
			observed[v] = u.users[v].Load()
		}
	}
	res := stats.SampleRatioTest(observed, u.weights)
	out := sampleRatio{Rule: u.rule, Users: map[string]int64{}, Expected: map[string]float64{},
		WindowStart: seen.Start(epoch)}
	var total float64
	for _, w := range u.weights {
		total += w
	}
	for v, name := range u.variants {
		if u.weights[v] > 0 || observed[v] > 0 {
			out.Users[name] = observed[v]
			out.Expected[name] = u.weights[v] / total
		}
	}
	if res.Enough {
		chi, p := res.ChiSquare, res.P
		if math.IsInf(chi, 1) {
			chi = math.MaxFloat64 // JSON has no infinity
		}
		out.ChiSquare, out.P = &chi, &p
		out.Mismatch = p < sampleRatioAlarm
	}
	return out, res
}

// sampleRatios returns the checks of flag i's splits, now.
func (x *exposureSettings) sampleRatios(set *rules.Set, i int) []sampleRatio {
	if x == nil || x.mem == nil {
		return nil
	}
	var out []sampleRatio
	epoch := x.mem.seen.Epoch(x.now())
	for _, u := range x.splitsFor(set).flags[i] {
		if u != nil {
			r, _ := u.check(epoch, x.mem.seen)
			out = append(out, r)
		}
	}
	return out
}

// watchSampleRatios checks every split of the serving set every
// sampleRatioInterval until stop closes: it keeps the P-value metric
// current and warns once a window about a split that mismatches.
func (x *exposureSettings) watchSampleRatios(flags func() *rules.Set, stop <-chan struct{}) {
	t := time.NewTicker(sampleRatioInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			x.checkSampleRatios(flags())
		}
	}
}

func (x *exposureSettings) checkSampleRatios(set *rules.Set) {
	epoch := x.mem.seen.Epoch(x.now())
	for _, perRule := range x.splitsFor(set).flags {
		for _, u := range perRule {
			if u == nil {
				continue
			}
			report, res := u.check(epoch, x.mem.seen)
			if !res.Enough {
				metricSampleRatio.DeleteLabelValues(u.flag, u.rule)
				continue
			}
			metricSampleRatio.WithLabelValues(u.flag, u.rule).Set(res.P)
			u.mu.Lock()
			alarm := report.Mismatch && u.warned != epoch
			if alarm {
				u.warned = epoch
			}
			u.mu.Unlock()
			if alarm {
				x.logger.Warn("sample ratio mismatch: the users exposed to each variant do not match the split's weights; do not trust this experiment's results until the cause is found (a page of one variant that loses the identity cookie, a cache or a bot serving one variant)",
					zap.String("flag", u.flag), zap.String("rule", u.rule), zap.Any("users", report.Users),
					zap.Any("expected", report.Expected), zap.Float64("p_value", res.P))
			}
		}
	}
}
