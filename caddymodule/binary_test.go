package caddymodule

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// raceEnabled is set when the tests are built with -race, so the binary is
// built the same way and reuses the packages already compiled for them.
var raceEnabled bool

// buildCaddy builds cmd/caddy, the binary the README's demo command runs.
func buildCaddy(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the caddy binary; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "caddy")
	args := []string{"build", "-o", bin}
	if raceEnabled {
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
	for _, m := range []string{"feature_flags", "http.handlers.feature_flags", "http.matchers.feature"} {
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
}
