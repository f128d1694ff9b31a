package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeflags/edgeflags/rollout"
	"github.com/edgeflags/edgeflags/rules"
)

// Guarded rollouts through a real Caddy: users are identified by
// X-User-Id; the candidate (on) is proxied to a backend the test makes
// healthy, failing or slow, the control (off) to a healthy one.

// candidateBackend answers 200, or 500 to every failEvery-th request (0:
// never), after delay.
func candidateBackend(t *testing.T, failEvery int64, delay time.Duration) string {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		if failEvery > 0 && n.Add(1)%failEvery == 0 {
			w.WriteHeader(http.StatusInternalServerError)
		}
		w.Write([]byte("new"))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// controlBackend answers "old" at once.
func controlBackend(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("old")) }))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func startRollout(t *testing.T, candidate, plan string) *site {
	t.Helper()
	return startCaddy(t, strings.NewReplacer("CANDIDATE", candidate, "CONTROL", controlBackend(t)).Replace(globalOptions+`	feature_flags {
		flags_file {FLAGS}
		state_file {DIR}/state.json
		identity {http.request.header.X-User-Id}
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags
	@on feature canary on
	handle @on {
		reverse_proxy CANDIDATE
	}
	reverse_proxy CONTROL
}
`), "flags:\n  canary:\n    variants: [off, on]\n    rollout:\n"+indentLines(plan, "      "))
}

func indentLines(s, prefix string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		b.WriteString(prefix + strings.TrimSpace(l) + "\n")
	}
	return b.String()
}

// drive sends requests of new users (and a few returning ones) until the
// returned stop is called; it counts the answers by body.
func drive(t *testing.T, s *site, workers int) (stop func() map[string]int) {
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	bodies := map[string]int{}
	var wg sync.WaitGroup
	var next atomic.Int64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", s.url+"/", nil)
				req.Header.Set("X-User-Id", "rollout-user-"+strconv.FormatInt(next.Add(1)%5000, 10))
				resp, err := s.client.Do(req)
				if err != nil {
					continue
				}
				var b [8]byte
				n, _ := resp.Body.Read(b[:])
				resp.Body.Close()
				mu.Lock()
				bodies[string(b[:n])]++
				mu.Unlock()
			}
		}()
	}
	return func() map[string]int {
		cancel()
		wg.Wait()
		return bodies
	}
}

// rolloutOf reads the flag's rollout from the admin API.
func rolloutOf(t *testing.T) *rolloutReport {
	t.Helper()
	var f struct{ Rollout *rolloutReport }
	admin(t, "GET", "/feature-flags/flags/canary", "", &f)
	return f.Rollout
}

// waitRollout polls the rollout until ok holds, for at most limit.
func waitRollout(t *testing.T, limit time.Duration, what string, ok func(*rolloutReport) bool) *rolloutReport {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		r := rolloutOf(t)
		if r != nil && ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s the rollout is not %s: %+v", limit, what, r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func actions(r *rolloutReport) string {
	var out []string
	for _, d := range r.Decisions {
		out = append(out, string(d.Action))
	}
	return strings.Join(out, " ")
}

const testPlan = `variant: on
steps: [20, 50, 100]
step_duration: 1s
min_requests: 50
guards:
  - failure_rate: {max_increase: 2%}
  - latency: {percentile: 90, max_ratio: 3}`

// A healthy candidate walks every step to 100 %, and users who had it
// keep it at every step.
func TestRolloutHealthyWalksToTheEnd(t *testing.T) {
	s := startRollout(t, candidateBackend(t, 0, 0), testPlan)
	waitRollout(t, 5*time.Second, "started", func(r *rolloutReport) bool { return r.Status == rollout.Running })
	stop := drive(t, s, 4)
	seen := map[string]bool{} // users seen on the candidate
	sticky := func() {
		for i := range 200 {
			user := "sticky-" + strconv.Itoa(i)
			_, body := s.request(t, "GET", "/", "", "X-User-Id: "+user)
			on := string(body) == "new"
			if seen[user] && !on {
				t.Errorf("%s had the candidate and lost it", user)
			}
			seen[user] = seen[user] || on
		}
	}
	var percents []float64
	r := waitRollout(t, 60*time.Second, "completed", func(r *rolloutReport) bool {
		if len(percents) == 0 || percents[len(percents)-1] != r.Percent {
			percents = append(percents, r.Percent)
			sticky()
		}
		return r.Status == rollout.Completed
	})
	bodies := stop()
	t.Logf("decisions: %s; answers %v; percents seen %v", actions(r), bodies, percents)
	if r.Percent != 100 || actions(r) != "start advance advance" {
		t.Errorf("ended at %v %% after %s, want 100 after start advance advance", r.Percent, actions(r))
	}
	for _, d := range r.Decisions[1:] {
		if d.Actor != rollout.Actor || len(d.Guards) != 2 || !strings.Contains(d.Reason, "every guard passed") {
			t.Errorf("decision %+v: want the rollout's, with both guards' numbers", d)
		}
	}
	var o overview
	admin(t, "GET", "/feature-flags/", "", &o)
	audited := 0
	for _, c := range o.RecentChanges {
		if c.Actor == rollout.Actor && c.Action == "rollout_advance" && c.Decision != nil {
			audited++
		}
	}
	if audited != 2 {
		t.Errorf("%d advances in the audit trail, want 2: %+v", audited, o.RecentChanges)
	}
	if got := metricValue(t, "caddy_feature_flags_rollout_decisions_total", `action="advance",by="rollout",flag="canary"`); got != 2 {
		t.Errorf("rollout_decisions_total{advance} = %v, want 2", got)
	}
	if got := metricValue(t, "caddy_feature_flags_rollout_candidate_percent", `flag="canary"`); got != 100 {
		t.Errorf("rollout_candidate_percent = %v, want 100", got)
	}
}

