package caddymodule

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeflags/edgeflags/geoip/geoiptest"
)

const demoGeoIP = "../testdata/demo/geoip.mmdb"

var updateDemo = flag.Bool("update-demo", false, "regenerate "+demoGeoIP)

// demoNetworks are the demo database's networks: documentation ranges, so
// the demo never claims to know a real address.
var demoNetworks = []geoiptest.Network{
	{CIDR: "198.51.100.0/24", Country: "DE", Continent: "EU", EU: true},
	{CIDR: "203.0.113.0/24", Country: "US", Continent: "NA"},
	{CIDR: "192.0.2.0/24", Country: "FR", Continent: "EU", EU: true},
	{CIDR: "2001:db8::/32", Country: "AT", Continent: "EU", EU: true},
}

// TestDemoGeoIPDatabase keeps the shipped demo database reproducible: it
// is what geoiptest writes for demoNetworks (run with -update-demo to
// rewrite it).
func TestDemoGeoIPDatabase(t *testing.T) {
	fresh := filepath.Join(t.TempDir(), "geoip.mmdb")
	if err := geoiptest.Write(fresh, geoiptest.MaxMind, demoNetworks); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(fresh)
	if *updateDemo {
		if err := os.WriteFile(demoGeoIP, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(demoGeoIP)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not what geoiptest writes for demoNetworks: run go test ./caddymodule -run TestDemoGeoIPDatabase -update-demo", demoGeoIP)
	}
}
