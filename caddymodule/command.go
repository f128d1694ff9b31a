package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/edgeflags/edgeflags/geoip"
	"github.com/edgeflags/edgeflags/rules"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "flags",
		Usage: "validate <file>... | explain --flags <file> [options] | diff <old> <new> [options] | sign-override <flag>=<variant>... | bucket <salt> <unit> | rollout <flag> [status|pause|resume|advance|abort]",
		Short: "Checks flag files, explains their answers, computes buckets, steers rollouts (edgeflags)",
		Long: `
Works on edgeflags flag files without a running server — but for rollout,
which asks a running Caddy's admin API.

  caddy flags validate flags.yaml more.json
      Loads the files as one set and prints every error (exit status 1), or a
      summary.

  caddy flags explain --flags flags.yaml --user alice --country DE --header X-Plan=pro
      Prints each flag's variant, reason, rule and bucket for the request
      described by the options (--geoip db.mmdb finds the country of --ip).

  caddy flags diff flags.yaml flags-next.yaml
      Before a change ships: for each flag, the share of a sample of users
      whose variant would change, and from which variant to which.

  caddy flags sign-override --flags flags.yaml --ttl 8h new-checkout=on dark-mode=dark
      Prints a Feature-Override header value signed with the override_secret
      (from $FF_OVERRIDE_SECRET or --secret), and the same as a cookie value.
      With --flags, every flag and variant is checked against the file.

  caddy flags bucket new-checkout Zx3kP0q9bW1mT8rY2vN4cA
      Prints XXH3(salt + "." + unit) and its bucket (mod 10000), the hashing
      contract every language can reproduce.

  caddy flags rollout new-checkout pause --actor alice --reason INC-12
      Shows a flag's guarded rollout (status, step, each guard's verdict with
      its numbers, the last decision), after pausing, resuming, advancing or
      aborting it when asked (audited with --actor and --reason).
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(validateCommand(), explainCommand(), diffCommand(), bucketCommand(), signOverrideCommand(), rolloutCommand())
		},
	})
}

func validateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "validate <file>...",
		Short: "Loads flag files as one set and prints every error",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, err := loadFiles(args)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d flags, valid (version %s)\n", strings.Join(args, ", "), set.Len(), set.Version)
			return nil
		},
	}
}

func loadFiles(paths []string) (*rules.Set, error) {
	var sources []rules.Source
	for _, p := range paths {
		data, _, err := readSource(p)
		if err != nil {
			return nil, err
		}
		sources = append(sources, rules.Source{Name: filepath.Clean(p), Data: data})
	}
	set, err := rules.Load(sources...)
	if err != nil {
		var es rules.Errors
		if errors.As(err, &es) {
			return nil, fmt.Errorf("%d error(s):\n%w", es.Count(), err)
		}
		return nil, err
	}
	return set, nil
}

// requestOptions are the command-line options that describe a request,
// shared by explain and diff.
type requestOptions struct {
	c                       ExplainContext
	headers, cookies, query []string
	geoip                   string
}

func (o *requestOptions) register(f *pflag.FlagSet, identity bool) {
	if identity {
		f.StringVar(&o.c.Unit, "unit", "", "the identity to bucket on (default: --user)")
		f.StringVar(&o.c.User, "user", "", "a logged-in user's id")
	}
	f.StringVar(&o.c.Country, "country", "", "ISO country code, e.g. DE")
	f.StringVar(&o.c.IP, "ip", "", "client IP address (its country from --geoip)")
	f.StringVar(&o.geoip, "geoip", "", "a GeoIP database (.mmdb) to find the country of --ip in")
	f.StringVar(&o.c.Host, "host", "", "request host")
	f.StringVar(&o.c.Path, "path", "/", "request path")
	f.StringVar(&o.c.Method, "method", "GET", "request method")
	f.StringVar(&o.c.UserAgent, "user-agent", "", "User-Agent")
	f.StringArrayVar(&o.headers, "header", nil, "a request header NAME=VALUE (repeatable)")
	f.StringArrayVar(&o.cookies, "cookie", nil, "a cookie NAME=VALUE (repeatable)")
	f.StringArrayVar(&o.query, "query", nil, "a query parameter NAME=VALUE (repeatable)")
	f.StringVar(&o.c.Now, "now", "", "the time to evaluate at, RFC 3339 (default: now)")
	f.BoolVar(&o.c.Bot, "bot", false, "the client is a crawler")
}

// request builds the request the options describe, and writes to notes
// what the user might not expect (an --ip whose country nothing can find).
func (o *requestOptions) request(notes io.Writer) (*explainRequest, error) {
	for _, kv := range []struct {
		list []string
		dst  *map[string]string
		what string
	}{{o.headers, &o.c.Headers, "--header"}, {o.cookies, &o.c.Cookies, "--cookie"}, {o.query, &o.c.Query, "--query"}} {
		for _, s := range kv.list {
			k, v, ok := strings.Cut(s, "=")
			if !ok {
				return nil, fmt.Errorf("%s %q: write NAME=VALUE", kv.what, s)
			}
			if *kv.dst == nil {
				*kv.dst = map[string]string{}
			}
			(*kv.dst)[k] = v
		}
	}
	var geo func(netip.Addr) geoip.Location
	switch {
	case o.geoip != "":
		db, err := geoip.Open(o.geoip)
		if err != nil {
			return nil, err
		}
		geo = db.Lookup
	case o.c.IP != "" && o.c.Country == "":
		fmt.Fprintf(notes, "note: no --geoip database, so the country of %s is unknown (XX); give --geoip <file.mmdb> or --country\n", o.c.IP)
	}
	return newExplainRequest(o.c, geo)
}

// printJSON writes v as indented JSON, the --json output of the commands.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func explainCommand() *cobra.Command {
	var (
		files  []string
		opts   requestOptions
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "explain --flags <file> [options]",
		Short: "Prints what a request described by the options gets from each flag",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return errors.New("give the flags with --flags <file> (repeatable)")
			}
			set, err := loadFiles(files)
			if err != nil {
				return err
			}
			req, err := opts.request(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			out := explain(set, req)
			if asJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "FLAG\tVARIANT\tREASON\tRULE\tBUCKET")
			for _, e := range out {
				bucket := "-"
				if e.Bucket != nil {
					bucket = fmt.Sprint(*e.Bucket)
				}
				rule := e.Rule
				if rule == "" {
					rule = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Flag, e.Variant, e.Reason, rule, bucket)
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&files, "flags", nil, "a flags file (repeatable)")
	opts.register(f, true)
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// flagDiff is what a change to the flags files does to one flag.
type flagDiff struct {
	Flag string `json:"flag"`
	// Change is added, removed, changed (some sampled users change
	// variant) or unchanged.
	Change string `json:"change"`
	// Share is the share of sampled users whose variant changes, in percent.
	Share float64 `json:"share"`
	// Moves counts the sampled users by "from → to".
	Moves map[string]int `json:"moves,omitempty"`
}

// diffSets evaluates both sets for sample identities in the request req
// describes, and reports per flag how many would change variant.
func diffSets(old, next *rules.Set, req *explainRequest, sample int) []flagDiff {
	keys := map[string]bool{}
	for _, set := range []*rules.Set{old, next} {
		for i := range set.Len() {
			keys[set.Flag(i).Key] = true
		}
	}
	var out []flagDiff
	evOld, evNext := old.NewEvaluation(), next.NewEvaluation()
	moves := map[string]map[string]int{}
	for u := range sample {
		unit := &unitRequest{explainRequest: req, unit: fmt.Sprintf("diff-sample-%d", u)}
		evOld.Reset(old, unit)
		evNext.Reset(next, unit)
		for key := range keys {
			a, okA := evOld.Lookup(key)
			b, okB := evNext.Lookup(key)
			if okA && okB && a.Variant != b.Variant {
				if moves[key] == nil {
					moves[key] = map[string]int{}
				}
				moves[key][a.Variant+" → "+b.Variant]++
			}
		}
	}
	for _, key := range sortedKeys(keys) {
		_, inOld := old.Index(key)
		_, inNext := next.Index(key)
		d := flagDiff{Flag: key, Change: "unchanged", Moves: moves[key]}
		switch {
		case !inOld:
			d.Change = "added"
		case !inNext:
			d.Change = "removed"
		case len(d.Moves) > 0:
			d.Change = "changed"
			n := 0
			for _, c := range d.Moves {
				n += c
			}
			d.Share = 100 * float64(n) / float64(sample)
		}
		out = append(out, d)
	}
	return out
}

// unitRequest is a described request with one sampled identity.
type unitRequest struct {
	*explainRequest
	unit string
}

func (r *unitRequest) Unit() string { return r.unit }

func diffCommand() *cobra.Command {
	var (
		opts   requestOptions
		sample int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "diff <old file> <new file> [options]",
		Short: "Prints, for each flag, the share of users whose variant a change of the flags files moves",
		Long: `Evaluates both versions of the flags for a sample of identities (the
request options describe what else the requests carry: country, headers…)
and prints, per flag, how many change variant and from which to which. The
share is of the sample: ±0.3 % at the default 100,000.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if sample < 1 || sample > 10_000_000 {
				return errors.New("--sample: give 1 to 10,000,000 identities")
			}
			old, err := loadFiles(args[:1])
			if err != nil {
				return err
			}
			next, err := loadFiles(args[1:])
			if err != nil {
				return err
			}
			req, err := opts.request(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			out := diffSets(old, next, req, sample)
			if asJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "FLAG\tCHANGE\tUSERS CHANGING (of %d)\tMOVES\n", sample)
			for _, d := range out {
				share, moves := "-", "-"
				if d.Change == "changed" || d.Change == "unchanged" {
					share = fmt.Sprintf("%.2f %%", d.Share)
				}
				if len(d.Moves) > 0 {
					var parts []string
					for _, m := range sortedKeys(d.Moves) {
						parts = append(parts, fmt.Sprintf("%s %.2f %%", m, 100*float64(d.Moves[m])/float64(sample)))
					}
					moves = strings.Join(parts, ", ")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.Flag, d.Change, share, moves)
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	opts.register(f, false)
	f.IntVar(&sample, "sample", 100_000, "how many identities to sample")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func bucketCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "bucket <salt> <unit>",
		Short: "Prints the hashing contract's hash and bucket for a salt (usually the flag key) and a unit",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			h := rules.Hash(args[0], args[1])
			fmt.Fprintf(cmd.OutOrStdout(), "xxh3 %016x\nbucket %d\n", h, h%rules.Buckets)
			return nil
		},
	}
}