// A candidate failing 10 % of requests is rolled back within its first
// step, and every user is back on the control.
func TestRolloutFailingCandidateRollsBack(t *testing.T) {
	s := startRollout(t, candidateBackend(t, 10, 0), testPlan)
	waitRollout(t, 5*time.Second, "started", func(r *rolloutReport) bool { return r.Status == rollout.Running })
	stop := drive(t, s, 4)
	r := waitRollout(t, 30*time.Second, "rolled back", func(r *rolloutReport) bool { return r.Status != rollout.Running })
	stop()
	last := r.Decisions[len(r.Decisions)-1]
	t.Logf("decisions: %s; last: %s", actions(r), last.Reason)
	if r.Status != rollout.RolledBack || last.Step != 0 || !strings.Contains(last.Reason, "failure_rate failed") {
		t.Fatalf("status %s at step %d: %s; want rolled back by failure_rate within the first step", r.Status, last.Step, last.Reason)
	}
	for i := range 100 {
		if _, body := s.request(t, "GET", "/", "", "X-User-Id: after-"+strconv.Itoa(i)); string(body) != "old" {
			t.Fatalf("after the rollback a user got %q, want old", body)
		}
	}
}

// A candidate 100 ms slower than the control is rolled back.
func TestRolloutSlowCandidateRollsBack(t *testing.T) {
	s := startRollout(t, candidateBackend(t, 0, 100*time.Millisecond), testPlan)
	waitRollout(t, 5*time.Second, "started", func(r *rolloutReport) bool { return r.Status == rollout.Running })
	stop := drive(t, s, 8)
	r := waitRollout(t, 30*time.Second, "rolled back", func(r *rolloutReport) bool { return r.Status != rollout.Running })
	stop()
	last := r.Decisions[len(r.Decisions)-1]
	t.Logf("last decision: %s", last.Reason)
	if r.Status != rollout.RolledBack || !strings.Contains(last.Reason, "latency_p90 failed") {
		t.Fatalf("status %s: %s; want rolled back by the latency guard", r.Status, last.Reason)
	}
}

