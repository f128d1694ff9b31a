package caddymodule

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"
)

const overrideSecret = "a-test-override-secret-of-32-bytes!!"

func TestOverrides(t *testing.T) {
	t.Setenv("FF_TEST_OVERRIDE_SECRET", overrideSecret)
	s := startCaddy(t, globalOptions+`	feature_flags {
		flags_file {FLAGS}
		override_from 127.0.0.2/32
		override_secret {env.FF_TEST_OVERRIDE_SECRET}
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags
	request_header X-Reason {feature.new-checkout.reason}
	reverse_proxy {NEW}
}
`, demoFlags)
	valid, _ := SignOverride([]byte(overrideSecret), map[string]string{"new-checkout": "on", "recommendations": "on"}, time.Now().Add(time.Hour))
	expired, _ := SignOverride([]byte(overrideSecret), map[string]string{"new-checkout": "on"}, time.Now().Add(-time.Second))
	otherKey, _ := SignOverride([]byte("another-secret-of-at-least-32-bytes!!"), map[string]string{"new-checkout": "on"}, time.Now().Add(time.Hour))
	tampered := strings.Replace(valid, "new-checkout=on", "new-checkout=off", 1)
	cookie := base64.RawURLEncoding.EncodeToString([]byte(valid))
	office := dialFrom("127.0.0.2")
	unit := "Cookie: ff_uid=" + unitWith("new-checkout", "off")
	for _, tc := range []struct {
		name   string
		client *http.Client
		header string
		want   string // new-checkout's variant and reason
	}{
		{"no override", nil, "", "off SPLIT"},
		{"plain, from outside override_from", nil, "Feature-Override: new-checkout=on", "off SPLIT"},
		{"plain, from override_from", office, "Feature-Override: new-checkout=on", "on OVERRIDE"},
		{"plain with parameters and spacing", office, "Feature-Override: dark-mode=dark;x=1,   new-checkout=on", "on OVERRIDE"},
		{"signed", nil, "Feature-Override: " + valid, "on OVERRIDE"},
		{"signed, in the cookie", nil, unit + "; ff_override=" + cookie, "on OVERRIDE"},
		{"expired", nil, "Feature-Override: " + expired, "off SPLIT"},
		{"tampered", nil, "Feature-Override: " + tampered, "off SPLIT"},
		{"signed with another key", nil, "Feature-Override: " + otherKey, "off SPLIT"},
		{"a variant the flag does not have", office, "Feature-Override: new-checkout=maybe", "off SPLIT"},
		{"not a dictionary", office, "Feature-Override: new-checkout=(on off)", "off SPLIT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", s.url+"/", nil)
			req.Header.Set("Cookie", strings.TrimPrefix(unit, "Cookie: "))
			if tc.header != "" {
				k, v, _ := strings.Cut(tc.header, ": ")
				req.Header.Set(k, v)
			}
			client := s.client
			if tc.client != nil {
				client = tc.client
			}
			s.client, client = client, s.client
			_, e := s.do(t, req)
			s.client = client
			if got := e.Headers.Get("X-Feature-New-Checkout") + " " + e.Headers.Get("X-Reason"); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
			if v := e.Headers.Get("Feature-Override"); v != "" {
				t.Errorf("the backend saw Feature-Override: %s", v)
			}
			if c := e.Headers.Get("Cookie"); strings.Contains(c, "ff_override") || !strings.Contains(c, strings.TrimPrefix(unit, "Cookie: ")) {
				t.Errorf("the backend's Cookie header: %q", c)
			}
			// The kill switch beats an override.
			if got := e.Headers.Get("X-Feature-Recommendations"); got != "off" {
				t.Errorf("a killed flag was overridden: %s", got)
			}
		})
	}
}

func TestParseDictionary(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // key=value|kind … or an error marker
	}{
		{"a=on", "a=on"},
		{"  a=on ,b=off;p=1,   c  ", "a=on b=off c=?1"},
		{`a="quo\"ted", b=:aGk=:, c=?0, d=-12`, `a=quo"ted b=aGk= c=?0 d=-12`},
		{"ff.exp=1767225600, ff.sig=:AAAA:", "ff.exp=1767225600 ff.sig=AAAA"},
		{"A=on", "error"},
		{"a=on,", "error"},
		{"a=(on off)", "error"},
		{"a=1.5", "error"},
		{`a="unterminated`, "error"},
		{"a=on b=off", "error"},
		{"", ""},
	} {
		ms, err := parseDictionary(tc.in)
		var got []string
		for _, m := range ms {
			got = append(got, m.key+"="+m.value)
		}
		g := strings.Join(got, " ")
		if err != nil {
			g = "error"
		}
		if g != tc.want {
			t.Errorf("%q: got %q (%v), want %q", tc.in, g, err, tc.want)
		}
	}
}

// FuzzParseDictionary: the override parser must never panic, and what it
// accepts must survive verification without panicking either.
func FuzzParseDictionary(f *testing.F) {
	valid, _ := SignOverride([]byte(overrideSecret), map[string]string{"a": "on"}, time.Unix(2e9, 0))
	for _, s := range []string{"a=on", valid, `a="x\"y", b=:AA==:;p, c=?1, d=-5`, "a=(b c)", "*=*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := parseDictionary(s)
		if err != nil {
			return
		}
		for _, m := range ms {
			if !isKey(m.key) {
				t.Fatalf("accepted key %q", m.key)
			}
		}
		verifyOverride([]byte(overrideSecret), ms, time.Unix(1e9, 0))
	})
}
