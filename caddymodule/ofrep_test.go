package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/open-feature/go-sdk-contrib/providers/ofrep"
	"github.com/open-feature/go-sdk/openfeature"
)

// What real OpenFeature clients need from feature_flags_ofrep (issue 17).

const ofrepFlags = `
flags:
  checkout:
    client: true
    rules: [{when: {header.X-Plan: {in: [pro]}}, serve: on}]
  killed:
    client: true
    enabled: false
    variants: [off, on]
    off_variant: on
  theme:
    variants: [light, dark]
    client: true
    rules: [{when: {header.X-Plan: {in: [pro]}}, serve: dark}]
  killed-theme:
    variants: [light, dark]
    off_variant: dark
    enabled: false
    client: true
`

// ofrepCaddyfile serves OFREP beside the evaluating handler, with the demo
// GeoIP database and QA overrides trusted from loopback.
const ofrepCaddyfile = globalOptions + `	feature_flags {
		flags_file {FLAGS}
		geoip {GEOIP}
		override_from 127.0.0.1/32
	}
}
http://127.0.0.1:{EDGE} {
	handle /ofrep/* {
		feature_flags_ofrep
	}
	handle {
		feature_flags
		reverse_proxy {NEW}
	}
}
`

// TestOpenFeatureGoSDK evaluates through the OpenFeature Go SDK and its
// OFREP provider: every answer is what the backends get, a killed flag
// included — its off variant, whatever the caller's code default.
func TestOpenFeatureGoSDK(t *testing.T) {
	s := startCaddy(t, ofrepCaddyfile, ofrepFlags)
	domain := "edgeflags-" + t.Name()
	if err := openfeature.SetNamedProviderAndWait(domain, ofrep.NewProvider(s.url)); err != nil {
		t.Fatal(err)
	}
	client := openfeature.NewClient(domain)
	ctx := context.Background()
	pro := openfeature.NewEvaluationContext("sdk-user-1", map[string]any{"header.x-plan": "pro"})
	free := openfeature.NewEvaluationContext("sdk-user-2", nil)

	for _, tc := range []struct {
		name string
		got  func() (any, openfeature.Reason, error)
		want any
		rsn  openfeature.Reason
	}{
		{"boolean, targeted (header in any case)", func() (any, openfeature.Reason, error) {
			d, err := client.BooleanValueDetails(ctx, "checkout", false, pro)
			return d.Value, d.Reason, err
		}, true, openfeature.TargetingMatchReason},
		{"boolean, default", func() (any, openfeature.Reason, error) {
			d, err := client.BooleanValueDetails(ctx, "checkout", true, free)
			return d.Value, d.Reason, err
		}, false, openfeature.DefaultReason},
		{"string, targeted", func() (any, openfeature.Reason, error) {
			d, err := client.StringValueDetails(ctx, "theme", "none", pro)
			return d.Value, d.Reason, err
		}, "dark", openfeature.TargetingMatchReason},
		{"killed boolean: its off variant, not the code default", func() (any, openfeature.Reason, error) {
			d, err := client.BooleanValueDetails(ctx, "killed", false, pro)
			return d.Value, d.Reason, err
		}, true, openfeature.StaticReason},
		{"killed string: its off variant", func() (any, openfeature.Reason, error) {
			d, err := client.StringValueDetails(ctx, "killed-theme", "code-default", free)
			return d.Value, d.Reason, err
		}, "dark", openfeature.StaticReason},
	} {
		got, reason, err := tc.got()
		if err != nil || got != tc.want || reason != tc.rsn {
			t.Errorf("%s: %v %s %v, want %v %s", tc.name, got, reason, err, tc.want, tc.rsn)
		}
	}
	d, _ := client.BooleanValueDetails(ctx, "killed", false, free)
	if d.FlagMetadata["reason"] != "DISABLED" {
		t.Errorf("killed: metadata %v, want reason DISABLED", d.FlagMetadata)
	}
	if _, err := client.BooleanValue(ctx, "nope", false, free); err == nil || !strings.Contains(err.Error(), "FLAG_NOT_FOUND") {
		t.Errorf("an unknown flag: %v", err)
	}
	// The backends get the same for the killed flags.
	_, e := s.get(t, "/", "X-Plan: pro")
	if e.Headers.Get("X-Feature-Killed") != "on" || e.Headers.Get("X-Feature-Killed-Theme") != "dark" {
		t.Errorf("backend: %v", e.Headers)
	}
}

