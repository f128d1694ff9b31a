package rules

import "time"

// Document is one parsed flag definition source, in the order it was written.
// It is the model of DESIGN.md §5; [Compile] checks documents together and
// turns them into a [Set].
type Document struct {
	// Name is the source name used in error messages, e.g. "flags.yaml".
	Name     string
	Segments []*Segment
	Flags    []*Flag
}

// Segment is a named, reusable set of conditions, all of which must hold.
type Segment struct {
	Name string
	When []Condition
	line int
}

// Flag is one flag definition as written, with defaults not yet applied.
type Flag struct {
	// Key names the flag: [a-z][a-z0-9-]{0,63}.
	Key         string
	Description string
	Owner       string
	Ticket      string
	// Tags group flags for people (the dashboard filters by them):
	// [a-z0-9][a-z0-9_.-]{0,31} each, at most 16, no repeats.
	Tags []string
	// Variants lists the variant names; empty means [off, on]. Their order
	// decides which buckets each variant takes in a split (DESIGN.md §2).
	Variants []string
	// OffVariant is served when the flag is disabled; empty means the first variant.
	OffVariant string
	// Default is served when no rule matches; empty means OffVariant.
	Default string
	// Enabled false is the kill switch; nil means true.
	Enabled *bool
	// Salt seeds the bucketing hash; empty means the key.
	Salt string
	// Client allows the flag to be sent to browsers (OFREP, {feature_flags.json}).
	Client bool
	// Header false keeps the flag out of per-flag X-Feature-* headers; nil means true.
	Header *bool
	// Observe has the edge count each variant's requests, failures and
	// time to first byte (caddy_feature_flags_variant_* metrics).
	Observe bool
	Rules   []Rule
	// Rollout is a guarded rollout's plan: after the rules, identified
	// users are split between its candidate and the off variant, by the
	// share of the rollout's current step. It implies Observe.
	Rollout *Rollout
	// RolloutShare is the candidate's share now, in basis points, as the
	// rollout's state (the runtime layer) says; nil means the first step.
	// It is not part of a flag file.
	RolloutShare *int

	line int
	// broken marks a flag whose structure could not be read; Compile knows
	// its key (so references to it are not reported as unknown) but checks
	// nothing else of it.
	broken bool
	// badVariants marks a variants list the parser could not read whole:
	// Compile then reports nothing that depends on the list being complete.
	badVariants bool
	lines       flagLines
}

// flagLines are the lines of a flag's fields, for errors about them.
type flagLines struct {
	variants, offVariant, def int
	variant                   []int // per entry of variants
}

// CandidateShare is the rollout's candidate share now, in basis points:
// RolloutShare, or the first step's when the runtime layer has none.
func (f *Flag) CandidateShare() int {
	if f.RolloutShare != nil {
		return *f.RolloutShare
	}
	return f.Rollout.Steps[0]
}

// Rollout is the plan of a guarded rollout: the candidate variant's share
// of identified users goes up step by step while guards compare its
// responses with the control's (the off variant), and it is rolled back
// (or paused) when a guard fails. Package rollout runs it.
type Rollout struct {
	// Variant is the candidate; the control is the flag's off variant.
	Variant string
	// Steps are the candidate's shares, in basis points, increasing.
	Steps []int
	// StepDuration is the least time a step runs before it is judged.
	// Default: 10m.
	StepDuration time.Duration
	// MinRequests is the least number of candidate requests a step sees
	// before it is judged. Default: 500.
	MinRequests int
	// MaxStepDuration is how long a step whose guards are inconclusive
	// holds before it pauses for a person. Default: 3 × StepDuration.
	MaxStepDuration time.Duration
	// Guards are what a step must pass. Default: a failure rate at most
	// 0.5 points above the control's.
	Guards []Guard
	// OnFailure is rollback (the candidate back to 0 %) or pause (it keeps
	// its share and stops advancing). Default: rollback.
	OnFailure string

	line  int
	lines rolloutLines
}

type rolloutLines struct {
	variant, steps, stepDuration, maxStepDuration, minRequests, onFailure int
}

// The actions of Rollout.OnFailure.
const (
	OnFailureRollback = "rollback"
	OnFailurePause    = "pause"
)

// Guard is one check of a rollout step; exactly one kind is set.
type Guard struct {
	// FailureRate: the candidate's failure rate may exceed the control's
	// by at most MaxIncrease basis points (0.5 % = 50).
	FailureRate *FailureRateGuard
	// Latency: the candidate's time to first byte at a percentile may be
	// at most MaxRatio times the control's.
	Latency *LatencyGuard
	line    int
}

// FailureRateGuard bounds the candidate's failure rate above the control's.
type FailureRateGuard struct {
	MaxIncrease int // basis points of percentage points
}

// LatencyGuard bounds the candidate's latency against the control's.
type LatencyGuard struct {
	Percentile float64 // 50, 90, 99, 99.9 …
	MaxRatio   float64
}

// Rule serves one variant, or splits users between variants, when all its
// conditions hold. Exactly one of Serve and Split is set.
type Rule struct {
	Name  string
	When  []Condition
	Serve string
	Split []Weight
	line  int
	// serveLine and splitLine are the lines of those fields; badServe and
	// badSplit mark a field the parser reported (or the rule's shape: both
	// or neither), which Compile then leaves alone.
	serveLine, splitLine int
	badServe, badSplit   bool
}

// Weight is one variant's share of a split, in basis points (12.5 % = 1250).
type Weight struct {
	Variant     string
	BasisPoints int
	line        int
}

// Condition is one test of a request attribute, e.g. country in [DE, AT].
type Condition struct {
	// Attribute is the attribute as written: "country", "header.X-Plan", "flag.new-checkout".
	Attribute string
	// Operator is one of the operators of DESIGN.md §5: "in", "regex", "semver_gte", …
	Operator string
	// Values holds the operand(s) as written; single-valued operators have one.
	Values []string
	line   int
	broken bool // a value could not be read: Compile skips the condition
}
