package caddymodule

import (
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("feature_flags", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("feature_flags", parseHandler)
	httpcaddyfile.RegisterDirectiveOrder("feature_flags", httpcaddyfile.After, "forward_auth")
}

// parseGlobalOption reads the feature_flags global block into the app.
func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "feature_flags", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from the feature_flags global block:
//
//	{
//		feature_flags {
//			flags_file     <path>...               # repeatable; YAML or JSON; watched
//			flags_check_interval <duration>        # default 500ms
//			flags_url      <url> [<interval>]      # default interval 30s; cached for restarts
//			flags_url_redirects same_host|any      # default same_host: same host, no HTTPS → HTTP
//			allow_empty_flags                      # let a source that defined flags define none
//			state_file     <path>                  # the admin API's runtime layer
//			state_storage  [<prefix>] {            # or in Caddy's storage, shared by a fleet
//				node <name>                    # this node's name in it (default: host-pid)
//			}
//			geoip          <path> [<check_interval>]
//			identity       <placeholder|cookie>... # default: cookie
//			cookie         [<name>] {
//				max_age    <duration>              # default 365d
//				domain     <domain>
//				secure     auto|always|never       # default auto: Secure on TLS
//				same_site  lax|strict|none         # default lax
//				consent    <cookie> [<value regex>]
//			}
//			header_prefix  <prefix>                # default X-Feature-
//			country_header <header>                # e.g. CF-IPCountry; trusted proxies only
//			override_from  <cidr>...               # QA overrides honoured from these networks
//			override_secret <secret>               # or signed with this ({env.*} allowed)
//			override_cookie <name>                 # default ff_override
//			bots           <token>... | off        # crawler user agent pieces; default: a common list
//			failure_statuses <status>...          # what counts as a failure for observed flags; default 5xx
//			exposures {
//				key    <secret>                    # HMAC key for the identity ({env.*} allowed)
//				sample [<flag>] <percent>          # default 100; per flag when a key is given
//				window <duration>                  # once per user, flag and variant per window; default 24h (UTC days)
//				max_entries <n>                    # memory bound, 8 bytes an entry at 3/4 full; default 3000000
//				every_request                      # a record per request instead (no dedupe, no sample ratio check)
//			}
//		}
//	}
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "flags_file":
			files := d.RemainingArgs()
			if len(files) == 0 {
				return d.ArgErr()
			}
			a.FlagsFiles = append(a.FlagsFiles, files...)
		case "flags_check_interval":
			dur, err := parseDurationArg(d)
			if err != nil {
				return err
			}
			a.FlagsCheckInterval = dur
		case "flags_url":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.Errf("flags_url takes a URL and an optional poll interval, e.g. flags_url https://flags.example.com/flags.yaml 30s")
			}
			a.FlagsURL = args[0]
			if len(args) == 2 {
				dur, err := caddy.ParseDuration(args[1])
				if err != nil {
					return d.Errf("flags_url interval %q: %v", args[1], err)
				}
				a.FlagsURLInterval = caddy.Duration(dur)
			}
		case "flags_url_redirects":
			if !d.AllArgs(&a.FlagsURLRedirects) {
				return d.ArgErr()
			}
		case "allow_empty_flags":
			if d.NextArg() {
				return d.ArgErr()
			}
			a.AllowEmptyFlags = true
		case "state_file":
			if !d.AllArgs(&a.StateFile) {
				return d.ArgErr()
			}
		case "state_storage":
			a.StateStorage = &StateStorage{}
			if d.NextArg() {
				a.StateStorage.Prefix = d.Val()
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				if d.Val() != "node" || !d.AllArgs(&a.StateStorage.Node) {
					return d.Errf("state_storage: the block takes node <name>, got %q", d.Val())
				}
			}
		case "geoip":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.Errf("geoip takes a path and an optional check interval, e.g. geoip GeoLite2-Country.mmdb 30s")
			}
			a.GeoIP = args[0]
			if len(args) == 2 {
				dur, err := caddy.ParseDuration(args[1])
				if err != nil {
					return d.Errf("geoip check interval %q: %v", args[1], err)
				}
				a.GeoIPCheckInterval = caddy.Duration(dur)
			}
		case "identity":
			a.Identity = d.RemainingArgs()
			if len(a.Identity) == 0 {
				return d.ArgErr()
			}
		case "cookie":
			c, err := parseCookie(d)
			if err != nil {
				return err
			}
			a.Cookie = c
		case "header_prefix":
			if !d.AllArgs(&a.HeaderPrefix) {
				return d.ArgErr()
			}
		case "country_header":
			if !d.AllArgs(&a.CountryHeader) {
				return d.ArgErr()
			}
		case "override_from":
			a.OverrideFrom = append(a.OverrideFrom, d.RemainingArgs()...)
			if len(a.OverrideFrom) == 0 {
				return d.ArgErr()
			}
		case "override_secret":
			if !d.AllArgs(&a.OverrideSecret) {
				return d.ArgErr()
			}
		case "override_cookie":
			if !d.AllArgs(&a.OverrideCookie) {
				return d.ArgErr()
			}
		case "bots":
			a.Bots = d.RemainingArgs()
			if len(a.Bots) == 0 {
				return d.Errf("bots takes user agent pieces, or off")
			}
		case "failure_statuses":
			a.FailureStatuses = d.RemainingArgs()
			if len(a.FailureStatuses) == 0 {
				return d.Errf("failure_statuses takes status codes and classes, e.g. failure_statuses 5xx 429")
			}
		case "exposures":
			x, err := parseExposures(d)
			if err != nil {
				return err
			}
			a.Exposures = x
		default:
			return d.Errf("unknown feature_flags option %q: options are flags_file, flags_check_interval, flags_url, flags_url_redirects, allow_empty_flags, state_file, state_storage, geoip, identity, cookie, header_prefix, country_header, override_from, override_secret, override_cookie, bots, exposures, failure_statuses", d.Val())
		}
	}
	return nil
}

func parseDurationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	var v string
	if !d.AllArgs(&v) {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, d.Errf("%s %q: %v", d.Val(), v, err)
	}
	return caddy.Duration(dur), nil
}

func parseExposures(d *caddyfile.Dispenser) (*Exposures, error) {
	x := &Exposures{}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(1) {
		switch d.Val() {
		case "key":
			if !d.AllArgs(&x.Key) {
				return nil, d.ArgErr()
			}
		case "sample":
			args := d.RemainingArgs()
			var pct float64
			var err error
			if len(args) > 0 {
				pct, err = strconv.ParseFloat(strings.TrimSuffix(args[len(args)-1], "%"), 64)
			}
			if len(args) < 1 || len(args) > 2 || err != nil {
				return nil, d.Errf("sample takes an optional flag key and a percentage, e.g. sample 10 or sample new-checkout 100")
			}
			if len(args) == 2 {
				if x.Flags == nil {
					x.Flags = map[string]float64{}
				}
				x.Flags[args[0]] = pct
			} else {
				x.Sample = pct
			}
		case "window":
			dur, err := parseDurationArg(d)
			if err != nil {
				return nil, err
			}
			x.Window = dur
		case "max_entries":
			var n string
			if !d.AllArgs(&n) {
				return nil, d.ArgErr()
			}
			v, err := strconv.Atoi(strings.ReplaceAll(n, "_", ""))
			if err != nil || v <= 0 {
				return nil, d.Errf("max_entries %q: give a positive number of entries, e.g. 3000000", n)
			}
			x.MaxEntries = v
		case "every_request":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			x.EveryRequest = true
		default:
			return nil, d.Errf("unknown exposures option %q: options are key, sample, window, max_entries, every_request", d.Val())
		}
	}
	return x, nil
}

func parseCookie(d *caddyfile.Dispenser) (*Cookie, error) {
	c := new(Cookie)
	if d.NextArg() {
		c.Name = d.Val()
	}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(1) {
		switch d.Val() {
		case "max_age":
			dur, err := parseDurationArg(d)
			if err != nil {
				return nil, err
			}
			c.MaxAge = dur
		case "domain":
			if !d.AllArgs(&c.Domain) {
				return nil, d.ArgErr()
			}
		case "secure":
			if !d.AllArgs(&c.Secure) {
				return nil, d.ArgErr()
			}
		case "same_site":
			if !d.AllArgs(&c.SameSite) {
				return nil, d.ArgErr()
			}
		case "consent":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return nil, d.Errf("consent takes the consent cookie's name and an optional value regex, e.g. consent cookie_consent ^(all|analytics)$")
			}
			c.Consent = &Consent{Cookie: args[0]}
			if len(args) == 2 {
				c.Consent.Value = args[1]
			}
		default:
			return nil, d.Errf("unknown cookie option %q: options are max_age, domain, secure, same_site, consent", d.Val())
		}
	}
	return c, nil
}

func parseHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile sets up the handler:
//
//	feature_flags {
//		cookie_name   <name>     # this site's identity cookie name
//		cookie_domain <domain>   # this site's identity cookie domain
//		header_prefix <prefix>   # this site's per-flag header prefix
//		headers       all|dictionary|none # default all: X-Feature-<Key> per flag and X-Features
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return parseStringOptions(d, []string{"cookie_name", "cookie_domain", "header_prefix", "headers"},
		[]*string{&h.CookieName, &h.CookieDomain, &h.HeaderPrefix, &h.Headers})
}

// parseStringOptions reads a directive without arguments whose block holds
// options of one value each: names[i] sets *dsts[i].
func parseStringOptions(d *caddyfile.Dispenser, names []string, dsts []*string) error {
	d.Next() // the directive name
	directive := d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		i := slices.Index(names, d.Val())
		if i < 0 {
			return d.Errf("unknown %s option %q: options are %s", directive, d.Val(), strings.Join(names, ", "))
		}
		if !d.AllArgs(dsts[i]) {
			return d.ArgErr()
		}
	}
	return nil
}

// UnmarshalCaddyfile sets up the matcher:
//
//	@name feature <flag> <variant>...
func (m *MatchFeature) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	for d.Next() {
		if !d.NextArg() {
			return d.Errf("feature matcher: give a flag key and one or more variants, e.g. feature new-checkout on")
		}
		m.Flag = d.Val()
		m.Variants = append(m.Variants, d.RemainingArgs()...)
		if len(m.Variants) == 0 {
			return d.Errf("feature matcher: give one or more variants after the flag key, e.g. feature %s on", m.Flag)
		}
		if d.NextBlock(0) {
			return d.Err("feature matcher takes no block")
		}
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*Handler)(nil)
	_ caddyfile.Unmarshaler = (*MatchFeature)(nil)
)
