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
	"syscall"
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
	root  string // everything of the fleet: binary, store, flags, nodes
	bin   string
	store string
	flags string
	nodes []*fleetNode
}

// nobody is the user the nodes run as when the tests run as root, so that
// file permissions hold for them.
const nobody = 65534

func newFleet(t *testing.T, flags string) *fleet {
	root, err := os.MkdirTemp("", "fleet-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755)
	f := &fleet{t: t, root: root, bin: filepath.Join(root, "caddy"), store: filepath.Join(root, "store"), flags: filepath.Join(root, "flags.yaml")}
	data, err := os.ReadFile(buildCaddy(t))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(f.bin, data, 0o755)
	os.WriteFile(f.flags, []byte(flags), 0o644)
	os.Mkdir(f.store, 0o700)
	f.own(f.store)
	return f
}

// own gives path to the nodes' user.
func (f *fleet) own(path string) {
	if os.Getuid() == 0 {
		if err := os.Chown(path, nobody, nobody); err != nil {
			f.t.Fatal(err)
		}
	}
}

// asNodes runs a node as nobody when the tests run as root.
func asNodes(cmd *exec.Cmd) {
	if os.Getuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	}
}

// add starts a node serving the checkout flag, and waits until its edge
// answers.
func (f *fleet) add() *fleetNode {
	return f.addSite("respond \"{feature.checkout}\"")
}

