package caddymodule

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/edgeflags/edgeflags/rules"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "flags",
		Usage: "validate <file>... | explain --flags <file> [options] | bucket <salt> <unit>",
		Short: "Checks flag files, explains their answers, computes buckets (edgeflags)",
		Long: `
Works on edgeflags flag files without a running server.

  caddy flags validate flags.yaml more.json
      Loads the files as one set and prints every error (exit status 1), or a
      summary.

  caddy flags explain --flags flags.yaml --user alice --country DE --header X-Plan=pro
      Prints each flag's variant, reason, rule and bucket for the request
      described by the options.

  caddy flags sign-override --ttl 8h new-checkout=on dark-mode=dark
      Prints a Feature-Override header value signed with the override_secret
      (from $FF_OVERRIDE_SECRET or --secret), and the same as a cookie value.

  caddy flags bucket new-checkout Zx3kP0q9bW1mT8rY2vN4cA
      Prints XXH3(salt + "." + unit) and its bucket (mod 10000), the hashing
      contract every language can reproduce.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(validateCommand(), explainCommand(), bucketCommand(), signOverrideCommand())
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

func explainCommand() *cobra.Command {
	var (
		files                   []string
		c                       ExplainContext
		headers, cookies, query []string
		asJSON                  bool
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
			for _, kv := range []struct {
				list []string
				dst  *map[string]string
				what string
			}{{headers, &c.Headers, "--header"}, {cookies, &c.Cookies, "--cookie"}, {query, &c.Query, "--query"}} {
				for _, s := range kv.list {
					k, v, ok := strings.Cut(s, "=")
					if !ok {
						return fmt.Errorf("%s %q: write NAME=VALUE", kv.what, s)
					}
					if *kv.dst == nil {
						*kv.dst = map[string]string{}
					}
					(*kv.dst)[k] = v
				}
			}
			req, err := newExplainRequest(c, nil)
			if err != nil {
				return err
			}
			out := explain(set, req)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(out)
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
	f.StringVar(&c.Unit, "unit", "", "the identity to bucket on (default: --user)")
	f.StringVar(&c.User, "user", "", "a logged-in user's id")
	f.StringVar(&c.Country, "country", "", "ISO country code, e.g. DE")
	f.StringVar(&c.IP, "ip", "", "client IP address")
	f.StringVar(&c.Host, "host", "", "request host")
	f.StringVar(&c.Path, "path", "/", "request path")
	f.StringVar(&c.Method, "method", "GET", "request method")
	f.StringVar(&c.UserAgent, "user-agent", "", "User-Agent")
	f.StringArrayVar(&headers, "header", nil, "a request header NAME=VALUE (repeatable)")
	f.StringArrayVar(&cookies, "cookie", nil, "a cookie NAME=VALUE (repeatable)")
	f.StringArrayVar(&query, "query", nil, "a query parameter NAME=VALUE (repeatable)")
	f.StringVar(&c.Now, "now", "", "the time to evaluate at, RFC 3339 (default: now)")
	f.BoolVar(&c.Bot, "bot", false, "the client is a crawler")
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
			exp := time.Now().Add(ttl)
			value, err := SignOverride([]byte(secret), pairs, exp)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Feature-Override: %s\n", value)
			fmt.Fprintf(out, "Cookie: %s=%s\n", DefaultOverrideCookie, base64.RawURLEncoding.EncodeToString([]byte(value)))
			fmt.Fprintf(out, "valid until %s\n", exp.UTC().Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().StringVar(&secret, "secret", "", "the override_secret (default: $FF_OVERRIDE_SECRET)")
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the override is honoured (at most 720h, 30 days)")
	return cmd
}
