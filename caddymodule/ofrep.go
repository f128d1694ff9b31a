package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/zeebo/xxh3"

	"github.com/edgeflags/edgeflags/rules"
)

func init() {
	caddy.RegisterModule(new(OFREPHandler))
	httpcaddyfile.RegisterHandlerDirective("feature_flags_ofrep", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		o := new(OFREPHandler)
		return o, o.UnmarshalCaddyfile(h.Dispenser)
	})
	httpcaddyfile.RegisterDirectiveOrder("feature_flags_ofrep", httpcaddyfile.Before, "respond")
}

// OFREPHandler serves the OpenFeature Remote Evaluation Protocol for the
// flags marked client: true, so that a browser using an OpenFeature web
// SDK gets exactly the answers its backends get:
//
//	POST …/ofrep/v1/evaluate/flags/{key}   one flag
//	POST …/ofrep/v1/evaluate/flags         every client flag, with ETag / If-None-Match
//
// The context's targetingKey is the identity; without one, the request's
// own identity (cookie, or a logged-in user) is used, and a visitor without
// a cookie gets one. The country always comes from the request, never from
// the body; context keys named like attributes (header.X — any case —,
// cookie.x, query.x, path, host, method, user_agent) supply those
// attributes. A flag whose variants are exactly off and on has a boolean
// value.
//
// Reasons are OpenFeature's: a killed flag is STATIC (everyone gets its
// off variant; OpenFeature SDKs answer DISABLED with the caller's code
// default instead), a crawler's is DEFAULT and a QA override's
// TARGETING_MATCH; edgeflags' own reason is then in metadata.reason.
type OFREPHandler struct {
	// CookieName overrides the global identity cookie name for this site.
	CookieName string `json:"cookie_name,omitempty"`
	// CookieDomain overrides the global identity cookie domain for this site.
	CookieDomain string `json:"cookie_domain,omitempty"`
	// CORS lets web apps on other origins call this endpoint. Off by
	// default: only same-origin pages can.
	CORS *OFREPCORS `json:"cors,omitempty"`

	app  *App
	cors *cors
}

// CaddyModule returns the Caddy module information.
func (*OFREPHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.feature_flags_ofrep",
		New: func() caddy.Module { return new(OFREPHandler) },
	}
}

// Provision finds the feature_flags app.
func (o *OFREPHandler) Provision(ctx caddy.Context) error {
	app, err := appFrom(ctx, "the feature_flags_ofrep directive")
	if err != nil {
		return err
	}
	o.app = app
	app.addCookieSite(ctx, firstNonEmpty(o.CookieName, app.cookie.name))
	if o.CORS != nil {
		if o.cors, err = newCORS(o.CORS); err != nil {
			return err
		}
	}
	return nil
}

// UnmarshalCaddyfile sets up the handler:
//
//	feature_flags_ofrep {
//		cookie_name   <name>
//		cookie_domain <domain>
//		cors          <origin>... | *    # web apps on these origins may call
//		cors_credentials                 # and send the identity cookie
//		cors_headers  <header>...        # besides Content-Type, If-None-Match, Authorization
//		cors_max_age  <duration>         # of a preflight in the browser; default 10m
//	}
func (o *OFREPHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	corsConfig := func() *OFREPCORS {
		if o.CORS == nil {
			o.CORS = &OFREPCORS{}
		}
		return o.CORS
	}
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "cookie_name", "cookie_domain":
			dst := map[string]*string{"cookie_name": &o.CookieName, "cookie_domain": &o.CookieDomain}[opt]
			if !d.AllArgs(dst) {
				return d.ArgErr()
			}
		case "cors":
			c := corsConfig()
			c.Origins = append(c.Origins, d.RemainingArgs()...)
			if len(c.Origins) == 0 {
				return d.Errf("cors takes the origins allowed, e.g. cors https://app.example.com (or * for any)")
			}
		case "cors_credentials":
			if d.NextArg() {
				return d.ArgErr()
			}
			corsConfig().Credentials = true
		case "cors_headers":
			c := corsConfig()
			c.Headers = append(c.Headers, d.RemainingArgs()...)
		case "cors_max_age":
			dur, err := parseDurationArg(d)
			if err != nil {
				return err
			}
			corsConfig().MaxAge = dur
		default:
			return d.Errf("unknown feature_flags_ofrep option %q: options are cookie_name, cookie_domain, cors, cors_credentials, cors_headers, cors_max_age", opt)
		}
	}
	return nil
}

