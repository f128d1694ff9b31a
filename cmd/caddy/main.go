// Command caddy is Caddy with its standard modules and edgeflags.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/edgeflags/edgeflags"
)

func main() {
	caddycmd.Main()
}
