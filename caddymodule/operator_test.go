package caddymodule

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeflags/edgeflags/rules"
)

// Tests for what an operator trips on (issue 16).

func TestEnableRemovesTheRuntimeKill(t *testing.T) {
	s := startCaddy(t, opsCaddyfile, "flags:\n  checkout: {rules: [{serve: on}]}\n  legacy: {enabled: false, rules: [{serve: on}]}\n")
	var c Change
	admin(t, "POST", "/feature-flags/flags/checkout/disable?actor=alice&reason=INC-1", "", &c)
	var o overview
	admin(t, "GET", "/feature-flags/", "", &o)
	if len(o.RuntimeDiffers) != 1 || o.RuntimeDiffers[0].Flag != "checkout" || o.RuntimeDiffers[0].Runtime != "killed" ||
		o.RuntimeDiffers[0].File != "enabled" || o.RuntimeDiffers[0].Actor != "alice" || o.RuntimeDiffers[0].At.IsZero() {
		t.Errorf("runtime_differs after disable: %+v", o.RuntimeDiffers)
	}
	admin(t, "POST", "/feature-flags/flags/checkout/enable?actor=bob&reason=fixed", "", &c)
	var f struct{ Runtime *runtimeEntry }
	admin(t, "GET", "/feature-flags/flags/checkout", "", &f)
	if f.Runtime != nil {
		t.Errorf("enable left a runtime entry: %+v", f.Runtime)
	}
	// With no pin left, the file's own kill switch works.
	writeFlags(t, filepath.Join(s.dir, "flags.yaml"), "flags:\n  checkout: {enabled: false, rules: [{serve: on}]}\n  legacy: {enabled: false, rules: [{serve: on}]}\n")
	waitUntil(t, 2*time.Second, "the file's kill switch", func() bool { return s.body(t) == "checkout=off, legacy=off" })

	// enable on a flag the file disables pins it, and says so.
	admin(t, "POST", "/feature-flags/flags/legacy/enable?actor=carol&reason=needed+tonight", "", &c)
	if got := s.body(t); got != "checkout=off, legacy=on" {
		t.Errorf("after enable of a file-disabled flag: %q", got)
	}
	o = overview{}
	admin(t, "GET", "/feature-flags/", "", &o)
	if len(o.RuntimeDiffers) != 1 || o.RuntimeDiffers[0].Flag != "legacy" || o.RuntimeDiffers[0].Runtime != "pinned enabled" ||
		o.RuntimeDiffers[0].File != "disabled" || o.RuntimeDiffers[0].Actor != "carol" || o.RuntimeDiffers[0].Reason != "needed tonight" {
		t.Errorf("runtime_differs after pinning: %+v", o.RuntimeDiffers)
	}
}

func TestLoadErrorsAreOneLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.yaml")
	os.WriteFile(path, []byte("flags:\n  a: {rules: [{serve: maybe}]}\n  b: {default: nope}\n"), 0o644)
	err := validate("{\n\tfeature_flags {\n\t\tflags_file " + path + "\n\t}\n}\n:0 {\n\tfeature_flags\n}")
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "check them with caddy flags validate): 2 errors: ") ||
		!strings.Contains(err.Error(), `unknown variant 'maybe'`) || !strings.Contains(err.Error(), ` | `) {
		t.Errorf("got %q", err)
	}
}

func TestAdminErrorsAreReadable(t *testing.T) {
	startCaddy(t, opsCaddyfile, "flags:\n  a: {}\n")
	resp, err := httpPost("http://localhost:" + strconv.Itoa(adminPort()) + "/feature-flags/flags/a/disable")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(resp, "?actor=<your name>") || strings.Contains(resp, `\u003c`) {
		t.Errorf("body: %s", resp)
	}
}

func TestUnsetSecretLeadsWithTheCause(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.yaml")
	os.WriteFile(path, []byte("flags:\n  a: {}\n"), 0o644)
	for _, option := range []string{"override_secret {env.FF_TEST_NEVER_SET}", "exposures {\n\t\t\tkey {env.FF_TEST_NEVER_SET}\n\t\t}"} {
		err := validate("{\n\tfeature_flags {\n\t\tflags_file " + path + "\n\t\t" + option + "\n\t}\n}\n:0 {\n\tfeature_flags\n}")
		if err == nil || !strings.Contains(err.Error(), "the environment variable FF_TEST_NEVER_SET is not set") || strings.Contains(err.Error(), "add a feature_flags global block") {
			t.Errorf("%s: %v", option, err)
		}
	}
}

func TestStartupLogNamesWhatServes(t *testing.T) {
	s := startCaddy(t, globalOptions+`	log {
		output file {DIR}/caddy.log
		include feature_flags
	}
	feature_flags {
		flags_file {FLAGS}
		geoip {GEOIP}
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags
	respond "{feature_flags.all}"
}
`, "flags:\n  a: {}\n  b: {}\n")
	s.body(t)
	for _, line := range readLogLines(t, filepath.Join(s.dir, "caddy.log"), 1) {
		if line["msg"] == "feature flags serving" {
			if line["flags"] != 2.0 || !strings.Contains(line["geoip"].(string), "demo/geoip.mmdb") || line["geoip_type"] == "" ||
				!strings.Contains(line["sources"].([]any)[0].(string), "flags.yaml (2 flags)") {
				t.Errorf("start-up line: %v", line)
			}
			return
		}
	}
	t.Error("no start-up line")
}

