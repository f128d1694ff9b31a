package caddymodule

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestCountryTargeting(t *testing.T) {
	s := startCaddy(t, edgeCaddyfile, demoFlags)
	for _, tc := range []struct {
		name   string
		client *http.Client
		xff    string
		want   string
	}{
		{"trusted proxy, German client", s.client, "198.51.100.7", "on"},
		{"trusted proxy, Austrian client over IPv6", s.client, "2001:db8::42", "on"},
		{"trusted proxy, US client", s.client, "203.0.113.9", "off"},
		{"trusted proxy, unknown address", s.client, "10.1.2.3", "off"},
		{"untrusted peer claiming Germany", dialFrom("127.0.0.2"), "198.51.100.7", "off"},
	} {
		req, _ := http.NewRequest("GET", s.url+"/", nil)
		req.Header.Set("X-Forwarded-For", tc.xff)
		s.client, tc.client = tc.client, s.client
		_, e := s.do(t, req)
		s.client = tc.client
		if got := e.Headers.Get("X-Feature-Search-V2"); got != tc.want {
			t.Errorf("%s: search-v2 = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestCountryHeaderOnlyFromTrustedProxies(t *testing.T) {
	s := startCaddy(t, globalOptions+`	feature_flags {
		flags_file {FLAGS}
		country_header CF-IPCountry
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags
	respond "{feature_flags.country} {feature.search-v2}"
}
`, demoFlags)
	for _, tc := range []struct {
		client *http.Client
		header string
		want   string
	}{
		{s.client, "AT", "AT on"},
		{s.client, "de", "DE on"},
		{s.client, "T1", "XX off"}, // Cloudflare's Tor marker is no country
		{dialFrom("127.0.0.3"), "DE", "XX off"},
	} {
		req, _ := http.NewRequest("GET", s.url+"/", nil)
		req.Header.Set("CF-IPCountry", tc.header)
		resp, err := tc.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != tc.want {
			t.Errorf("CF-IPCountry %s: got %q, want %q", tc.header, body, tc.want)
		}
	}
}

func TestRoutingWithMatcherAndCEL(t *testing.T) {
	for name, routes := range map[string]string{
		"matcher": `@new feature new-checkout on
	reverse_proxy @new {NEW}
	reverse_proxy {OLD}`,
		"CEL": `@new expression feature('new-checkout', 'on')
	reverse_proxy @new {NEW}
	reverse_proxy {OLD}`,
		"handle blocks": `@new feature new-checkout on
	handle @new {
		reverse_proxy {NEW}
	}
	handle {
		reverse_proxy {OLD}
	}`,
		"matcher before the handler": `route {
		@new feature new-checkout on
		reverse_proxy @new {NEW}
		feature_flags
		reverse_proxy {OLD}
	}`,
	} {
		t.Run(name, func(t *testing.T) {
			handler := "feature_flags\n\t"
			if strings.Contains(routes, "route {") {
				handler = ""
			}
			s := startCaddy(t, globalOptions+`	feature_flags {
		flags_file {FLAGS}
		identity {http.request.header.X-User-Id} cookie
	}
}
http://127.0.0.1:{EDGE} {
	`+handler+routes+`
}
`, demoFlags)
			counts := map[string]int{}
			for i := range 400 {
				unit := "routing-unit-" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + itoa(i)
				_, e := s.get(t, "/", "Cookie: ff_uid="+unit)
				want := "old"
				if variantFor("new-checkout", unit, 2500) == "on" {
					want = "new"
				}
				if e.Backend != want {
					t.Fatalf("%s reached %s, want %s", unit, e.Backend, want)
				}
				counts[e.Backend]++
			}
			if _, e := s.get(t, "/", "X-User-Id: bob"); e.Backend != "new" {
				t.Errorf("beta tester bob reached %s", e.Backend)
			}
			t.Logf("%v", counts)
		})
	}
}

func itoa(i int) string {
	return strings.TrimLeft(string([]byte{byte('0' + i/1000%10), byte('0' + i/100%10), byte('0' + i/10%10), byte('0' + i%10)}), "0")
}

func TestKillSwitch(t *testing.T) {
	s := startCaddy(t, edgeCaddyfile, demoFlags)
	for i := range 50 {
		_, e := s.get(t, "/", "Cookie: ff_uid=kill-switch-"+itoa(i+1000))
		if got := e.Headers.Get("X-Feature-Recommendations"); got != "off" {
			t.Fatalf("killed flag served %s", got)
		}
	}
}

func TestIdentity(t *testing.T) {
	flags := `
flags:
  for-alice:
    rules: [{when: {user: {in: [alice-account]}}, serve: on}]
  rollout:
    rules: [{split: {on: 50, off: 50}}]
`
	s := startCaddy(t, globalOptions+`	feature_flags {
		flags_file {FLAGS}
		identity {http.request.header.X-User-Id} cookie
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags
	respond "{feature.for-alice} {feature.rollout} {feature.rollout.reason}"
}
`, flags)
	body := func(headers ...string) string { return s.body(t, headers...) }
	// Find a cookie and a user id that land in different rollout variants.
	cookie, user := "", ""
	for i := 0; cookie == "" || user == ""; i++ {
		u := "identity-unit-" + itoa(i+1)
		if variantFor("rollout", u, 5000) == "on" {
			user = u
		} else {
			cookie = u
		}
	}
	if got := body("Cookie: ff_uid=" + cookie); got != "off off SPLIT" {
		t.Errorf("cookie only: %q", got)
	}
	if got := body("Cookie: ff_uid="+cookie, "X-User-Id: "+user); got != "off on SPLIT" {
		t.Errorf("the header identity must beat the cookie: %q", got)
	}
	if got := body("Cookie: ff_uid=alice-account"); !strings.HasPrefix(got, "off ") {
		t.Errorf("a cookie-only visitor matched a user rule: %q", got)
	}
	if got := body("X-User-Id: alice-account"); !strings.HasPrefix(got, "on ") {
		t.Errorf("the logged-in user did not match a user rule: %q", got)
	}
}
