package geoip

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeflags/edgeflags/geoip/geoiptest"
)

var testNetworks = []geoiptest.Network{
	{CIDR: "81.2.69.0/24", Country: "GB", Continent: "EU"},
	{CIDR: "2.125.160.0/20", Country: "DE", Continent: "EU", EU: true},
	{CIDR: "89.160.20.0/24", Country: "SE", Continent: "EU", EU: true},
	{CIDR: "216.160.83.0/24", Country: "US", Continent: "NA"},
	{CIDR: "2001:218::/32", Country: "JP", Continent: "AS"},
	{CIDR: "2a02:cf40::/29", Country: "NO", Continent: "EU"},
	// A block registered in one country and used in another.
	{CIDR: "67.43.156.0/24", Country: "BT", Continent: "AS", Registered: "IT"},
	// A record with registered_country only (an anycast or satellite block).
	{CIDR: "5.5.5.0/24", Registered: "FR", Continent: "EU", EU: true},
}

func writeDB(t testing.TB, schema geoiptest.Schema, nets []geoiptest.Network) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.mmdb")
	if err := geoiptest.Write(path, schema, nets); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLookup(t *testing.T) {
	maxmind, err := Open(writeDB(t, geoiptest.MaxMind, testNetworks))
	if err != nil {
		t.Fatal(err)
	}
	flat, err := Open(writeDB(t, geoiptest.Flat, testNetworks))
	if err != nil {
		t.Fatal(err)
	}
	if maxmind.Schema != SchemaMaxMind || flat.Schema != SchemaFlat {
		t.Fatalf("detected schemas %s and %s", maxmind.Schema, flat.Schema)
	}
	tests := []struct {
		ip         string
		maxmind    Location
		flat       Location // continent and EU derived from the country
		maxmindNot string
	}{
		{"81.2.69.160", Location{"GB", "EU", false}, Location{"GB", "EU", false}, ""},
		{"2.125.160.216", Location{"DE", "EU", true}, Location{"DE", "EU", true}, ""},
		{"::ffff:89.160.20.112", Location{"SE", "EU", true}, Location{"SE", "EU", true}, "IPv4-mapped IPv6 is unmapped"},
		{"216.160.83.56", Location{"US", "NA", false}, Location{"US", "NA", false}, ""},
		{"2001:218:85a3::8a2e:370:7334", Location{"JP", "AS", false}, Location{"JP", "AS", false}, ""},
		{"2a02:cf40:add:4002::1", Location{"NO", "EU", false}, Location{"NO", "EU", false}, ""},
		{"67.43.156.1", Location{"BT", "AS", false}, Location{"BT", "AS", false}, "country, not registered_country"},
		{"5.5.5.5", Location{"FR", "EU", true}, Unknown, "registered_country when country is absent"},
		{"10.1.2.3", Unknown, Unknown, "private range"},
		{"192.168.0.1", Unknown, Unknown, "private range"},
		{"127.0.0.1", Unknown, Unknown, "loopback"},
		{"::1", Unknown, Unknown, "IPv6 loopback"},
		{"8.8.8.8", Unknown, Unknown, "not in the database"},
	}
	for _, tt := range tests {
		ip := netip.MustParseAddr(tt.ip)
		if got := maxmind.Lookup(ip); got != tt.maxmind {
			t.Errorf("maxmind %s: got %+v, want %+v %s", tt.ip, got, tt.maxmind, tt.maxmindNot)
		}
		if got := flat.Lookup(ip); got != tt.flat {
			t.Errorf("flat %s: got %+v, want %+v", tt.ip, got, tt.flat)
		}
	}
	if got := maxmind.Lookup(netip.Addr{}); got != Unknown {
		t.Errorf("zero address: got %+v", got)
	}
}

// TestMaxMindTestDatabases reads MaxMind's own test databases (copies in
// testdata/geoip with their MIT licence).
func TestMaxMindTestDatabases(t *testing.T) {
	for _, tc := range []struct {
		file string
		ip   string
		want Location
	}{
		{"GeoIP2-Country-Test.mmdb", "81.2.69.160", Location{"GB", "EU", false}},
		{"GeoIP2-Country-Test.mmdb", "2.125.160.216", Location{"GB", "EU", false}},
		{"GeoIP2-Country-Test.mmdb", "89.160.20.112", Location{"SE", "EU", true}},
		{"GeoIP2-Country-Test.mmdb", "2001:218::1", Location{"JP", "AS", false}},
		{"GeoLite2-Country-Test.mmdb", "81.2.69.160", Location{"GB", "EU", false}},
		{"GeoLite2-Country-Test.mmdb", "10.0.0.1", Unknown},
	} {
		db, err := Open(filepath.Join("../testdata/geoip", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		if got := db.Lookup(netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("%s %s: got %+v, want %+v", tc.file, tc.ip, got, tc.want)
		}
	}
}

func TestOpenRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile(writeDB(t, geoiptest.MaxMind, testNetworks))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := map[string]string{
		filepath.Join(dir, "missing.mmdb"):            "no such file",
		write("empty.mmdb", nil):                      "the file is empty",
		write("text.mmdb", []byte("not a database")):  "not a MaxMind DB file",
		write("truncated.mmdb", good[:len(good)/2]):   "geoip database",
		write("no-tail.mmdb", good[:len(good)-40]):    "geoip database",
		write("flipped.mmdb", flipBytes(good, 0, 64)): "geoip database",
	}
	bad, _ := filepath.Glob("../testdata/geoip/bad/*.mmdb")
	if len(bad) < 5 {
		t.Fatalf("%d corrupt test files, want MaxMind's", len(bad))
	}
	for _, p := range bad {
		cases[p] = "geoip database " + p
	}
	for path, want := range cases {
		db, err := Open(path)
		if err == nil {
			t.Errorf("%s: opened (%s), want an error", path, db.Type)
			continue
		}
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %q should name the path and say %q", path, err, want)
		}
	}
}

func TestOpenRefusesANonCountryDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "asn.mmdb")
	if err := geoiptest.WriteASN(path); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path)
	if err == nil || !strings.Contains(err.Error(), "no country data") || !strings.Contains(err.Error(), "autonomous_system_number") {
		t.Fatalf("got %v, want a 'no country data' error naming the record keys", err)
	}
}

// flipBytes returns a copy of data with n bytes from off inverted.
func flipBytes(data []byte, off, n int) []byte {
	out := append([]byte(nil), data...)
	for i := off; i < off+n && i < len(out); i++ {
		out[i] ^= 0xff
	}
	return out
}
