package caddymodule

import (
	"fmt"
	"net/netip"
	"net/textproto"
	"strings"
	"time"

	"github.com/edgeflags/edgeflags/geoip"
	"github.com/edgeflags/edgeflags/rules"
)

// ExplainContext is a request described by hand, for the admin API's
// explain route and `caddy flags explain`: what a request would get.
type ExplainContext struct {
	// Unit is the identity bucketed on; when empty, User is.
	Unit string `json:"unit,omitempty"`
	// User is a logged-in user's id (the user attribute).
	User      string            `json:"user,omitempty"`
	Country   string            `json:"country,omitempty"`
	IP        string            `json:"ip,omitempty"`
	Host      string            `json:"host,omitempty"`
	Path      string            `json:"path,omitempty"`
	Method    string            `json:"method,omitempty"`
	UserAgent string            `json:"user_agent,omitempty"`
	Headers   map[string]string `json:"headers,omitempty"`
	Cookies   map[string]string `json:"cookies,omitempty"`
	Query     map[string]string `json:"query,omitempty"`
	// Now is the time to evaluate at, RFC 3339; default: now.
	Now       string            `json:"now,omitempty"`
	Bot       bool              `json:"bot,omitempty"`
	Overrides map[string]string `json:"overrides,omitempty"`
}

// Explanation is one flag's answer with why.
type Explanation struct {
	Flag    string `json:"flag"`
	Variant string `json:"variant"`
	Reason  string `json:"reason"`
	Rule    string `json:"rule,omitempty"`
	Bucket  *int   `json:"bucket,omitempty"`
}

// explainRequest is an ExplainContext as a rules.Request.
type explainRequest struct {
	c       ExplainContext
	loc     geoip.Location
	ip      netip.Addr
	now     time.Time
	headers map[string]string
}

// newExplainRequest checks the context; geo, when set, finds the country of IP.
func newExplainRequest(c ExplainContext, geo func(netip.Addr) geoip.Location) (*explainRequest, error) {
	r := &explainRequest{c: c, loc: geoip.Unknown, now: time.Now(), headers: map[string]string{}}
	if c.IP != "" {
		ip, err := netip.ParseAddr(c.IP)
		if err != nil {
			return nil, fmt.Errorf("ip %q is not an IP address", c.IP)
		}
		r.ip = ip
		if geo != nil {
			r.loc = geo(ip)
		}
	}
	if c.Country != "" {
		loc, ok := geoip.CountryLocation(c.Country)
		if !ok && !strings.EqualFold(c.Country, "XX") {
			return nil, fmt.Errorf("country %q is not an ISO 3166-1 alpha-2 code", c.Country)
		}
		r.loc = loc
	}
	if c.Now != "" {
		t, err := time.Parse(time.RFC3339, c.Now)
		if err != nil {
			return nil, fmt.Errorf("now %q: want RFC 3339, e.g. 2026-12-01T09:00:00Z", c.Now)
		}
		r.now = t
	}
	for k, v := range c.Headers {
		r.headers[textproto.CanonicalMIMEHeaderKey(k)] = v
	}
	return r, nil
}

func (r *explainRequest) Unit() string {
	if r.c.Unit != "" {
		return r.c.Unit
	}
	return r.c.User
}

func (r *explainRequest) Value(k rules.Kind, name string) string {
	switch k {
	case rules.KindUser:
		return r.c.User
	case rules.KindCountry:
		return r.loc.Country
	case rules.KindContinent:
		return r.loc.Continent
	case rules.KindEU:
		if r.loc.EU {
			return "true"
		}
		return "false"
	case rules.KindHost:
		return strings.ToLower(r.c.Host)
	case rules.KindPath:
		return r.c.Path
	case rules.KindMethod:
		return strings.ToUpper(r.c.Method)
	case rules.KindUserAgent:
		return r.c.UserAgent
	case rules.KindHeader:
		return r.headers[name]
	case rules.KindCookie:
		return r.c.Cookies[name]
	case rules.KindQuery:
		return r.c.Query[name]
	}
	return ""
}

func (r *explainRequest) IP() netip.Addr { return r.ip }
func (r *explainRequest) Now() time.Time { return r.now }
func (r *explainRequest) Bot() bool      { return r.c.Bot }
func (r *explainRequest) Override(flag string) (string, bool) {
	v, ok := r.c.Overrides[flag]
	return v, ok
}

// explain evaluates every flag of set for the request.
func explain(set *rules.Set, req rules.Request) []Explanation {
	ev := set.NewEvaluation()
	ev.Reset(set, req)
	out := make([]Explanation, set.Len())
	for i := range out {
		res := ev.Result(i)
		out[i] = Explanation{Flag: set.Flag(i).Key, Variant: res.Variant, Reason: res.Reason.String(), Rule: set.RuleName(i, res.Rule)}
		if res.Bucket >= 0 {
			b := res.Bucket
			out[i].Bucket = &b
		}
	}
	return out
}
