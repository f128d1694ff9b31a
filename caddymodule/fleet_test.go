package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// A fleet: real caddy processes sharing Caddy's file_system storage on
// one directory, each with its own admin API and edge on loopback.

type fleetNode struct {
	admin, edge string
	config, dir string
	cmd         *exec.Cmd
}

type fleet struct {
	t     *testing.T
	bin   string
	store string
	flags string
	nodes []*fleetNode
}

func newFleet(t *testing.T, flags string) *fleet {
	f := &fleet{t: t, bin: buildCaddy(t), store: filepath.Join(t.TempDir(), "store"), flags: filepath.Join(t.TempDir(), "flags.yaml")}
	if err := os.WriteFile(f.flags, []byte(flags), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// add starts a node and waits until its edge answers.
func (f *fleet) add() *fleetNode {
	t := f.t
	n := &fleetNode{admin: fmt.Sprintf("localhost:%d", freePort()), edge: fmt.Sprintf("127.0.0.1:%d", freePort()), dir: t.TempDir()}
	n.config = filepath.Join(n.dir, "Caddyfile")
	os.WriteFile(n.config, []byte(fmt.Sprintf(`{
	admin %s
	storage file_system %s
	feature_flags {
		flags_file %s
		state_storage
	}
}
http://%s {
	feature_flags
	respond "{feature.checkout}"
}
`, n.admin, f.store, f.flags, n.edge)), 0o644)
	n.cmd = startBinary(t, f.bin, n.config, n.dir)
	for range 200 {
		if _, err := n.get(); err == nil {
			f.nodes = append(f.nodes, n)
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("node %s does not answer", n.edge)
	return nil
}

func (n *fleetNode) get() (string, error) {
	resp, err := http.Get("http://" + n.edge + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// call sends an admin request and returns the status and body.
func (n *fleetNode) call(method, path, body string) (int, string) {
	req, _ := http.NewRequest(method, "http://"+n.admin+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls the node's edge until it answers want, and returns how long that took.
func (n *fleetNode) waitFor(t *testing.T, want string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if got, err := n.get(); err == nil && got == want {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("node %s does not answer %q after %s", n.edge, want, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func percentile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// A kill switch on one node serves on the others within 2 s; a node
// started later serves the current layer from its first answer; every
// node lists every node's changes.
func TestFleetKillSwitchPropagates(t *testing.T) {
	f := newFleet(t, "flags:\n  checkout: {rules: [{serve: on}]}\n")
	n1, n2 := f.add(), f.add()
	var took []time.Duration
	for i := range 50 {
		action, want := "disable", "off"
		if i%2 == 1 {
			action, want = "enable", "on"
		}
		if code, body := n1.call("POST", "/feature-flags/flags/checkout/"+action+"?actor=oncall&reason=toggle-"+strconv.Itoa(i), ""); code != 200 {
			t.Fatalf("%s on node 1: %d %s", action, code, body)
		}
		took = append(took, n2.waitFor(t, want, 5*time.Second))
	}
	t.Logf("a kill switch on node 1 served on node 2 after: p50 %s, p99 %s, max %s (50 toggles)",
		percentile(took, 0.5).Round(time.Millisecond), percentile(took, 0.99).Round(time.Millisecond), slices.Max(took).Round(time.Millisecond))
	if m := slices.Max(took); m > 2*time.Second {
		t.Errorf("the slowest toggle took %s, want at most 2 s", m)
	}

	n1.call("POST", "/feature-flags/flags/checkout/disable?actor=oncall&reason=INC-9", "")
	n2.waitFor(t, "off", 5*time.Second)
	n3 := f.add()
	if got, _ := n3.get(); got != "off" {
		t.Errorf("a node started later answers %q first, want the fleet's off", got)
	}
	var o struct {
		RecentChanges []Change `json:"recent_changes"`
		StateStore    string   `json:"state_store"`
	}
	_, body := n3.call("GET", "/feature-flags/", "")
	if err := json.Unmarshal([]byte(body), &o); err != nil {
		t.Fatal(err)
	}
	if len(o.RecentChanges) == 0 || o.RecentChanges[0].Reason != "INC-9" || o.RecentChanges[0].Actor != "oncall" || o.StateStore != "storage feature_flags/" {
		t.Errorf("node 3 lists %s; want node 1's changes, newest first", body)
	}
}

// 300 concurrent changes spread over three nodes: every acknowledged one
// is in the final layer, on every node.
func TestFleetConcurrentChangesAreNotLost(t *testing.T) {
	f := newFleet(t, "flags:\n  checkout: {rules: [{serve: on}]}\n")
	f.add()
	f.add()
	f.add()
	var mu sync.Mutex
	var acked []string
	var refused []string
	var wg sync.WaitGroup
	work := make(chan int)
	for range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				key := fmt.Sprintf("added-%03d", i)
				code, body := f.nodes[i%3].call("PUT", "/feature-flags/flags/"+key+"?actor=load&reason=fleet", `{"header": false, "rules": [{"serve": "on"}]}`)
				mu.Lock()
				if code == 200 {
					acked = append(acked, key)
				} else {
					refused = append(refused, fmt.Sprintf("%s: %d %s", key, code, body))
				}
				mu.Unlock()
			}
		}()
	}
	start := time.Now()
	for i := range 300 {
		work <- i
	}
	close(work)
	wg.Wait()
	t.Logf("300 changes over 3 nodes in %s: %d acknowledged, %d refused %v", time.Since(start).Round(time.Millisecond), len(acked), len(refused), refused)
	if len(acked) < 290 {
		t.Errorf("only %d of 300 changes were acknowledged", len(acked))
	}
	time.Sleep(2 * time.Second)
	for i, n := range f.nodes {
		var o struct{ Flags []flagSummary }
		_, body := n.call("GET", "/feature-flags/", "")
		if err := json.Unmarshal([]byte(body), &o); err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, fl := range o.Flags {
			have[fl.Key] = true
		}
		for _, k := range acked {
			if !have[k] {
				t.Errorf("node %d: the acknowledged change %s is lost", i+1, k)
			}
		}
	}
}
