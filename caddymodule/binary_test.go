package caddymodule

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgeflags/edgeflags/rules"
)

// raceEnabled is set when the tests are built with -race, so the binary is
// built the same way and reuses the packages already compiled for them.
var raceEnabled bool

// buildCaddy builds cmd/caddy, the binary the README's demo command runs.
func buildCaddy(t *testing.T) string {
	return buildCaddyAs(t, raceEnabled)
}

// buildCaddyAs builds cmd/caddy, with the race detector or not.
func buildCaddyAs(t *testing.T, race bool) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the caddy binary; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "caddy")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "./cmd/caddy")...)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/caddy: %v\n%s", err, out)
	}
	return bin
}

func TestBinaryListsModulesAndRunsTheDemo(t *testing.T) {
	bin := buildCaddy(t)
	out, err := exec.Command(bin, "list-modules").CombinedOutput()
	if err != nil {
		t.Fatalf("list-modules: %v\n%s", err, out)
	}
	for _, m := range []string{"admin.api.feature_flags", "feature_flags", "http.handlers.feature_flags", "http.handlers.feature_flags_ofrep",
		"http.handlers.feature_flags_ui", "http.handlers.feature_shadow", "http.matchers.feature"} {
		if !strings.Contains(string(out), "\n"+m+"\n") {
			t.Errorf("caddy list-modules does not list %s", m)
		}
	}

	validate := exec.Command(bin, "validate", "--config", "Caddyfile.example")
	validate.Dir = ".."
	if out, err := validate.CombinedOutput(); err != nil || !strings.Contains(string(out), "Valid configuration") {
		t.Fatalf("caddy validate --config Caddyfile.example: %v\n%s", err, out)
	}

	for _, addr := range []string{"127.0.0.1:8080", "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:2019"} {
		if l, err := net.Listen("tcp", addr); err != nil {
			t.Skipf("the demo's port %s is taken (%v): stop what uses it to run this part", addr, err)
		} else {
			l.Close()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	run := exec.CommandContext(ctx, bin, "run", "--config", "Caddyfile.example")
	run.Dir = ".."
	run.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	logs := &strings.Builder{}
	run.Stdout, run.Stderr = logs, logs
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		run.Process.Signal(os.Interrupt)
		run.Wait()
		if t.Failed() {
			t.Logf("caddy output:\n%s", logs)
		}
	}()
	get := func(headers ...string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:8080/", nil)
		for _, h := range headers {
			k, v, _ := strings.Cut(h, ": ")
			req.Header.Set(k, v)
		}
		var resp *http.Response
		var err error
		for range 100 { // until the demo is up
			if resp, err = http.DefaultClient.Do(req); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("the demo does not answer: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	resp, body := get()
	if len(resp.Cookies()) != 1 || !strings.Contains(body, "X-Features: new-checkout=") {
		t.Errorf("first visit: cookies %v, body:\n%s", resp.Cookies(), body)
	}
	_, body = get("X-User-Id: alice", "X-Forwarded-For: 198.51.100.7")
	if !strings.Contains(body, "backend: new-checkout") || !strings.Contains(body, "X-Feature-Search-V2: on") ||
		!strings.Contains(body, "dark-mode=dark") || !strings.Contains(body, "recommendations=off") {
		t.Errorf("alice from Germany:\n%s", body)
	}
	t.Run("browser", testDemoPageInChromium)
}

// testDemoPageInChromium loads the demo page twice in one headless Chromium
// profile: the identity cookie is kept, and both loads show the same
// variants (and bucket), from the embedded {feature_flags.json} and from
// OFREP alike.
func testDemoPageInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed: apt-get install chromium (.ci/run does)")
	}
	profile := t.TempDir()
	cell := regexp.MustCompile(`<td id="([a-z-]+)">([^<]*)</td>`)
	load := func() map[string]string {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir="+profile,
			"--virtual-time-budget=10000", "--dump-dom", "http://127.0.0.1:8080/page").Output()
		if err != nil {
			t.Fatalf("chromium: %v", err)
		}
		if !strings.Contains(string(out), `data-ofrep="done"`) {
			t.Fatalf("the page's OFREP call did not finish:\n%s", out)
		}
		cells := map[string]string{}
		for _, m := range cell.FindAllStringSubmatch(string(out), -1) {
			cells[m[1]] = m[2]
		}
		return cells
	}
	first, second := load(), load()
	t.Logf("first load %v, second %v", first, second)
	for _, key := range []string{"new-checkout", "dark-mode"} {
		if first["embedded-"+key] == "" || first["embedded-"+key] != first["ofrep-"+key] {
			t.Errorf("%s: embedded %q, OFREP %q", key, first["embedded-"+key], first["ofrep-"+key])
		}
		if first["embedded-"+key] != second["embedded-"+key] || first["ofrep-"+key] != second["ofrep-"+key] {
			t.Errorf("%s changed between loads: %v then %v", key, first, second)
		}
	}
	if b := first["bucket-new-checkout"]; b == "" || b != second["bucket-new-checkout"] {
		t.Errorf("new-checkout bucket %q then %q: the cookie was not kept", b, second["bucket-new-checkout"])
	}
}

// TestKillSwitchSurvivesARestart stops and restarts a real caddy process:
// a flag disabled through the admin API stays disabled.
func TestKillSwitchSurvivesARestart(t *testing.T) {
	bin := buildCaddy(t)
	dir := t.TempDir()
	adminAddr := fmt.Sprintf("localhost:%d", freePort())
	edge := fmt.Sprintf("127.0.0.1:%d", freePort())
	os.WriteFile(filepath.Join(dir, "flags.yaml"), []byte("flags:\n  checkout: {rules: [{serve: on}]}\n"), 0o644)
	config := filepath.Join(dir, "Caddyfile")
	os.WriteFile(config, []byte(fmt.Sprintf(`{
	admin %s
	feature_flags {
		flags_file %s
		state_file %s
	}
}
http://%s {
	feature_flags
	respond "{feature.checkout}"
}
`, adminAddr, filepath.Join(dir, "flags.yaml"), filepath.Join(dir, "state.json"), edge)), 0o644)
	start := func() *exec.Cmd { return startBinary(t, bin, config, dir) }
	get := func() string {
		for range 100 {
			if resp, err := http.Get("http://" + edge + "/"); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return string(b)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal("caddy does not answer")
		return ""
	}
	first := start()
	if got := get(); got != "on" {
		t.Fatalf("got %q", got)
	}
	resp, err := http.Post("http://"+adminAddr+"/feature-flags/flags/checkout/disable?actor=oncall&reason=INC-1", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("disable: %v %v", err, resp)
	}
	if got := get(); got != "off" {
		t.Fatalf("after the kill switch: %q", got)
	}
	first.Process.Kill() // as a crash would
	first.Wait()
	start()
	if got := get(); got != "off" {
		t.Errorf("after a restart: %q, want the kill switch still off", got)
	}
}

// startBinary runs the built caddy on config, with its data and config
// directories in dir; the test kills it when it ends. opts adjust the
// command before it starts.
func startBinary(t *testing.T, bin, config, dir string, opts ...func(*exec.Cmd)) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "run", "--config", config)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	for _, opt := range opts {
		opt(cmd)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func TestFlagsCommand(t *testing.T) {
	bin := buildCaddy(t)
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"flags"}, args...)...)
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("validate", "testdata/demo/flags.yaml", "testdata/flags/realistic-100.yaml"); err != nil || !strings.Contains(out, "104 flags, valid") {
		t.Errorf("validate good files: %v\n%s", err, out)
	}
	out, err := run("validate", "testdata/bad/many-errors.yaml")
	if err == nil || !strings.Contains(out, "4 error(s)") || !strings.Contains(out, "weights sum to 90, want 100") || !strings.Contains(out, "did you mean GB?") {
		t.Errorf("validate a bad file: %v\n%s", err, out)
	}
	out, err = run("explain", "--flags", "testdata/demo/flags.yaml", "--user", "alice", "--country", "DE")
	if err != nil || !regexpMatch(`new-checkout\s+on\s+TARGETING_MATCH\s+beta testers first`, out) || !regexpMatch(`search-v2\s+on\s+TARGETING_MATCH\s+DACH launch`, out) ||
		!regexpMatch(`recommendations\s+off\s+DISABLED`, out) {
		t.Errorf("explain:\n%s", out)
	}
	out, err = run("explain", "--flags", "testdata/demo/flags.yaml", "--unit", "demo-visitor-0004", "--json")
	if err != nil || !strings.Contains(out, `"variant": "on"`) || !strings.Contains(out, `"bucket": 149`) {
		t.Errorf("explain --json:\n%s", out)
	}
	out, err = run("bucket", "new-checkout", "k3bjftc-ZqWPJFGd1s173i")
	if err != nil || out != "xxh3 deaa11e3da71c454\nbucket 612\n" {
		t.Errorf("bucket: %v %q (testdata/hash-vectors.csv has deaa11e3da71c454, 612)", err, out)
	}
}