// A kill switch stops a running rollout; crawlers and requests without an
// identity are not counted; editing the plan restarts the rollout, and
// any other edit does not.
func TestRolloutKillSwitchBotsAndEdits(t *testing.T) {
	plan := strings.Replace(testPlan, "step_duration: 1s", "step_duration: 1h", 1)
	s := startRollout(t, candidateBackend(t, 0, 0), plan)
	r := waitRollout(t, 5*time.Second, "started", func(r *rolloutReport) bool { return r.Status == rollout.Running })
	started := r.StepStarted
	for range 20 {
		s.request(t, "GET", "/", "", "X-User-Id: a-crawler", "User-Agent: "+googlebot)
		s.request(t, "GET", "/", "")
	}
	for i := range 30 {
		s.request(t, "GET", "/", "", "X-User-Id: counted-"+strconv.Itoa(i))
	}
	r = rolloutOf(t)
	if n := r.Evidence.Candidate.Requests + r.Evidence.Control.Requests; n != 30 {
		t.Errorf("the step counted %d requests, want the 30 identified ones (not 20 crawler nor 20 anonymous ones)", n)
	}

	// An edit elsewhere in the flag keeps the rollout where it is.
	writeFlags(t, filepath.Join(s.dir, "flags.yaml"), "flags:\n  canary:\n    description: now described\n    variants: [off, on]\n    rollout:\n"+indentLines(plan, "      "))
	time.Sleep(1500 * time.Millisecond)
	if r = rolloutOf(t); !r.StepStarted.Equal(started) || actions(r) != "start" {
		t.Errorf("after an edit of the description: %s since %s, want the same step since %s", actions(r), r.StepStarted, started)
	}

	if code := admin(t, "POST", "/feature-flags/flags/canary/rollout/advance?actor=alice&reason=looks+fine", "", nil); code != 200 {
		t.Fatalf("advance: %d", code)
	}
	if r = rolloutOf(t); r.Percent != 50 || r.Decisions[len(r.Decisions)-1].Actor != "alice" {
		t.Errorf("after alice's advance: %v %%, %+v", r.Percent, r.Decisions[len(r.Decisions)-1])
	}

	admin(t, "POST", "/feature-flags/flags/canary/disable?actor=oncall&reason=INC-7", "", nil)
	r = waitRollout(t, 5*time.Second, "paused", func(r *rolloutReport) bool { return r.Status == rollout.Paused })
	if last := r.Decisions[len(r.Decisions)-1]; last.Actor != rollout.Actor || !strings.Contains(last.Reason, "kill switch") {
		t.Errorf("paused by %s: %s", last.Actor, last.Reason)
	}
	for i := range 50 {
		if _, body := s.request(t, "GET", "/", "", "X-User-Id: killed-"+strconv.Itoa(i)); string(body) != "old" {
			t.Fatalf("with the kill switch on a user got %q", body)
		}
	}
	var e struct{ Error string }
	if code := admin(t, "POST", "/feature-flags/flags/canary/rollout/pause?actor=alice", "", &e); code != http.StatusConflict || !strings.Contains(e.Error, "not running") {
		t.Errorf("pausing a paused rollout: %d %q", code, e.Error)
	}

	// A new plan starts again at its first step.
	writeFlags(t, filepath.Join(s.dir, "flags.yaml"), "flags:\n  canary:\n    variants: [off, on]\n    rollout:\n"+indentLines(strings.Replace(plan, "[20, 50, 100]", "[10, 100]", 1), "      "))
	r = waitRollout(t, 5*time.Second, "restarted", func(r *rolloutReport) bool { return len(r.Steps) == 2 })
	if r.Percent != 10 || r.Status != rollout.Running || !strings.Contains(r.Decisions[0].Reason, "plan changed") {
		t.Errorf("after a new plan: %s at %v %%: %s", r.Status, r.Percent, r.Decisions[0].Reason)
	}
}

