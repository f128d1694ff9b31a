package caddymodule

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
)

var updateAdapt = flag.Bool("update-adapt", false, "rewrite the JSON half of testdata/caddyfile/*.caddyfiletest")

// TestCaddyfileAdapt checks Caddyfile → JSON for every directive and
// option, with golden files as Caddy's own tests do: a Caddyfile, a line of
// dashes, and the JSON it adapts to.
func TestCaddyfileAdapt(t *testing.T) {
	files, _ := filepath.Glob("../testdata/caddyfile/*.caddyfiletest")
	if len(files) < 5 {
		t.Fatalf("%d adapt tests, want the set in testdata/caddyfile", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			caddyfile, want, ok := strings.Cut(string(data), "----------")
			if !ok {
				t.Fatal("no ---------- separator")
			}
			if *updateAdapt {
				got, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
				if err != nil {
					t.Fatal(err)
				}
				var pretty bytes.Buffer
				json.Indent(&pretty, got, "", "\t")
				want = "\n" + pretty.String() + "\n"
				os.WriteFile(f, []byte(caddyfile+"----------"+want), 0o644)
			}
			caddytest.AssertAdapt(t, caddyfile, "caddyfile", strings.TrimSpace(want))
		})
	}
}

// validate does what `caddy validate` does: adapt, then load the config
// without running it (provisioning every module).
func validate(caddyfile string) error {
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		return err
	}
	var cfg *caddy.Config
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return err
	}
	return caddy.Validate(cfg)
}

func TestValidateRefusesBrokenConfigs(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte(demoFlags), 0o644)
	os.WriteFile(bad, []byte("flags:\n  new-checkout:\n    rules:\n      - split: {on: 15, off: 75}\n"), 0o644)
	global := func(opts string) string { return "{\n\tfeature_flags {\n" + opts + "\n\t}\n}\n" }
	for _, tc := range []struct {
		name, caddyfile, want string
	}{
		{"flags file with an error", global("flags_file "+bad) + ":0 {\n\tfeature_flags\n}",
			"bad.yaml: flags.new-checkout.rules[0].split: weights sum to 90, want 100 (line 4)"},
		{"missing flags file", global("flags_file "+filepath.Join(dir, "nope.yaml")) + ":0 {\n\tfeature_flags\n}",
			"nope.yaml: no such file"},
		{"no flags file", global("geoip "+demoGeoIP) + ":0 {\n\tfeature_flags\n}",
			"no flags_file or flags_url: add one"},
		{"directive without the global block", ":0 {\n\tfeature_flags\n}",
			"add a feature_flags global block"},
		{"matcher without the global block", ":0 {\n\t@m feature new-checkout on\n\trespond @m 200\n}",
			"add a feature_flags global block"},
		{"matcher naming an unknown flag", global("flags_file "+good) + ":0 {\n\t@m feature new-chekout on\n\trespond @m 200\n}",
			`unknown flag "new-chekout"`},
		{"matcher naming an unknown variant", global("flags_file "+good) + ":0 {\n\t@m feature dark-mode on\n\trespond @m 200\n}",
			`flag dark-mode has no variant "on": its variants are light, dark`},
		{"CEL naming an unknown flag", global("flags_file "+good) + ":0 {\n\t@m expression feature('nope', 'on')\n\trespond @m 200\n}",
			`unknown flag "nope"`},
		{"corrupt GeoIP database", global("flags_file "+good+"\n\t\tgeoip ../testdata/geoip/bad/libmaxminddb-corrupt-search-tree.mmdb") + ":0 {\n\tfeature_flags\n}",
			"geoip database ../testdata/geoip/bad/libmaxminddb-corrupt-search-tree.mmdb"},
		{"missing GeoIP database", global("flags_file "+good+"\n\t\tgeoip GeoLite2-Country.mmdb") + ":0 {\n\tfeature_flags\n}",
			"geoip database GeoLite2-Country.mmdb: no such file"},
		{"bad identity", global("flags_file "+good+"\n\t\tidentity user_id") + ":0 {\n\tfeature_flags\n}",
			`identity "user_id": use a placeholder such as {http.auth.user.id}`},
		{"unknown option", global("flags_file "+good+"\n\t\tflag_file x.yaml") + ":0 {\n\tfeature_flags\n}",
			`unknown feature_flags option "flag_file"`},
		{"bad cookie option", global("flags_file "+good+"\n\t\tcookie {\n\t\t\tsame_site sometimes\n\t\t}") + ":0 {\n\tfeature_flags\n}",
			`cookie same_site "sometimes": use lax, strict or none`},
		{"same_site none without Secure", global("flags_file "+good+"\n\t\tcookie {\n\t\t\tsame_site none\n\t\t\tsecure never\n\t\t}") + ":0 {\n\tfeature_flags\n}",
			"same_site none needs Secure"},
		{"bad consent regex", global("flags_file "+good+"\n\t\tcookie {\n\t\t\tconsent cc (yes\n\t\t}") + ":0 {\n\tfeature_flags\n}",
			`cookie consent value "(yes"`},
		{"dashboard without the global block", ":0 {\n\tfeature_flags_ui\n}",
			"add a feature_flags global block"},
		{"dashboard: unknown option", global("flags_file "+good) + ":0 {\n\tfeature_flags_ui {\n\t\tanonymous alice\n\t}\n}",
			`unknown option "anonymous": known are anonymous_actor, stale_after, preview_ttl`},
		{"dashboard: a preview longer than an override", global("flags_file "+good) + ":0 {\n\tfeature_flags_ui {\n\t\tpreview_ttl 60d\n\t}\n}",
			"preview_ttl 1440h0m0s is longer than an override may last"},
		{"dashboard: a negative duration", global("flags_file "+good) + ":0 {\n\tfeature_flags_ui {\n\t\tstale_after -1h\n\t}\n}",
			"durations after now"},
		{"dashboard: not a path", global("flags_file "+good) + ":0 {\n\tfeature_flags_ui flags\n}",
			`base "flags": write a path`},
		{"matcher without variants", global("flags_file "+good) + ":0 {\n\t@m feature new-checkout\n\trespond @m 200\n}",
			"give one or more variants after the flag key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validate(tc.caddyfile)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v\nwant an error containing %q", err, tc.want)
			}
		})
	}
	if err := validate(global("flags_file "+good+"\n\t\tgeoip "+demoGeoIP) + ":0 {\n\tfeature_flags\n\t@m feature dark-mode dark\n\trespond @m 200\n}"); err != nil {
		t.Errorf("a good config: %v", err)
	}
	// A real free database with minimal metadata starts the edge.
	if err := validate(global("flags_file "+good+"\n\t\tgeoip ../testdata/geoip/real/iptoasn-country-ipv4.mmdb") + ":0 {\n\tfeature_flags\n}"); err != nil {
		t.Errorf("the real free database: %v", err)
	}
}
