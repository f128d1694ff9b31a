package caddymodule

import (
	"encoding/json"
	"strings"
)

// placeholder provides, lazily and from the request's one evaluation:
//
//	{feature.<key>}           the flag's variant
//	{feature.<key>.reason}    why (TARGETING_MATCH, SPLIT, …)
//	{feature_flags.all}       every flag as an RFC 9651 dictionary (X-Features)
//	{feature_flags.json}      the client: true flags as a JSON object
//	{feature_flags.country}   the client's country, XX when unknown
func (s *requestState) placeholder(key string) (any, bool) {
	switch key {
	case "feature_flags.all":
		return s.dictionary(), true
	case "feature_flags.json":
		return s.clientJSON(), true
	case "feature_flags.country":
		return s.location().Country, true
	}
	rest, ok := strings.CutPrefix(key, "feature.")
	if !ok {
		return nil, false
	}
	flagKey, reason := strings.CutSuffix(rest, ".reason")
	s.evaluate()
	res, ok := s.ev.Lookup(flagKey)
	if !ok {
		return nil, false
	}
	if reason {
		return res.Reason.String(), true
	}
	return res.Variant, true
}

// clientJSON returns {"key": "variant", …} for the flags marked client: true,
// safe to embed in a page (json.Marshal escapes <, > and &).
func (s *requestState) clientJSON() string {
	s.evaluate()
	m := map[string]string{}
	for i := range s.set.Len() {
		if f := s.set.Flag(i); f.Client {
			m[f.Key] = s.ev.Result(i).Variant
		}
	}
	b, _ := json.Marshal(m)
	return string(b)
}
