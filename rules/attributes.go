package rules

import (
	"net/netip"
	"time"
)

// Kind is a request attribute that conditions can test (DESIGN.md §5).
type Kind uint8

// The attributes a [Request] provides. Header, cookie and query take a name.
const (
	KindUser      Kind = iota + 1 // the identity, only when it came from a logged-in user
	KindCountry                   // ISO 3166-1 alpha-2, upper case; XX when unknown
	KindContinent                 // AF AN AS EU NA OC SA; XX when unknown
	KindEU                        // "true" or "false"
	KindHost                      // lower case, without port
	KindPath                      // the URL path
	KindMethod                    // upper case
	KindUserAgent                 // the User-Agent header
	KindHeader                    // a request header; name is in canonical form (X-Plan)
	KindCookie                    // a cookie by name
	KindQuery                     // a query parameter by name

	// These are answered by the engine itself, never by a Request.
	kindIP
	kindSegment
	kindFlag
	kindNow
)

// Request is what evaluation knows about one request. Every method is called
// lazily — only when a flag's rules need the answer — and at most once per
// evaluation for Unit and Bot, so implementations may compute on demand.
type Request interface {
	// Unit returns the identity to bucket on (DESIGN.md §4); "" when the
	// request has none, in which case split rules are skipped.
	Unit() string
	// Value returns a string attribute; name is set for KindHeader,
	// KindCookie and KindQuery. A missing attribute is "".
	Value(kind Kind, name string) string
	// IP returns the client address; the zero Addr when unknown.
	IP() netip.Addr
	// Now returns the time conditions on `now` compare against.
	Now() time.Time
	// Bot reports whether the client is a crawler: it gets every flag's default.
	Bot() bool
	// Override returns a QA override for the flag, if the request carries a
	// trusted one. A variant the flag does not have is ignored.
	Override(flag string) (variant string, ok bool)
}

// plainAttributes are attributes without a name part, as written in files.
var plainAttributes = map[string]Kind{
	"user":       KindUser,
	"country":    KindCountry,
	"continent":  KindContinent,
	"eu":         KindEU,
	"ip":         kindIP,
	"host":       KindHost,
	"path":       KindPath,
	"method":     KindMethod,
	"user_agent": KindUserAgent,
	"segment":    kindSegment,
	"now":        kindNow,
}

var namedAttributes = map[string]Kind{
	"header.": KindHeader,
	"cookie.": KindCookie,
	"query.":  KindQuery,
	"flag.":   kindFlag,
}

var attributeNames = []string{
	"user", "country", "continent", "eu", "ip", "host", "path", "method", "user_agent",
	"header.<Name>", "cookie.<name>", "query.<name>", "segment", "flag.<key>", "now",
}