func signOverrideCommand() *cobra.Command {
	var secret string
	var ttl time.Duration
	var files []string
	cmd := &cobra.Command{
		Use:   "sign-override [--secret <secret>] [--ttl <duration>] <flag>=<variant>...",
		Short: "Prints a signed Feature-Override header (and cookie) value for QA",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if secret == "" {
				secret = os.Getenv("FF_OVERRIDE_SECRET")
			}
			if len(secret) < 32 {
				return errors.New("give the override_secret (at least 32 characters) with --secret or $FF_OVERRIDE_SECRET")
			}
			pairs := map[string]string{}
			for _, a := range args {
				k, v, ok := strings.Cut(a, "=")
				if !ok {
					return fmt.Errorf("%q: write <flag>=<variant>", a)
				}
				pairs[k] = v
			}
			if err := checkOverridePairs(files, pairs); err != nil {
				return err
			}
			if len(files) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "note: the flags and variants are not checked: give --flags <file> to check them")
			}
			exp := time.Now().Add(ttl)
			value, err := SignOverride([]byte(secret), pairs, exp)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Feature-Override: %s\n", value)
			fmt.Fprintf(out, "Cookie: %s=%s\n", DefaultOverrideCookie, overrideCookieValue(value))
			fmt.Fprintf(out, "valid until %s\n", exp.UTC().Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().StringVar(&secret, "secret", "", "the override_secret (default: $FF_OVERRIDE_SECRET)")
	cmd.Flags().StringArrayVar(&files, "flags", nil, "a flags file to check the flags and variants against (repeatable)")
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the override is honoured (at most 720h, 30 days)")
	return cmd
}

// checkOverridePairs refuses, when flags files are given, an override of a
// flag they do not define or to a variant the flag does not have: the
// edge would ignore it.
func checkOverridePairs(files []string, pairs map[string]string) error {
	if len(files) == 0 {
		return nil
	}
	set, err := loadFiles(files)
	if err != nil {
		return err
	}
	var problems []string
	for _, k := range sortedKeys(pairs) {
		i, ok := set.Index(k)
		if !ok {
			problems = append(problems, fmt.Sprintf("no flag %q in %s", k, strings.Join(files, ", ")))
			continue
		}
		if variants := set.Flag(i).Variants; !slices.Contains(variants, pairs[k]) {
			problems = append(problems, fmt.Sprintf("flag %s has no variant %q: its variants are %s", k, pairs[k], strings.Join(variants, ", ")))
		}
	}
	if problems != nil {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}
