package geoip

import (
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/oschwald/maxminddb-golang/v2"

	"github.com/edgeflags/edgeflags/geoip/geoiptest"
)

// Real databases and minimal metadata: whatever the format's reference
// reader (libmaxminddb's mmdblookup) reads and answers, geoip opens and
// answers the same.

const realDB = "../testdata/geoip/real/iptoasn-country-ipv4.mmdb"

// TestRealFreeDatabase opens a real ip-location-db file (empty description,
// no languages) and checks addresses against what mmdblookup said of them.
func TestRealFreeDatabase(t *testing.T) {
	db, err := Open(realDB)
	if err != nil {
		t.Fatal(err)
	}
	if db.Schema != SchemaFlat || db.Type != "country ipv4" {
		t.Errorf("schema %s, type %q", db.Schema, db.Type)
	}
	// mmdblookup --file iptoasn-country-ipv4.mmdb --ip <ip> country_code
	for ip, want := range map[string]Location{
		"8.8.8.8":       {Country: "US", Continent: "NA"},
		"81.2.69.160":   {Country: "GB", Continent: "EU"},
		"193.0.6.139":   {Country: "NL", Continent: "EU", EU: true},
		"202.12.29.205": {Country: "AU", Continent: "OC"},
		"200.160.2.3":   {Country: "BR", Continent: "SA"},
		"196.216.2.6":   {Country: "MU", Continent: "AF"},
		"10.1.2.3":      Unknown,
	} {
		if got := db.Lookup(netip.MustParseAddr(ip)); got != want {
			t.Errorf("%s: %+v, want %+v", ip, got, want)
		}
	}
}

// minimalMetadata are metadata a database may have that the MaxMind
// library's verifier refuses or a strict reader might trip on.
var minimalMetadata = map[string]geoiptest.Metadata{
	"empty description":   {DatabaseType: "GeoLite2-Country", IPVersion: 6, RecordSize: 24},
	"no languages":        {DatabaseType: "GeoLite2-Country", Description: map[string]string{"en": "x"}, IPVersion: 6, RecordSize: 28},
	"odd database type":   {DatabaseType: "my country file, v0 (beta)", IPVersion: 4, RecordSize: 32},
	"empty database type": {IPVersion: 4, RecordSize: 24},
}

func TestMinimalMetadata(t *testing.T) {
	for name, md := range minimalMetadata {
		for _, schema := range []geoiptest.Schema{geoiptest.MaxMind, geoiptest.Flat} {
			path := filepath.Join(t.TempDir(), "db.mmdb")
			if err := geoiptest.WriteWith(path, schema, testNetworks, md); err != nil {
				t.Fatal(err)
			}
			db, err := Open(path)
			if err != nil {
				t.Errorf("%s (schema %d): %v", name, schema, err)
				continue
			}
			if got := db.Lookup(netip.MustParseAddr("81.2.69.160")); got.Country != "GB" {
				t.Errorf("%s (schema %d): 81.2.69.160 is %+v", name, schema, got)
			}
		}
	}
}

var mmdbCode = regexp.MustCompile(`"([A-Z]{2})"`)

// TestAgainstTheReferenceReader asks mmdblookup for the country of many
// addresses in each database geoip must read — the field geoip reads:
// country_code, or country.iso_code and else registered_country.iso_code —
// and compares: the real file, MaxMind's test databases, and generated
// ones with minimal metadata.
func TestAgainstTheReferenceReader(t *testing.T) {
	mmdblookup, err := exec.LookPath("mmdblookup")
	if err != nil {
		t.Skip("mmdblookup (libmaxminddb's reference reader) not installed: apt-get install mmdb-bin (.ci/run does)")
	}
	files := []string{realDB, "../testdata/geoip/GeoLite2-Country-Test.mmdb", "../testdata/geoip/GeoIP2-Country-Test.mmdb"}
	for name, md := range minimalMetadata {
		var nets []geoiptest.Network
		for _, n := range geoiptest.Realistic(2000, 3) {
			if md.IPVersion == 6 || netip.MustParsePrefix(n.CIDR).Addr().Is4() {
				nets = append(nets, n)
			}
		}
		path := filepath.Join(t.TempDir(), name+".mmdb")
		if err := geoiptest.WriteWith(path, geoiptest.Flat, nets, md); err != nil {
			t.Fatal(err)
		}
		files = append(files, path)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for _, path := range files {
		db, err := Open(path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		lookup := func(ip netip.Addr, field ...string) string {
			out, _ := exec.Command(mmdblookup, append([]string{"--file", path, "--ip", ip.String()}, field...)...).CombinedOutput()
			if m := mmdbCode.FindSubmatch(out); m != nil {
				return string(m[1])
			}
			return "XX"
		}
		// Probe inside the file's own networks (as the library walks them),
		// and at random.
		reader, err := maxminddb.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		var probes []netip.Addr
		for res := range reader.Networks() {
			if rng.IntN(40) == 0 || len(probes) < 10 {
				probes = append(probes, res.Prefix().Addr().Unmap())
			}
		}
		reader.Close()
		rng.Shuffle(len(probes), func(i, j int) { probes[i], probes[j] = probes[j], probes[i] })
		probes = probes[:min(len(probes), 50)]
		for range 20 {
			probes = append(probes, netip.AddrFrom4([4]byte{byte(rng.IntN(224)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))}))
		}
		known := 0
		for _, ip := range probes {
			var want string
			if db.Schema == SchemaFlat {
				want = lookup(ip, "country_code")
			} else if want = lookup(ip, "country", "iso_code"); want == "XX" {
				want = lookup(ip, "registered_country", "iso_code")
			}
			if got := db.Lookup(ip).Country; got != want {
				t.Errorf("%s: %s: geoip says %s, mmdblookup %s", filepath.Base(path), ip, got, want)
			}
			if want != "XX" {
				known++
			}
		}
		t.Logf("%s: %d addresses agree with mmdblookup (%d with a country)", filepath.Base(path), len(probes), known)
	}
}
