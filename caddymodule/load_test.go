package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// versionedFlags is flag set number k: three flags that all serve "v<k>",
// and a flag the admin API toggles. Every fifth version is broken.
func versionedFlags(k int) string {
	var variants []string
	for i := 0; i <= 50; i++ {
		variants = append(variants, fmt.Sprintf("v%d", i))
	}
	v := strings.Join(variants, ", ")
	rule := fmt.Sprintf("[{serve: v%d}]", k)
	if k%5 == 0 && k > 0 {
		rule = fmt.Sprintf("[{split: {v%d: 50, v0: 40}}]", k) // sums to 90: refused
	}
	return fmt.Sprintf("flags:\n  a: {variants: [%s], rules: %s}\n  b: {variants: [%s], rules: %s}\n  c: {variants: [%s], rules: %s}\n  toggle: {rules: [{serve: on}]}\n",
		v, rule, v, rule, v, rule)
}

// TestSwapsUnderLoad swaps the flags file 50 times (ten of them broken)
// and toggles a flag through the admin API while four clients send
// requests: no request may fail, and every response must come from one
// flag set (a, b and c agree) that was not broken.
func TestSwapsUnderLoad(t *testing.T) {
	s := startCaddy(t, opsCaddyfile, versionedFlags(0))
	flags := filepath.Join(s.dir, "flags.yaml")
	const maxRequests = 300_000 // a bound; the clients normally stop when the swaps end
	var sent, failed, mixed, fromBroken atomic.Int64
	seen := sync.Map{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second}
			for sent.Load() < maxRequests {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				resp, err := client.Get(s.url + "/")
				if err != nil {
					failed.Add(1)
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
					continue
				}
				got := map[string]string{}
				for _, kv := range strings.Split(string(body), ", ") {
					k, v, _ := strings.Cut(kv, "=")
					got[k] = v
				}
				if got["a"] != got["b"] || got["b"] != got["c"] || got["a"] == "" {
					mixed.Add(1)
				}
				var k int
				fmt.Sscanf(got["a"], "v%d", &k)
				if k%5 == 0 && k > 0 {
					fromBroken.Add(1)
				}
				seen.Store(got["a"], true)
			}
		}()
	}
	toggles := 0
	for k := 1; k <= 50; k++ {
		writeFlags(t, flags, versionedFlags(k))
		time.Sleep(120 * time.Millisecond) // longer than flags_check_interval: each version serves
		if k%5 == 2 {
			action := []string{"disable", "enable"}[toggles%2]
			var c Change
			if code := admin(t, "POST", "/feature-flags/flags/toggle/"+action+"?actor=load-test", "", &c); code != 200 {
				t.Errorf("%s: %d", action, code)
			}
			toggles++
		}
	}
	writeFlags(t, flags, versionedFlags(51%50))
	time.Sleep(150 * time.Millisecond)
	close(stop)
	wg.Wait()
	versions := 0
	seen.Range(func(any, any) bool { versions++; return true })
	t.Logf("%d requests during 50 swaps and %d admin toggles: %d failed, %d mixed, %d from a broken file; %d flag sets seen",
		sent.Load(), toggles, failed.Load(), mixed.Load(), fromBroken.Load(), versions)
	if failed.Load() != 0 || mixed.Load() != 0 || fromBroken.Load() != 0 {
		t.Errorf("%d failed, %d mixed, %d from a broken file: want none", failed.Load(), mixed.Load(), fromBroken.Load())
	}
	if versions < 30 {
		t.Errorf("only %d flag sets seen: the swaps did not apply while requests flowed", versions)
	}
}
