package geoip

import (
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/edgeflags/edgeflags/geoip/geoiptest"
	"github.com/oschwald/maxminddb-golang/v2"
)

// TestFlattenedLookupMatchesTheTree checks the range tables against the
// library's own search-tree lookup: at every network's first and last
// address, the addresses just outside, and random addresses.
func TestFlattenedLookupMatchesTheTree(t *testing.T) {
	generated := filepath.Join(t.TempDir(), "gen.mmdb")
	nets := geoiptest.Realistic(20_000, 7)
	nets = append(nets, testNetworks...)
	nets = append(nets, geoiptest.Network{CIDR: "0.0.0.0/8", Country: "US", Continent: "NA"},
		geoiptest.Network{CIDR: "255.255.255.0/24", Country: "JP", Continent: "AS"},
		geoiptest.Network{CIDR: "ffff:ff00::/24", Country: "DE", Continent: "EU", EU: true})
	if err := geoiptest.Write(generated, geoiptest.MaxMind, nets); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{generated, "../testdata/geoip/GeoIP2-Country-Test.mmdb", "../testdata/geoip/GeoLite2-Country-Test.mmdb"} {
		db, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		tree, err := maxminddb.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		var probes []netip.Addr
		for res := range tree.Networks() {
			p := res.Prefix()
			first := p.Masked().Addr()
			last := lastAddr(p)
			probes = append(probes, first, last, first.Prev(), last.Next())
			if first.Is4() {
				a := first.As4()
				probes = append(probes, // the same address through 6to4 and Teredo
					netip.AddrFrom16([16]byte{0x20, 0x02, a[0], a[1], a[2], a[3], 9: 1}),
					netip.AddrFrom16([16]byte{0x20, 0x01, 0, 0, a[0], a[1], a[2], a[3], 15: 1}))
			}
		}
		rng := rand.New(rand.NewPCG(1, 2))
		for range 20_000 {
			var b4 [4]byte
			var b16 [16]byte
			for i := range b16 {
				b16[i] = byte(rng.Uint32())
			}
			copy(b4[:], b16[:4])
			probes = append(probes, netip.AddrFrom4(b4), netip.AddrFrom16(b16))
		}
		for _, ip := range probes {
			if !ip.IsValid() {
				continue
			}
			want := Unknown
			if res := tree.Lookup(ip); res.Found() {
				var err error
				if want, err = db.decode(res); err != nil {
					t.Fatal(err)
				}
			}
			if got := db.Lookup(ip); got != want {
				t.Fatalf("%s: %s: ranges say %+v, the tree %+v", filepath.Base(path), ip, got, want)
			}
		}
		t.Logf("%s: %d probes agree (%d v4 ranges, %d v6 ranges)", filepath.Base(path), len(probes), len(db.v4.starts), len(db.v6.starts))
		tree.Close()
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
