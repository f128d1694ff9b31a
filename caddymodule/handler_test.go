package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/zeebo/xxh3"
)

const demoFlags = `
segments:
  beta-testers:
    user: {in: [alice, bob]}
flags:
  new-checkout:
    rules:
      - when: {segment: {in: [beta-testers]}}
        serve: on
      - split: {on: 25, off: 75}
  search-v2:
    rules:
      - when: {country: {in: [DE, AT]}}
        serve: on
  dark-mode:
    variants: [light, dark]
    client: true
    rules:
      - when: {segment: {in: [beta-testers]}}
        serve: dark
  recommendations:
    enabled: false
    rules: [{split: {on: 50, off: 50}}]
  internal-only:
    header: false
    rules: [{serve: on}]
`

const edgeCaddyfile = globalOptions + `	feature_flags {
		flags_file {FLAGS}
		geoip {GEOIP}
		identity {http.request.header.X-User-Id} cookie
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags
	@new feature new-checkout on
	reverse_proxy @new {NEW}
	reverse_proxy {OLD}
}
`

func TestHeadersInjectedAndSpoofsRemoved(t *testing.T) {
	s := startCaddy(t, edgeCaddyfile, demoFlags)
	_, e := s.get(t, "/",
		"X-User-Id: alice",
		"X-Feature-Search-V2: on", // spoofs, in every spelling
		"X_Feature_Search_V2: on",
		"x-feature-dark-mode: dark",
		"X-FEATURE-EVIL: 1",
		"X-Features: search-v2=on",
		"X-Feature: kept", // not the prefix: X-Feature- with the dash
	)
	want := map[string]string{
		"X-Feature-New-Checkout":    "on",
		"X-Feature-Search-V2":       "off",
		"X-Feature-Dark-Mode":       "dark",
		"X-Feature-Recommendations": "off",
		"X-Features":                "new-checkout=on, search-v2=off, dark-mode=dark, recommendations=off, internal-only=on",
		"X-Feature":                 "kept",
	}
	for name, v := range want {
		if got := e.Headers[name]; len(got) != 1 || got[0] != v {
			t.Errorf("%s: backend got %q, want [%s]", name, got, v)
		}
	}
	for name := range e.Headers {
		low := strings.ToLower(name)
		if strings.Contains(low, "evil") || strings.HasPrefix(low, "x_feature") || name == "X-Feature-Internal-Only" {
			t.Errorf("backend got %s: %q", name, e.Headers[name])
		}
	}
	if e.Backend != "new" {
		t.Errorf("alice (a beta tester) reached the %s backend", e.Backend)
	}
}

func TestCookieMintedAndKept(t *testing.T) {
	s := startCaddy(t, edgeCaddyfile, demoFlags)
	resp, first := s.get(t, "/")
	cookies := resp.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("got %d cookies, want the identity cookie", len(cookies))
	}
	c := cookies[0]
	raw := resp.Header.Get("Set-Cookie")
	if c.Name != "ff_uid" || len(c.Value) != 22 || !validID(c.Value) || c.Path != "/" || c.MaxAge != 365*24*3600 ||
		!c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Secure || c.Domain != "" {
		t.Errorf("cookie %s: want ff_uid=<22 base64url chars>; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax", raw)
	}
	// The minted id buckets this very request.
	if want := variantFor("new-checkout", c.Value, 2500); first.Headers.Get("X-Feature-New-Checkout") != want {
		t.Errorf("first request got %s, the contract says %s for %s", first.Headers.Get("X-Feature-New-Checkout"), want, c.Value)
	}
	for range 5 {
		resp, next := s.get(t, "/", "Cookie: ff_uid="+c.Value)
		if len(resp.Cookies()) != 0 {
			t.Errorf("a visitor with a cookie got another: %v", resp.Header["Set-Cookie"])
		}
		if next.Headers.Get("X-Features") != first.Headers.Get("X-Features") {
			t.Errorf("variants changed between requests: %s, then %s", first.Headers.Get("X-Features"), next.Headers.Get("X-Features"))
		}
	}
	for _, bad := range []string{"short", "has space in it", strings.Repeat("a", 129), "bad!chars#here", `"short"`, "dots.are.not.ok"} {
		resp, _ := s.get(t, "/", "Cookie: ff_uid="+bad)
		if cs := resp.Cookies(); len(cs) != 1 || cs[0].Value == bad || !validID(cs[0].Value) {
			t.Errorf("malformed cookie %q: not replaced (%v)", bad, resp.Header["Set-Cookie"])
		}
	}
	// An id minted by another system (8–128 of [A-Za-z0-9_-]) carries over.
	resp, _ = s.get(t, "/", "Cookie: other=1; ff_uid=legacy-system-id_42")
	if len(resp.Cookies()) != 0 {
		t.Errorf("a valid foreign id was replaced: %v", resp.Header["Set-Cookie"])
	}
}

// variantFor computes a 2-variant split per DESIGN.md §2, independently of
// package rules: on ⇔ XXH3(salt.unit) mod 10000 < threshold.
func variantFor(salt, unit string, threshold uint64) string {
	if xxh3.HashString(salt+"."+unit)%10000 < threshold {
		return "on"
	}
	return "off"
}