const ofrepPath = "/ofrep/v1/evaluate/flags"

// ofrepResult is an evaluationSuccess, or an evaluationFailure / flagNotFound.
type ofrepResult struct {
	Key          string         `json:"key,omitempty"`
	Reason       string         `json:"reason,omitempty"`
	Variant      string         `json:"variant,omitempty"`
	Value        any            `json:"value,omitempty"`
	Metadata     map[string]any `json:"metadata,omitempty"`
	ErrorCode    string         `json:"errorCode,omitempty"`
	ErrorDetails string         `json:"errorDetails,omitempty"`
}

func (o *OFREPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	i := strings.Index(r.URL.Path, ofrepPath)
	if i < 0 {
		return next.ServeHTTP(w, r)
	}
	rest := r.URL.Path[i+len(ofrepPath):]
	bulk := rest == "" || rest == "/"
	key := strings.TrimPrefix(rest, "/")
	if !bulk && !strings.HasPrefix(rest, "/") {
		return next.ServeHTTP(w, r) // …/evaluate/flagsX: not ours
	}
	if o.cors != nil {
		if answered, err := o.cors.handle(w, r); answered {
			return err
		}
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return writeStatusJSON(w, http.StatusMethodNotAllowed, ofrepResult{Key: key, ErrorCode: "GENERAL", ErrorDetails: "OFREP evaluations are POST requests"})
	}
	context, errCode, details := readOFREPContext(r)
	if errCode != "" {
		if bulk {
			key = ""
		}
		return writeStatusJSON(w, http.StatusBadRequest, ofrepResult{Key: key, ErrorCode: errCode, ErrorDetails: details})
	}

	app := o.app
	s := stateOf(r)
	if s == nil {
		s = newState(app, r, firstNonEmpty(o.CookieName, app.cookie.name))
		stripSpoofed(r, app.prefixFold, nil)
	}
	if _, given := context["targetingKey"]; !given {
		// The request's own identity is the unit: a first visit gets one.
		// With a targetingKey, nothing is stored on the device.
		if id := s.mintCookie(w, firstNonEmpty(o.CookieName, app.cookie.name), firstNonEmpty(o.CookieDomain, app.cookie.domain)); id != "" {
			s.cookieID = id
		}
	}
	req := &ofrepRequest{requestState: s, context: context}
	ev := s.set.NewEvaluation()
	ev.Reset(s.set, req)

	if !bulk {
		idx, ok := s.set.Index(key)
		if !ok || !s.set.Flag(idx).Client {
			return writeStatusJSON(w, http.StatusNotFound, ofrepResult{Key: key, ErrorCode: "FLAG_NOT_FOUND",
				ErrorDetails: fmt.Sprintf("flag %q does not exist or is not served to clients (client: true)", key)})
		}
		res := ofrepSuccess(s.set, ev, idx)
		res.Metadata["version"] = s.set.Version
		return writeStatusJSON(w, http.StatusOK, res)
	}
	// The flag set's version is the response's, not each flag's: an
	// OpenFeature web provider compares flags one by one, and a version
	// in each would make every change look like a change of every flag.
	out := struct {
		Flags    []ofrepResult  `json:"flags"`
		Metadata map[string]any `json:"metadata"`
	}{Flags: []ofrepResult{}, Metadata: map[string]any{"version": s.set.Version}}
	for idx := range s.set.Len() {
		if s.set.Flag(idx).Client {
			out.Flags = append(out.Flags, ofrepSuccess(s.set, ev, idx))
		}
	}
	body, _ := json.Marshal(out)
	etag := fmt.Sprintf(`"%016x"`, xxh3.Hash(body))
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "private, no-cache")
	if etagMatches(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(append(body, '\n'))
	return err
}

