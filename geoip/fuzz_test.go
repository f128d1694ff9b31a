package geoip

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpenBytes feeds arbitrary files to the database loader: it must
// refuse them with an error or load them, never panic, and a loaded one
// must answer lookups.
func FuzzOpenBytes(f *testing.F) {
	paths, _ := filepath.Glob("../testdata/geoip/*.mmdb")
	bad, _ := filepath.Glob("../testdata/geoip/bad/*.mmdb")
	for _, p := range append(paths, bad...) {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		db, err := OpenBytes("fuzz.mmdb", data)
		if err != nil {
			return
		}
		for _, ip := range []string{"81.2.69.160", "2001:218::1", "::ffff:1.2.3.4", "2002:102:304::1", "0.0.0.0", "255.255.255.255"} {
			loc := db.Lookup(netip.MustParseAddr(ip))
			if loc.Country == "" || loc.Continent == "" {
				t.Fatalf("%s: empty location %+v", ip, loc)
			}
		}
	})
}
