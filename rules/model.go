package rules

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