func ofrepSuccess(set *rules.Set, ev *rules.Evaluation, idx int) ofrepResult {
	f := set.Flag(idx)
	res := ev.Result(idx)
	var value any = res.Variant
	if len(f.Variants) == 2 && slices.Contains(f.Variants, "off") && slices.Contains(f.Variants, "on") {
		value = res.Variant == "on"
	}
	meta := map[string]any{}
	if res.Bucket >= 0 {
		meta["bucket"] = res.Bucket // the identity's bucket for this flag (the hashing contract), for debugging splits
	}
	reason := ofrepReasons[res.Reason]
	if reason == "" {
		reason = res.Reason.String()
	} else {
		meta["reason"] = res.Reason.String()
	}
	return ofrepResult{Key: f.Key, Reason: reason, Variant: res.Variant, Value: value, Metadata: meta}
}

// ofrepReasons maps the reasons OpenFeature has no word for, or gives
// another meaning: its SDKs answer DISABLED with the caller's code default,
// while a killed flag serves its off variant to everyone — a STATIC value.
// A crawler gets the flag's default (DEFAULT); a QA override targets this
// request (TARGETING_MATCH). STATIC, TARGETING_MATCH, SPLIT and DEFAULT are
// OpenFeature's own and pass as they are.
var ofrepReasons = map[rules.Reason]string{
	rules.ReasonDisabled: "STATIC",
	rules.ReasonBot:      "DEFAULT",
	rules.ReasonOverride: "TARGETING_MATCH",
}

// readOFREPContext reads {"context": {…}}; an empty body is an empty context.
func readOFREPContext(r *http.Request) (map[string]any, string, string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody+1))
	if err != nil || len(body) > maxAdminBody {
		return nil, "PARSE_ERROR", "the body could not be read or is larger than 1 MiB"
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, "", ""
	}
	var req struct {
		Context json.RawMessage `json:"context"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, "PARSE_ERROR", "the body is not JSON: " + err.Error()
	}
	if len(req.Context) == 0 || string(req.Context) == "null" {
		return nil, "", ""
	}
	var ctx map[string]any
	if err := json.Unmarshal(req.Context, &ctx); err != nil {
		return nil, "INVALID_CONTEXT", "context must be a JSON object"
	}
	if tk, ok := ctx["targetingKey"]; ok {
		s, isStr := tk.(string)
		switch {
		case !isStr:
			return nil, "INVALID_CONTEXT", "targetingKey must be a string"
		case s == "":
			return nil, "TARGETING_KEY_MISSING", "targetingKey is empty: give the user's identity, or leave it out to use the request's own"
		}
	}
	// Header names are case-insensitive: header.x-plan is header.X-Plan.
	for k, v := range ctx {
		if name, ok := strings.CutPrefix(k, "header."); ok {
			delete(ctx, k)
			ctx["header."+textproto.CanonicalMIMEHeaderKey(name)] = v
		}
	}
	return ctx, "", ""
}

func etagMatches(ifNoneMatch, etag string) bool {
	for _, t := range strings.Split(ifNoneMatch, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

func writeStatusJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// ofrepRequest is the request's own attributes, with the evaluation
// context's targetingKey as identity and its attribute-named keys.
type ofrepRequest struct {
	*requestState
	context map[string]any
}

func (q *ofrepRequest) Unit() string {
	if tk, ok := q.context["targetingKey"].(string); ok {
		return tk
	}
	return q.requestState.Unit()
}

// contextAttributes are the attributes an evaluation context may supply:
// the client could set them on its own requests anyway. user, country,
// continent, eu and ip never come from the body.
var contextAttributes = map[rules.Kind]string{rules.KindPath: "path", rules.KindHost: "host", rules.KindMethod: "method", rules.KindUserAgent: "user_agent"}

func (q *ofrepRequest) Value(kind rules.Kind, name string) string {
	var key string
	switch kind {
	case rules.KindHeader:
		key = "header." + name
	case rules.KindCookie:
		key = "cookie." + name
	case rules.KindQuery:
		key = "query." + name
	default:
		key = contextAttributes[kind]
	}
	if key != "" {
		if v, ok := q.context[key]; ok {
			switch v := v.(type) {
			case string:
				return v
			case float64, bool:
				return fmt.Sprint(v)
			}
		}
	}
	return q.requestState.Value(kind, name)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*OFREPHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*OFREPHandler)(nil)
	_ caddyfile.Unmarshaler       = (*OFREPHandler)(nil)
	_ rules.Request               = (*ofrepRequest)(nil)
)
