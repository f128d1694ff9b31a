// Package edgeflags is the Caddy module that evaluates feature flags at the
// edge. Importing it registers the modules, so that
//
//	xcaddy build --with github.com/edgeflags/edgeflags
//
// builds a Caddy with them. The code lives in caddymodule (the Caddy glue),
// rules (the flag engine) and geoip (the country lookup).
package edgeflags

import _ "github.com/edgeflags/edgeflags/caddymodule"