// A restart of the caddy process in the middle of a rollout resumes at the
// same step, with the step's counts.
func TestRolloutResumesAfterARestart(t *testing.T) {
	bin := buildCaddy(t)
	dir := t.TempDir()
	adminAddr := fmt.Sprintf("localhost:%d", freePort())
	edge := fmt.Sprintf("127.0.0.1:%d", freePort())
	flags := "flags:\n  canary:\n    rollout: {variant: on, steps: [20, 50, 100], step_duration: 1h}\n"
	os.WriteFile(filepath.Join(dir, "flags.yaml"), []byte(flags), 0o644)
	config := filepath.Join(dir, "Caddyfile")
	os.WriteFile(config, []byte(fmt.Sprintf(`{
	admin %s
	feature_flags {
		flags_file %s
		state_file %s
		identity {http.request.header.X-User-Id}
	}
}
http://%s {
	feature_flags
	respond "{feature.canary}"
}
`, adminAddr, filepath.Join(dir, "flags.yaml"), filepath.Join(dir, "state.json"), edge)), 0o644)
	start := func() *exec.Cmd { return startBinary(t, bin, config, dir) }
	status := func() *rolloutReport {
		for range 100 {
			var f struct{ Rollout *rolloutReport }
			if resp, err := http.Get("http://" + adminAddr + "/feature-flags/flags/canary"); err == nil {
				err = json.NewDecoder(resp.Body).Decode(&f)
				resp.Body.Close()
				if err == nil && f.Rollout != nil {
					return f.Rollout
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal("caddy does not show the rollout")
		return nil
	}
	send := func(n int) {
		for i := range n {
			req, _ := http.NewRequest("GET", "http://"+edge+"/", nil)
			req.Header.Set("X-User-Id", "restart-"+strconv.Itoa(i))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
	}
	first := start()
	status()
	resp, err := http.Post("http://"+adminAddr+"/feature-flags/flags/canary/rollout/advance?actor=alice", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("advance: %v %v", err, resp)
	}
	send(40)
	before := status()
	first.Process.Signal(syscall.SIGINT) // a graceful stop saves the step's counts
	first.Wait()
	start()
	after := status()
	if after.Step != 2 || after.Percent != 50 || !after.StepStarted.Equal(before.StepStarted) || after.Status != rollout.Running {
		t.Fatalf("after a restart: step %d at %v %% since %s (%s), want step 2 at 50 %% since %s", after.Step, after.Percent, after.StepStarted, after.Status, before.StepStarted)
	}
	if n := after.Evidence.Candidate.Requests + after.Evidence.Control.Requests; n != 40 {
		t.Errorf("after a restart the step has %d requests, want the 40 counted before it", n)
	}

	// The CLI steers it through the admin API, and says what is missing.
	cli := func(args ...string) (string, error) {
		out, err := exec.Command(bin, append([]string{"flags", "rollout", "canary", "--address", adminAddr}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := cli(); err != nil || !strings.Contains(out, `canary: running, step 2 of 3, the candidate "on" has 50 %`) || !strings.Contains(out, "failure_rate") {
		t.Errorf("caddy flags rollout canary: %v\n%s", err, out)
	}
	if out, err := cli("pause"); err == nil || !strings.Contains(out, "actor") {
		t.Errorf("a pause without --actor: %v\n%s", err, out)
	}
	if out, err := cli("pause", "--actor", "alice", "--reason", "INC-12"); err != nil || !strings.Contains(out, "canary: paused") || !strings.Contains(out, "last decision: pause by alice") {
		t.Errorf("caddy flags rollout canary pause: %v\n%s", err, out)
	}
}

// BenchmarkObserveRolloutRecord is recording one guarded flag's outcome:
// the variant's counts and the step's arm. Target: ≤ 100 ns, 0 allocations.
func BenchmarkObserveRolloutRecord(b *testing.B) {
	doc, err := rules.Parse("b.yaml", []byte("flags:\n  canary: {rollout: {variant: on, steps: [5, 100]}}\n"))
	if err != nil {
		b.Fatal(err)
	}
	set, err := rules.Compile(doc)
	if err != nil {
		b.Fatal(err)
	}
	st := rollout.New(set.Flag(0).Rollout, time.Now(), "bench")
	o := &observedFlags{set: set, flags: []int{0}, cells: [][]*variantCell{{cellOf("bench-canary", "off"), cellOf("bench-canary", "on")}},
		rollouts: []observedRollout{{arms: armsFor("bench-canary", &st), rule: 0, candidate: 1}}}
	ev := set.NewEvaluation()
	ev.Reset(set, benchUnit("bench-user"))
	ev.All()
	b.ReportAllocs()
	for b.Loop() {
		o.record(ev, false, 42*time.Millisecond)
	}
}

// A runtime replacement with the same plan keeps the rollout where it is,
// one with another plan restarts it, and dropping the runtime entry keeps
// its progress.
func TestRolloutThroughTheRuntimeLayer(t *testing.T) {
	plan := strings.Replace(testPlan, "step_duration: 1s", "step_duration: 1h", 1)
	startRollout(t, candidateBackend(t, 0, 0), plan)
	waitRollout(t, 5*time.Second, "started", func(r *rolloutReport) bool { return r.Status == rollout.Running })
	admin(t, "POST", "/feature-flags/flags/canary/rollout/advance?actor=alice", "", nil)
	before := rolloutOf(t)

	var f struct{ Definition json.RawMessage }
	admin(t, "GET", "/feature-flags/flags/canary", "", &f)
	described := strings.Replace(string(f.Definition), `"variants"`, `"description":"replaced at runtime","variants"`, 1)
	if code := admin(t, "PUT", "/feature-flags/flags/canary?actor=alice", described, nil); code != 200 {
		t.Fatalf("PUT: %d", code)
	}
	time.Sleep(3 * rolloutTick)
	if r := rolloutOf(t); r.Percent != 50 || !r.StepStarted.Equal(before.StepStarted) {
		t.Errorf("after a PUT with the same plan: %v %% since %s, want 50 since %s", r.Percent, r.StepStarted, before.StepStarted)
	}
	if code := admin(t, "DELETE", "/feature-flags/flags/canary/runtime?actor=alice", "", nil); code != 200 {
		t.Fatalf("DELETE …/runtime: %d", code)
	}
	time.Sleep(3 * rolloutTick)
	if r := rolloutOf(t); r.Percent != 50 || !r.StepStarted.Equal(before.StepStarted) {
		t.Errorf("after dropping the replacement: %v %% since %s, want 50 since %s", r.Percent, r.StepStarted, before.StepStarted)
	}
	if code := admin(t, "DELETE", "/feature-flags/flags/canary/runtime?actor=alice", "", nil); code != http.StatusNotFound {
		t.Errorf("a second DELETE …/runtime (only the rollout's progress left): %d, want 404", code)
	}
	other := strings.Replace(described, `"steps":[20,50,100]`, `"steps":[30,100]`, 1)
	if other == described {
		t.Fatalf("the definition does not read as expected: %s", described)
	}
	admin(t, "PUT", "/feature-flags/flags/canary?actor=alice", other, nil)
	waitRollout(t, 5*time.Second, "restarted at 30 %", func(r *rolloutReport) bool { return r.Percent == 30 && r.Step == 1 })
}
