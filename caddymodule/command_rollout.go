package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// rolloutCommand steers a guarded rollout through a running Caddy's admin
// API: the same route, and the same audit, as curl.
func rolloutCommand() *cobra.Command {
	var address, actor, reason string
	cmd := &cobra.Command{
		Use:   "rollout <flag> [status|pause|resume|advance|abort] [--actor <name>] [--reason <why>] [--address <admin>]",
		Short: "Shows or steers a flag's guarded rollout on a running Caddy (its admin API)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, action := args[0], "status"
			if len(args) == 2 {
				action = args[1]
			}
			if action != "status" {
				q := url.Values{"actor": {actor}, "reason": {reason}}
				if _, err := adminCall(address, http.MethodPost, "/feature-flags/flags/"+url.PathEscape(key)+"/rollout/"+url.PathEscape(action)+"?"+q.Encode()); err != nil {
					return err
				}
			}
			body, err := adminCall(address, http.MethodGet, "/feature-flags/flags/"+url.PathEscape(key))
			if err != nil {
				return err
			}
			var f struct{ Rollout *rolloutReport }
			if err := json.Unmarshal(body, &f); err != nil {
				return fmt.Errorf("the admin API's answer is not a flag: %v", err)
			}
			if f.Rollout == nil {
				return fmt.Errorf("flag %q has no rollout running: give it a rollout plan", key)
			}
			printRollout(cmd.OutOrStdout(), key, f.Rollout)
			return nil
		},
	}
	cmd.Flags().StringVar(&address, "address", "", "the admin API's address (default: as caddy reload finds it, localhost:2019)")
	cmd.Flags().StringVar(&actor, "actor", "", "who steers (required to change anything; audited)")
	cmd.Flags().StringVar(&reason, "reason", "", "why (audited)")
	return cmd
}

// adminCall sends one request to the admin API and returns the body, or
// the API's error message.
func adminCall(address, method, uri string) ([]byte, error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(address, nil, "", "")
	if err != nil {
		return nil, err
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, uri, nil, nil)
	if err != nil {
		return nil, err // Caddy's message names the API's error
	}
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, 16<<20))
}

func printRollout(w io.Writer, key string, r *rolloutReport) {
	fmt.Fprintf(w, "%s: %s, step %d of %d, the candidate %q has %v %% (control %q) since %s\n",
		key, r.Status, r.Step, len(r.Steps), r.Candidate, r.Percent, r.Control, r.StepStarted.Format("2006-01-02 15:04:05 MST"))
	if r.Waiting != "" {
		fmt.Fprintf(w, "waiting for %s\n", r.Waiting)
	}
	fmt.Fprintf(w, "this step: candidate %d requests, %d failed; control %d requests, %d failed\n",
		r.Evidence.Candidate.Requests, r.Evidence.Candidate.Failures, r.Evidence.Control.Requests, r.Evidence.Control.Failures)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, g := range r.Guards {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", g.Guard, g.Verdict, g.Detail)
	}
	tw.Flush()
	if n := len(r.Decisions); n > 0 {
		d := r.Decisions[n-1]
		fmt.Fprintf(w, "last decision: %s by %s at %s: %s\n", d.Action, d.Actor, d.At.Format("2006-01-02 15:04:05 MST"), d.Reason)
	}
}
