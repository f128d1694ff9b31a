package caddymodule

import (
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// OFREPCORS lets web apps on other origins call feature_flags_ofrep from a
// browser (the OpenFeature web provider on app.example.com, the edge's
// OFREP on flags.example.com), per the Fetch standard's CORS protocol.
type OFREPCORS struct {
	// Origins allowed to call, e.g. https://app.example.com (scheme, host
	// and port; no path), or "*" for any origin (then without credentials).
	Origins []string `json:"origins"`
	// Credentials lets the browser send and receive the identity cookie
	// (fetch with credentials: "include"). Needs explicit origins. Without
	// it, give the context a targetingKey: no cookie crosses origins.
	Credentials bool `json:"credentials,omitempty"`
	// Headers the browser may send besides Content-Type, If-None-Match
	// and Authorization, e.g. X-Api-Key.
	Headers []string `json:"headers,omitempty"`
	// MaxAge is how long a browser may cache a preflight's answer.
	// Default: 10m.
	MaxAge caddy.Duration `json:"max_age,omitempty"`
}

// corsHeaders are the request headers an OFREP client sends that are not
// CORS-safelisted: JSON bodies, ETag polling of the bulk evaluation, and
// a token when the provider is configured with one.
var corsHeaders = []string{"Content-Type", "If-None-Match", "Authorization"}

// cors is OFREPCORS checked and ready for requests.
type cors struct {
	any          bool
	origins      []string // lower case
	credentials  bool
	allowHeaders string
	maxAge       string
}

func newCORS(c *OFREPCORS) (*cors, error) {
	if len(c.Origins) == 0 {
		return nil, fmt.Errorf("feature_flags_ofrep cors: give the origins allowed, e.g. cors https://app.example.com (or * for any)")
	}
	out := &cors{credentials: c.Credentials}
	for _, o := range c.Origins {
		if o == "*" {
			out.any = true
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return nil, fmt.Errorf("feature_flags_ofrep cors origin %q: give a scheme, a host and an optional port, e.g. https://app.example.com", o)
		}
		out.origins = append(out.origins, strings.ToLower(u.Scheme+"://"+u.Host))
	}
	if out.any && out.credentials {
		return nil, fmt.Errorf("feature_flags_ofrep cors: credentials need the origins named (browsers refuse credentials with *): list them, or drop cors_credentials")
	}
	headers := slices.Clone(corsHeaders)
	for _, h := range c.Headers {
		if !validHeaderName(h) {
			return nil, fmt.Errorf("feature_flags_ofrep cors_headers %q is not a header name", h)
		}
		headers = append(headers, textproto.CanonicalMIMEHeaderKey(h))
	}
	out.allowHeaders = strings.Join(headers, ", ")
	maxAge := time.Duration(c.MaxAge)
	if maxAge == 0 {
		maxAge = 10 * time.Minute
	}
	out.maxAge = strconv.Itoa(int(maxAge.Seconds()))
	return out, nil
}

func (c *cors) allows(origin string) bool {
	return c.any || slices.Contains(c.origins, strings.ToLower(origin))
}

// handle adds the CORS headers a request's answer needs, and answers a
// preflight itself; it reports whether it answered.
func (c *cors) handle(w http.ResponseWriter, r *http.Request) (bool, error) {
	h := w.Header()
	h.Add("Vary", "Origin") // the answer depends on it, for every cache between
	origin := r.Header.Get("Origin")
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	if origin == "" {
		return false, nil // not a cross-origin request
	}
	if !c.allows(origin) {
		if preflight {
			return true, writeStatusJSON(w, http.StatusForbidden, ofrepResult{ErrorCode: "GENERAL",
				ErrorDetails: "origin " + origin + " may not call this OFREP endpoint: add it to the cors origins of feature_flags_ofrep"})
		}
		return false, nil // served, but the browser keeps the answer from the page
	}
	if c.any && !c.credentials {
		h.Set("Access-Control-Allow-Origin", "*")
	} else {
		h.Set("Access-Control-Allow-Origin", origin)
	}
	if c.credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if !preflight {
		h.Set("Access-Control-Expose-Headers", "ETag") // the web provider polls with If-None-Match
		return false, nil
	}
	h.Set("Access-Control-Allow-Methods", http.MethodPost)
	h.Set("Access-Control-Allow-Headers", c.allowHeaders)
	h.Set("Access-Control-Max-Age", c.maxAge)
	w.WriteHeader(http.StatusNoContent)
	return true, nil
}