func TestRolloutsFollowTheHashingContract(t *testing.T) {
	flags := `
flags:
  ten: {rules: [{split: {on: 10, off: 90}}]}
  half: {salt: half-2026, rules: [{split: {on: 50, off: 50}}]}
`
	s := startCaddy(t, globalOptions+`	feature_flags {
		flags_file {FLAGS}
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags
	respond "{feature_flags.all}"
}
`, flags)
	const n = 20_000
	var mu sync.Mutex
	on := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan string, 10)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				unit := fmt.Sprintf("visitor-%06d-%x", i, i*7919)
				req, _ := http.NewRequest("GET", s.url+"/", nil)
				req.Header.Set("Cookie", "ff_uid="+unit)
				resp, err := s.client.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				got := map[string]string{}
				for _, kv := range strings.Split(string(body), ", ") {
					k, v, _ := strings.Cut(kv, "=")
					got[k] = v
				}
				mu.Lock()
				for flag, want := range map[string]string{"ten": variantFor("ten", unit, 1000), "half": variantFor("half-2026", unit, 5000)} {
					if got[flag] != want {
						select {
						case errs <- fmt.Sprintf("%s for %s: Caddy says %q, the contract %q", flag, unit, got[flag], want):
						default:
						}
					}
					if got[flag] == "on" {
						on[flag]++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	for flag, want := range map[string]float64{"ten": 10, "half": 50} {
		share := 100 * float64(on[flag]) / n
		t.Logf("%s: %.2f %% on over %d identities", flag, share, n)
		if share < want-1 || share > want+1 {
			t.Errorf("%s: %.2f %% on, want %.0f ± 1", flag, share, want)
		}
	}
}

func TestConsentGatesTheCookie(t *testing.T) {
	s := startCaddy(t, globalOptions+`	feature_flags {
		flags_file {FLAGS}
		cookie {
			consent cookie_consent ^(all|analytics)$
		}
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags
	reverse_proxy {OLD}
}
`, demoFlags)
	id := unitWith("new-checkout", "on") // without an identity the flag is off
	for _, tc := range []struct {
		cookie  string
		wantSet bool
		wantOn  bool // the existing identity was used
	}{
		{"", false, false},
		{"ff_uid=" + id, false, false}, // without consent even an existing id is not read
		{"cookie_consent=necessary-only", false, false},
		{"cookie_consent=all", true, false},
		{"cookie_consent=analytics; ff_uid=" + id, false, true},
	} {
		var headers []string
		if tc.cookie != "" {
			headers = append(headers, "Cookie: "+tc.cookie)
		}
		resp, e := s.get(t, "/", headers...)
		if set := len(resp.Cookies()) == 1; set != tc.wantSet {
			t.Errorf("Cookie %q: identity cookie set = %v, want %v", tc.cookie, set, tc.wantSet)
		}
		wantOn := tc.wantOn
		if tc.wantSet { // this very request is bucketed by the new id
			wantOn = variantFor("new-checkout", resp.Cookies()[0].Value, 2500) == "on"
		}
		if on := e.Headers.Get("X-Feature-New-Checkout") == "on"; on != wantOn {
			t.Errorf("Cookie %q: new-checkout on = %v, want %v", tc.cookie, on, wantOn)
		}
	}
}

func TestPerSiteOverrides(t *testing.T) {
	s := startCaddy(t, globalOptions+`	feature_flags {
		flags_file {FLAGS}
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags {
		cookie_name shop_uid
		cookie_domain 127.0.0.1
		header_prefix X-Shop-Flag-
	}
	reverse_proxy {NEW}
}
`, demoFlags)
	resp, e := s.get(t, "/", "X-Shop-Flag-Dark-Mode: dark", "X-Feature-Dark-Mode: dark")
	if cs := resp.Cookies(); len(cs) != 1 || cs[0].Name != "shop_uid" || cs[0].Domain != "127.0.0.1" {
		t.Errorf("cookie: %v", resp.Header["Set-Cookie"])
	}
	if got := e.Headers.Get("X-Shop-Flag-Dark-Mode"); got != "light" {
		t.Errorf("X-Shop-Flag-Dark-Mode = %q, want the evaluated light (the spoof removed)", got)
	}
	if got := e.Headers.Get("X-Feature-Dark-Mode"); got != "dark" {
		t.Errorf("another prefix is not ours on this site and passes: got %q", got)
	}
}

func TestDictionaryOnlyHeaders(t *testing.T) {
	s := startCaddy(t, strings.Replace(edgeCaddyfile, "\tfeature_flags\n\t@new", "\tfeature_flags {\n\t\theaders dictionary\n\t}\n\t@new", 1), demoFlags)
	_, e := s.get(t, "/", "X-User-Id: alice", "X-Feature-Search-V2: on", "X-Features: search-v2=on")
	if got := e.Headers.Get("X-Features"); got != "new-checkout=on, search-v2=off, dark-mode=dark, recommendations=off, internal-only=on" {
		t.Errorf("X-Features: %q", got)
	}
	for name := range e.Headers {
		if strings.HasPrefix(name, "X-Feature-") {
			t.Errorf("dictionary mode: the backend got %s: %q", name, e.Headers[name])
		}
	}
}