func TestDiffSets(t *testing.T) {
	old := mustSet(t, "flags:\n  rollout: {rules: [{split: {on: 25, off: 75}}]}\n  same: {rules: [{split: {on: 50, off: 50}}]}\n  gone: {}\n")
	next := mustSet(t, "flags:\n  rollout: {rules: [{split: {on: 40, off: 60}}]}\n  same: {rules: [{split: {on: 50, off: 50}}]}\n  new: {}\n")
	req, _ := newExplainRequest(ExplainContext{}, nil)
	got := map[string]flagDiff{}
	for _, d := range diffSets(old, next, req, 20_000) {
		got[d.Flag] = d
	}
	if d := got["rollout"]; d.Change != "changed" || d.Share < 14 || d.Share > 16 || len(d.Moves) != 1 || d.Moves["off → on"] == 0 {
		t.Errorf("25 → 40 %%: %+v, want about 15 %% moving off → on, and none back", d)
	}
	if got["same"].Change != "unchanged" || got["gone"].Change != "removed" || got["new"].Change != "added" {
		t.Errorf("%+v", got)
	}
}

func TestFlagsCommandOperatorOptions(t *testing.T) {
	bin := buildCaddy(t)
	run := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"flags"}, args...)...)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run(nil, "explain", "--flags", "testdata/demo/flags.yaml", "--ip", "198.51.100.7", "--geoip", "testdata/demo/geoip.mmdb")
	if err != nil || !regexpMatch(`search-v2\s+on\s+TARGETING_MATCH\s+DACH launch`, out) || strings.Contains(out, "note:") {
		t.Errorf("explain --geoip:\n%s", out)
	}
	out, _ = run(nil, "explain", "--flags", "testdata/demo/flags.yaml", "--ip", "198.51.100.7")
	if !strings.Contains(out, "note: no --geoip database, so the country of 198.51.100.7 is unknown (XX)") {
		t.Errorf("explain --ip without --geoip:\n%s", out)
	}
	secret := []string{"FF_OVERRIDE_SECRET=" + overrideSecret}
	out, err = run(secret, "sign-override", "--flags", "testdata/demo/flags.yaml", "new-checkout=maybe", "nope=on")
	if err == nil || !strings.Contains(out, `flag new-checkout has no variant "maybe": its variants are off, on`) || !strings.Contains(out, `no flag "nope"`) {
		t.Errorf("sign-override of unknown variants: %v\n%s", err, out)
	}
	if out, err = run(secret, "sign-override", "--flags", "testdata/demo/flags.yaml", "new-checkout=on"); err != nil || !strings.Contains(out, "Feature-Override: new-checkout=on") {
		t.Errorf("sign-override: %v\n%s", err, out)
	}
	next := filepath.Join(t.TempDir(), "next.yaml")
	data, _ := os.ReadFile("../testdata/demo/flags.yaml")
	os.WriteFile(next, []byte(strings.Replace(string(data), "split: {on: 25, off: 75}", "split: {on: 40, off: 60}", 1)), 0o644)
	out, err = run(nil, "diff", "testdata/demo/flags.yaml", next)
	if err != nil || !regexpMatch(`new-checkout\s+changed\s+1[45]\.\d\d %\s+off → on 1[45]\.\d\d %`, out) || !regexpMatch(`search-v2\s+unchanged\s+0.00 %`, out) {
		t.Errorf("diff:\n%s", out)
	}
}

// TestReloadWithABrokenFlagsFile: `caddy reload --force` with a broken
// flags file fails, and says why on one readable line.
func TestReloadWithABrokenFlagsFile(t *testing.T) {
	bin := buildCaddy(t)
	dir := t.TempDir()
	adminAddr := "localhost:" + strconv.Itoa(freePort())
	flags := filepath.Join(dir, "flags.yaml")
	os.WriteFile(flags, []byte("flags:\n  a: {}\n"), 0o644)
	config := filepath.Join(dir, "Caddyfile")
	os.WriteFile(config, []byte("{\n\tadmin "+adminAddr+"\n\tfeature_flags {\n\t\tflags_file "+flags+"\n\t\tstate_file "+filepath.Join(dir, "state.json")+
		"\n\t}\n}\nhttp://127.0.0.1:"+strconv.Itoa(freePort())+" {\n\tfeature_flags\n\trespond ok\n}\n"), 0o644)
	run := exec.Command(bin, "run", "--config", config)
	run.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { run.Process.Kill(); run.Wait() })
	waitUntil(t, 20*time.Second, "caddy answers", func() bool {
		_, err := httpPost("http://" + adminAddr + "/feature-flags/explain")
		return err == nil
	})
	os.WriteFile(flags, []byte("flags:\n  a: {rules: [{serve: maybe}]}\n  b: {default: nope}\n"), 0o644)
	out, err := exec.Command(bin, "reload", "--config", config, "--address", adminAddr, "--force").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "2 errors: ") || !strings.Contains(string(out), "unknown variant 'maybe': the flag's variants are off, on (line 2)") ||
		!strings.Contains(string(out), "(line 3) | ") || strings.Contains(string(out), `\\`) {
		t.Errorf("caddy reload --force: %v\n%s", err, out)
	}
}

func httpPost(url string) (string, error) {
	resp, err := http.Post(url, "application/json", nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func mustSet(t *testing.T, yaml string) *rules.Set {
	t.Helper()
	set, err := rules.Load(rules.Source{Name: "test.yaml", Data: []byte(yaml)})
	if err != nil {
		t.Fatal(err)
	}
	return set
}
