package caddymodule

import (
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types/ref"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(new(MatchFeature))
}

// MatchFeature matches requests for which a flag has one of the given
// variants. It uses the request's evaluation; reached before the
// feature_flags handler, it evaluates with the identity the request already
// carries (minting the cookie is the handler's job), and that answer then
// holds for the rest of the request.
//
// In CEL: feature('new-checkout', 'on').
type MatchFeature struct {
	// Flag is the flag's key.
	Flag string `json:"flag"`
	// Variants are the variants that match.
	Variants []string `json:"variants"`

	app      *App
	logger   *zap.Logger
	warnOnce sync.Once
	// cookieName is the identity cookie of the matcher's site, found on
	// first use: the site's handlers are provisioned by then.
	cookieName func() string
}

// CaddyModule returns the Caddy module information.
func (*MatchFeature) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.matchers.feature",
		New: func() caddy.Module { return new(MatchFeature) },
	}
}

// Provision finds the app and checks that the flag and variants exist.
func (m *MatchFeature) Provision(ctx caddy.Context) error {
	app, err := appFrom(ctx, "the feature matcher")
	if err != nil {
		return err
	}
	m.app, m.logger = app, ctx.Logger()
	above := parents(ctx)
	m.cookieName = sync.OnceValue(func() string { return app.cookieNameAt(above) })
	if m.Flag == "" || len(m.Variants) == 0 {
		return fmt.Errorf("feature matcher: give a flag key and one or more variants, e.g. feature new-checkout on")
	}
	set := app.Flags()
	i, ok := set.Index(m.Flag)
	if !ok {
		return fmt.Errorf("feature matcher: unknown flag %q: it is not in the flags files", m.Flag)
	}
	variants := set.Flag(i).Variants
	for _, v := range m.Variants {
		if !slices.Contains(variants, v) {
			return fmt.Errorf("feature matcher: flag %s has no variant %q: its variants are %s", m.Flag, v, strings.Join(variants, ", "))
		}
	}
	return nil
}

// Match implements caddyhttp.RequestMatcher.
func (m *MatchFeature) Match(r *http.Request) bool {
	ok, _ := m.MatchWithError(r)
	return ok
}

// MatchWithError implements caddyhttp.RequestMatcherWithError.
func (m *MatchFeature) MatchWithError(r *http.Request) (bool, error) {
	s := stateOf(r)
	if s == nil {
		s = newState(m.app, r, m.cookieName())
		stripSpoofed(r, m.app.prefixFold, nil)
	}
	s.evaluate()
	res, ok := s.ev.Lookup(m.Flag)
	if !ok {
		// The flag was removed by a reload since this config was loaded.
		m.warnOnce.Do(func() {
			m.logger.Warn("feature matcher names a flag the flags files no longer define; it matches nothing until the config is fixed", zap.String("flag", m.Flag))
		})
		return false, nil
	}
	return slices.Contains(m.Variants, res.Variant), nil
}

// CELLibrary provides feature('<key>', '<variant>') to CEL expressions.
func (*MatchFeature) CELLibrary(ctx caddy.Context) (cel.Library, error) {
	return caddyhttp.CELMatcherImpl(
		"feature",
		"feature_request_string_string",
		[]*cel.Type{cel.StringType, cel.StringType},
		func(data ref.Val) (caddyhttp.RequestMatcherWithError, error) {
			params, err := data.ConvertToNative(reflect.TypeFor[[]string]())
			if err != nil {
				return nil, err
			}
			args := params.([]string)
			m := &MatchFeature{Flag: args[0], Variants: []string{args[1]}}
			if err := m.Provision(ctx); err != nil {
				return nil, err
			}
			return m, nil
		},
	)
}

// Interface guards
var (
	_ caddy.Provisioner                 = (*MatchFeature)(nil)
	_ caddyhttp.RequestMatcherWithError = (*MatchFeature)(nil)
	_ caddyhttp.CELLibraryProducer      = (*MatchFeature)(nil)
)
