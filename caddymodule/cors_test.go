package caddymodule

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const corsFlags = "flags:\n  new-checkout: {client: true, rules: [{serve: on}]}\n"

func TestOFREPCORSHeaders(t *testing.T) {
	app := "http://app.example.com"
	s := startCaddy(t, globalOptions+`	feature_flags {
		flags_file {FLAGS}
		state_file {DIR}/state.json
	}
}
http://127.0.0.1:{EDGE} {
	handle /any/* {
		feature_flags_ofrep {
			cors *
		}
	}
	handle /creds/* {
		feature_flags_ofrep {
			cors `+app+` https://other.example.com
			cors_credentials
			cors_headers X-Api-Key
			cors_max_age 1h
		}
	}
	handle {
		feature_flags_ofrep
	}
}
`, corsFlags)
	send := func(method, path string, headers ...string) *http.Response {
		t.Helper()
		resp, _ := s.request(t, method, path, `{"context": {"targetingKey": "u1"}}`, headers...)
		return resp
	}
	bulk := "/ofrep/v1/evaluate/flags"

	// A preflight from an allowed origin, with credentials.
	resp := send("OPTIONS", "/creds"+bulk, "Origin: "+app, "Access-Control-Request-Method: POST", "Access-Control-Request-Headers: content-type,if-none-match")
	want := map[string]string{"Access-Control-Allow-Origin": app, "Access-Control-Allow-Credentials": "true", "Access-Control-Allow-Methods": "POST",
		"Access-Control-Allow-Headers": "Content-Type, If-None-Match, Authorization, X-Api-Key", "Access-Control-Max-Age": "3600", "Vary": "Origin"}
	if resp.StatusCode != 204 {
		t.Errorf("preflight: %d, want 204", resp.StatusCode)
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("preflight %s: %q, want %q", k, got, v)
		}
	}
	// The request itself: the origin echoed, ETag readable by the page.
	resp = send("POST", "/creds"+bulk, "Origin: "+app, "Content-Type: application/json")
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != app || resp.Header.Get("Access-Control-Expose-Headers") != "ETag" || resp.Header.Get("Vary") != "Origin" {
		t.Errorf("request: %d %v", resp.StatusCode, resp.Header)
	}
	// ETag polling across origins: the 304 carries the CORS headers too.
	resp = send("POST", "/creds"+bulk, "Origin: "+app, "If-None-Match: "+resp.Header.Get("ETag"))
	if resp.StatusCode != 304 || resp.Header.Get("Access-Control-Allow-Origin") != app {
		t.Errorf("poll: %d %v", resp.StatusCode, resp.Header)
	}
	// Another origin: its preflight is refused, saying why; its requests
	// get no CORS headers (the browser keeps the answer from the page).
	resp = send("OPTIONS", "/creds"+bulk, "Origin: https://evil.example.net", "Access-Control-Request-Method: POST")
	if resp.StatusCode != 403 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("a preflight from another origin: %d %v", resp.StatusCode, resp.Header)
	}
	resp = send("POST", "/creds"+bulk, "Origin: https://evil.example.net")
	if resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.Header.Get("Vary") != "Origin" {
		t.Errorf("a request from another origin: %v", resp.Header)
	}
	// Any origin, without credentials.
	resp = send("OPTIONS", "/any"+bulk, "Origin: https://anyone.example", "Access-Control-Request-Method: POST")
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("cors *: %d %v", resp.StatusCode, resp.Header)
	}
	// Without cors: a preflight is not an evaluation.
	resp = send("OPTIONS", bulk, "Origin: "+app, "Access-Control-Request-Method: POST")
	if resp.StatusCode != 405 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("no cors: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestOFREPCORSConfigRefused(t *testing.T) {
	for _, c := range []struct {
		cors OFREPCORS
		want string
	}{
		{OFREPCORS{}, "give the origins"},
		{OFREPCORS{Origins: []string{"app.example.com"}}, "give a scheme"},
		{OFREPCORS{Origins: []string{"https://app.example.com/path"}}, "give a scheme"},
		{OFREPCORS{Origins: []string{"*"}, Credentials: true}, "credentials need the origins named"},
		{OFREPCORS{Origins: []string{"https://a.example"}, Headers: []string{"bad header"}}, "not a header name"},
	} {
		if _, err := newCORS(&c.cors); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error saying %q", c.cors, err, c.want)
		}
	}
}

// A web app on one origin calls the edge's OFREP on another, in Chromium:
// the bulk evaluation with a JSON body (a preflight), its ETag read and
// sent back (304). A page on an origin not in the list is refused.
func TestOFREPFromAnotherOriginInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed: apt-get install chromium (.ci/run does)")
	}
	pagePort, otherPort := freePort(), freePort()
	s := startCaddy(t, strings.NewReplacer("PAGE", strconv.Itoa(pagePort), "OTHER", strconv.Itoa(otherPort)).Replace(globalOptions+`	feature_flags {
		flags_file {FLAGS}
		state_file {DIR}/state.json
	}
}
http://127.0.0.1:{EDGE} {
	feature_flags_ofrep {
		cors http://127.0.0.1:PAGE
	}
}
http://127.0.0.1:PAGE, http://127.0.0.1:OTHER {
	root * {DIR}
	file_server
}
`), corsFlags)
	page := `<!doctype html><html><body><pre id="out">pending</pre><script src="app.js"></script></body></html>`
	script := `(async () => {
  const url = "` + s.url + `/ofrep/v1/evaluate/flags";
  const init = (extra) => ({method: "POST", headers: Object.assign({"Content-Type": "application/json"}, extra),
                            body: JSON.stringify({context: {targetingKey: "user-1"}})});
  const out = document.getElementById("out");
  try {
    const first = await fetch(url, init({}));
    const body = await first.json();
    const etag = first.headers.get("ETag");
    const second = await fetch(url, init({"If-None-Match": etag}));
    out.textContent = "status=" + first.status + " etag=" + (etag ? "yes" : "no") + " flags=" +
      body.flags.map(f => f.key + ":" + f.variant).join(",") + " poll=" + second.status;
  } catch (e) {
    out.textContent = "refused: " + e.name;
  }
  document.body.dataset.done = "1";
})();`
	os.WriteFile(filepath.Join(s.dir, "page.html"), []byte(page), 0o644)
	os.WriteFile(filepath.Join(s.dir, "app.js"), []byte(script), 0o644)
	result := regexp.MustCompile(`<pre id="out">([^<]*)</pre>`)
	load := func(origin int) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir="+t.TempDir(),
			"--virtual-time-budget=10000", "--dump-dom", "http://127.0.0.1:"+strconv.Itoa(origin)+"/page.html").Output()
		if err != nil {
			t.Fatalf("chromium: %v", err)
		}
		if !strings.Contains(string(out), `data-done="1"`) {
			t.Fatalf("the page's script did not finish:\n%s", out)
		}
		m := result.FindStringSubmatch(string(out))
		if m == nil {
			t.Fatalf("no result in the page:\n%s", out)
		}
		return m[1]
	}
	if got := load(pagePort); got != "status=200 etag=yes flags=new-checkout:on poll=304" {
		t.Errorf("from the allowed origin: %q", got)
	}
	if got := load(otherPort); got != "refused: TypeError" {
		t.Errorf("from an origin not in the list: %q, want the browser to refuse", got)
	}
}