// addSite starts a node whose site runs feature_flags, then site.
func (f *fleet) addSite(site string) *fleetNode {
	t := f.t
	n := &fleetNode{admin: fmt.Sprintf("localhost:%d", freePort()), edge: fmt.Sprintf("127.0.0.1:%d", freePort())}
	n.dir = filepath.Join(f.root, fmt.Sprintf("node-%d", len(f.nodes)+1))
	os.Mkdir(n.dir, 0o700)
	f.own(n.dir)
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
	%s
}
`, n.admin, f.store, f.flags, n.edge, site)), 0o644)
	f.own(n.config)
	n.cmd = startBinary(t, f.bin, n.config, n.dir, asNodes)
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

// A kill switch on node 1 serves on nodes 2 and 3 within 2 s; a node
// started later serves the current layer from its first answer; every
// node lists every node's changes.
func TestFleetKillSwitchPropagates(t *testing.T) {
	f := newFleet(t, "flags:\n  checkout: {rules: [{serve: on}]}\n")
	n1, n2, n3 := f.add(), f.add(), f.add()
	var took []time.Duration
	for i := range 50 {
		action, want := "disable", "off"
		if i%2 == 1 {
			action, want = "enable", "on"
		}
		if code, body := n1.call("POST", "/feature-flags/flags/checkout/"+action+"?actor=oncall&reason=toggle-"+strconv.Itoa(i), ""); code != 200 {
			t.Fatalf("%s on node 1: %d %s", action, code, body)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, n := range []*fleetNode{n2, n3} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d := n.waitFor(t, want, 5*time.Second)
				mu.Lock()
				took = append(took, d)
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	t.Logf("a kill switch on node 1 served on nodes 2 and 3 after: p50 %s, p99 %s, max %s (50 toggles, 100 waits)",
		percentile(took, 0.5).Round(time.Millisecond), percentile(took, 0.99).Round(time.Millisecond), slices.Max(took).Round(time.Millisecond))
	if m := slices.Max(took); m > 2*time.Second {
		t.Errorf("the slowest toggle took %s, want at most 2 s", m)
	}

	n1.call("POST", "/feature-flags/flags/checkout/disable?actor=oncall&reason=INC-9", "")
	n2.waitFor(t, "off", 5*time.Second)
	n4 := f.add()
	if got, _ := n4.get(); got != "off" {
		t.Errorf("a node started later answers %q first, want the fleet's off", got)
	}
	var o struct {
		RecentChanges []Change `json:"recent_changes"`
		StateStore    string   `json:"state_store"`
	}
	_, body := n4.call("GET", "/feature-flags/", "")
	if err := json.Unmarshal([]byte(body), &o); err != nil {
		t.Fatal(err)
	}
	if len(o.RecentChanges) == 0 || o.RecentChanges[0].Reason != "INC-9" || o.RecentChanges[0].Actor != "oncall" || o.StateStore != "storage feature_flags/" {
		t.Errorf("node 4 lists %s; want node 1's changes, newest first", body)
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

// A node killed with SIGKILL in a burst of writes leaves the store valid;
// the others keep serving, and take changes again once its lock is stale.
func TestFleetSurvivesANodeKilledMidWrite(t *testing.T) {
	f := newFleet(t, "flags:\n  checkout: {rules: [{serve: on}]}\n")
	n1, n2, n3 := f.add(), f.add(), f.add()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				n3.call("PUT", fmt.Sprintf("/feature-flags/flags/burst-%d-%d?actor=load", w, i), `{"header": false, "rules": [{"serve": "on"}]}`)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	n3.cmd.Process.Kill()
	wg.Wait()

	data, err := os.ReadFile(filepath.Join(f.store, "feature_flags", "layer.json"))
	var doc stateFile
	if err != nil || json.Unmarshal(data, &doc) != nil || doc.Generation == 0 {
		t.Fatalf("the store after the kill: %v, %.200s", err, data)
	}
	t.Logf("the killed node had stored %d changes (generation %d)", len(doc.Flags), doc.Generation)
	for _, n := range []*fleetNode{n1, n2} {
		if got, err := n.get(); err != nil || got != "on" {
			t.Errorf("node %s after the kill: %q %v", n.edge, got, err)
		}
	}
	start := time.Now()
	if code, body := n1.call("POST", "/feature-flags/flags/checkout/disable?actor=oncall", ""); code != 200 {
		t.Fatalf("a change after the kill: %d %s", code, body)
	}
	t.Logf("the first change after the kill took %s (the dead node's lock goes stale after 10 s)", time.Since(start).Round(time.Millisecond))
	n2.waitFor(t, "off", 3*time.Second)
}

// A store the nodes cannot read: they keep serving their last layer and
// say so; admin changes fail clearly; both recover when it returns.
func TestFleetStoreUnreadable(t *testing.T) {
	f := newFleet(t, "flags:\n  checkout: {rules: [{serve: on}]}\n")
	n1, n2 := f.add(), f.add()
	if code, _ := n1.call("POST", "/feature-flags/flags/checkout/disable?actor=oncall", ""); code != 200 {
		t.Fatal("disable")
	}
	n2.waitFor(t, "off", 3*time.Second)

	os.Chmod(f.store, 0)
	time.Sleep(1500 * time.Millisecond)
	var o struct {
		StateStoreError *loadError `json:"state_store_error"`
	}
	_, body := n2.call("GET", "/feature-flags/", "")
	json.Unmarshal([]byte(body), &o)
	if o.StateStoreError == nil || !strings.Contains(o.StateStoreError.Message, "permission denied") {
		t.Errorf("node 2 does not say the store is unreadable: %s", body)
	}
	if got, _ := n2.get(); got != "off" {
		t.Errorf("node 2 with the store unreadable answers %q, want its last layer's off", got)
	}
	if m, ok := metricAt(t, n2.admin, "caddy_feature_flags_state_store_up", ""); !ok || m != 0 {
		t.Errorf("state_store_up = %v (there: %v), want 0", m, ok)
	}
	code, body := n1.call("POST", "/feature-flags/flags/checkout/enable?actor=oncall", "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "the change was not applied") {
		t.Errorf("a change with the store unreadable: %d %s, want 503 saying it was not applied", code, body)
	}
	if got, _ := n1.get(); got != "off" {
		t.Errorf("node 1 after a refused change answers %q: the change must not apply on the node alone", got)
	}

	os.Chmod(f.store, 0o700)
	time.Sleep(1500 * time.Millisecond)
	if m, ok := metricAt(t, n2.admin, "caddy_feature_flags_state_store_up", ""); !ok || m != 1 {
		t.Errorf("state_store_up after the store returned = %v (there: %v), want 1", m, ok)
	}
	if code, body := n1.call("POST", "/feature-flags/flags/checkout/enable?actor=oncall", ""); code != 200 {
		t.Fatalf("a change after the store returned: %d %s", code, body)
	}
	n2.waitFor(t, "on", 3*time.Second)
}
