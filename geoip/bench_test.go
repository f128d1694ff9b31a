package geoip

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/edgeflags/edgeflags/geoip/geoiptest"
)

// realisticNetworks is the size of a real country database.
const realisticNetworks = 400_000

// BenchmarkLookup looks up addresses spread over a database of realistic
// size (target: ≤ 250 ns and 0 allocations per lookup).
func BenchmarkLookup(b *testing.B) {
	nets := geoiptest.Realistic(realisticNetworks, 1)
	path := filepath.Join(b.TempDir(), "country.mmdb")
	if err := geoiptest.Write(path, geoiptest.MaxMind, nets); err != nil {
		b.Fatal(err)
	}
	db, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	ips := make([]netip.Addr, 1024)
	for i := range ips {
		p := netip.MustParsePrefix(nets[(i*7919)%len(nets)].CIDR)
		a := p.Addr().As16()
		a[15] = byte(i) | 1
		ips[i] = netip.AddrFrom16(a)
		if p.Addr().Is4() {
			ips[i] = ips[i].Unmap()
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if db.Lookup(ips[i&1023]).Country == "XX" {
			b.Fatal("unknown")
		}
		i++
	}
}