func TestOFREPSpecDepartures(t *testing.T) {
	s := startCaddy(t, ofrepCaddyfile, ofrepFlags)
	post := func(path, body string, headers ...string) (*http.Response, map[string]any) {
		resp, raw := s.request(t, "POST", path, body, append(headers, "Content-Type: application/json")...)
		var out map[string]any
		json.Unmarshal(raw, &out)
		return resp, out
	}
	// Reasons outside OpenFeature's: mapped, ours in metadata.
	_, out := post("/ofrep/v1/evaluate/flags/checkout", `{"context": {"targetingKey": "u1"}}`, "User-Agent: Googlebot/2.1")
	if out["reason"] != "DEFAULT" || out["metadata"].(map[string]any)["reason"] != "BOT" {
		t.Errorf("a crawler: %v", out)
	}
	_, out = post("/ofrep/v1/evaluate/flags/checkout", `{"context": {"targetingKey": "u1"}}`, "Feature-Override: checkout=on")
	if out["reason"] != "TARGETING_MATCH" || out["value"] != true || out["metadata"].(map[string]any)["reason"] != "OVERRIDE" {
		t.Errorf("an override: %v", out)
	}
	// Keys with a slash: 404 FLAG_NOT_FOUND in JSON.
	for _, path := range []string{"/ofrep/v1/evaluate/flags/a/b", "/ofrep/v1/evaluate/flags/a%2Fb"} {
		resp, out := post(path, `{}`)
		if resp.StatusCode != 404 || out["errorCode"] != "FLAG_NOT_FOUND" || out["key"] != "a/b" {
			t.Errorf("%s: %d %v", path, resp.StatusCode, out)
		}
	}
	// The version is the bulk answer's, not each flag's.
	_, out = post("/ofrep/v1/evaluate/flags", `{"context": {"targetingKey": "u1"}}`)
	if v, _ := out["metadata"].(map[string]any)["version"].(string); v == "" {
		t.Errorf("bulk metadata: %v", out["metadata"])
	}
	for _, f := range out["flags"].([]any) {
		if m, ok := f.(map[string]any)["metadata"].(map[string]any); ok && m["version"] != nil {
			t.Errorf("a flag's metadata carries the version: %v", f)
		}
	}
	// An empty targetingKey: TARGETING_KEY_MISSING. A targetingKey: no cookie minted.
	resp, out := post("/ofrep/v1/evaluate/flags/checkout", `{"context": {"targetingKey": ""}}`)
	if resp.StatusCode != 400 || out["errorCode"] != "TARGETING_KEY_MISSING" {
		t.Errorf("empty targetingKey: %d %v", resp.StatusCode, out)
	}
	resp, _ = post("/ofrep/v1/evaluate/flags", `{"context": {"targetingKey": "u1"}}`)
	if len(resp.Cookies()) != 0 {
		t.Errorf("a targetingKey minted a cookie: %v", resp.Header["Set-Cookie"])
	}
	resp, _ = post("/ofrep/v1/evaluate/flags", `{"context": {}}`)
	if len(resp.Cookies()) != 1 {
		t.Errorf("no targetingKey and no cookie: want one minted, got %v", resp.Header["Set-Cookie"])
	}
	// Header context keys in any case.
	for _, key := range []string{"header.X-Plan", "header.x-plan", "header.X-PLAN"} {
		_, out = post("/ofrep/v1/evaluate/flags/theme", `{"context": {"targetingKey": "u1", "`+key+`": "pro"}}`)
		if out["value"] != "dark" {
			t.Errorf("%s: %v", key, out)
		}
	}
}