func regexpMatch(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }

// TestParsingMemoryIsBounded runs `caddy flags validate` on the most
// expensive sources per byte that can be built — just under the limits,
// and far over them — and reports the process's peak RSS. Before the
// limits, a 31 MB file of list items took 5.7 GB.
func TestParsingMemoryIsBounded(t *testing.T) {
	bin := buildCaddyAs(t, false) // the race detector multiplies memory
	dir := t.TempDir()
	under := rules.MaxSourceNodes/2 - 10 // a flow list counts 2 a value
	shapes := map[string]string{
		"31MB-list.yaml":       "flags:\n" + strings.Repeat("- 1\n", 31<<20/4),
		"31MB-flow.yaml":       "flags: [" + strings.Repeat("1,", 31<<20/2) + "1]\n",
		"limit-flow-list.yaml": "flags: [" + strings.Repeat("1,", under) + "1]\n",
		"limit-flow-map.yaml":  "{" + strings.Repeat("a,", under) + "a}\n",
		"limit-in-list.json":   `{"flags": {"a": {"rules": [{"when": {"user": {"in": [` + strings.Repeat(`"x",`, under) + `"x"]}}, "serve": "on"}]}}}`,
	}
	for name, src := range shapes {
		path := filepath.Join(dir, name)
		os.WriteFile(path, []byte(src), 0o644)
		out, rss := peakRSS(t, bin, "flags", "validate", path)
		t.Logf("%-22s %5.1f MB: peak RSS %d MiB: %.90s", name, float64(len(src))/(1<<20), rss, strings.TrimSpace(string(out)))
		if rss > 400 {
			t.Errorf("%s: peak RSS %d MiB, want under 400", name, rss)
		}
	}
}

// peakRSS runs a command and returns its output and its peak RSS in MiB.
// The peak is the process's own high-water mark (VmHWM), read from /proc
// while it runs: the rusage of the waited child would not do, since Linux
// carries the parent's (this test's) high-water mark into it across exec.
func peakRSS(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	peak := 0
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	for {
		if data, err := os.ReadFile(status); err == nil {
			for _, line := range strings.Split(string(data), "\n") {
				if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
					var kib int
					fmt.Sscan(v, &kib)
					peak = max(peak, kib>>10)
				}
			}
		}
		select {
		case <-done:
			return out.String(), peak
		case <-time.After(2 * time.Millisecond):
		}
	}
}
