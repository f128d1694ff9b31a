// Package geoiptest writes GeoIP databases in MaxMind DB format for tests
// and demos, with github.com/maxmind/mmdbwriter: the MaxMind (GeoIP2 /
// GeoLite2 Country) schema and the flat {"country_code": …} schema of the
// free ip-location-db files.
package geoiptest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// Network is one database entry. Continent, EU and Registered are written
// only to MaxMind-schema databases; an empty Country writes a record with
// registered_country alone.
type Network struct {
	CIDR       string
	Country    string
	Continent  string
	EU         bool
	Registered string // registered_country.iso_code, where it differs
}

// Schema selects the record layout.
type Schema int

const (
	// MaxMind is the GeoIP2 / GeoLite2 Country layout: country, continent,
	// registered_country, each with names.
	MaxMind Schema = iota
	// Flat is {"country_code": "US"}, as the ip-location-db files have it.
	Flat
)

// Write writes networks to an IPv6 database (IPv4 networks in its IPv4
// subtree, aliased as MaxMind's are) at path, atomically: a temporary file,
// then rename, so a reader never sees half a database.
func Write(path string, schema Schema, networks []Network) error {
	return write(path, schema, networks, 6)
}

// WriteIPv4 writes an IPv4-only database.
func WriteIPv4(path string, schema Schema, networks []Network) error {
	return write(path, schema, networks, 4)
}

// Metadata are a database's metadata, for WriteWith.
type Metadata struct {
	DatabaseType string
	Description  map[string]string // may be empty, as in the ip-location-db files
	Languages    []string
	IPVersion    int // 4 or 6
	RecordSize   int // 24, 28 or 32
}

func write(path string, schema Schema, networks []Network, ipVersion int) error {
	md := Metadata{DatabaseType: "GeoLite2-Country", Description: map[string]string{"en": "edgeflags test database"},
		Languages: []string{"en"}, IPVersion: ipVersion, RecordSize: 24}
	if schema == Flat {
		md.DatabaseType = "ip-location-db-country"
	}
	return WriteWith(path, schema, networks, md)
}

// WriteWith writes networks with the given metadata, as Write does.
func WriteWith(path string, schema Schema, networks []Network, md Metadata) error {
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            md.DatabaseType,
		Description:             md.Description,
		Languages:               md.Languages,
		RecordSize:              md.RecordSize,
		IncludeReservedNetworks: true, // tests put private ranges in too
		BuildEpoch:              1_700_000_000,
		IPVersion:               md.IPVersion,
	})
	if err != nil {
		return err
	}
	for _, n := range networks {
		_, ipnet, err := net.ParseCIDR(n.CIDR)
		if err != nil {
			return fmt.Errorf("network %q: %w", n.CIDR, err)
		}
		if err := tree.Insert(ipnet, record(schema, n)); err != nil {
			return fmt.Errorf("network %q: %w", n.CIDR, err)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".geoiptest-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tree.WriteTo(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func record(schema Schema, n Network) mmdbtype.Map {
	if schema == Flat {
		return mmdbtype.Map{"country_code": mmdbtype.String(n.Country)}
	}
	country := func(code string, eu bool) mmdbtype.Map {
		m := mmdbtype.Map{
			"iso_code":   mmdbtype.String(code),
			"geoname_id": mmdbtype.Uint32(uint32(code[0])<<8 | uint32(code[1])),
			"names":      mmdbtype.Map{"en": mmdbtype.String("Country " + code), "de": mmdbtype.String("Land " + code)},
		}
		if eu {
			m["is_in_european_union"] = mmdbtype.Bool(true)
		}
		return m
	}
	m := mmdbtype.Map{}
	if n.Country != "" {
		m["country"] = country(n.Country, n.EU)
	}
	reg := n.Registered
	if reg == "" {
		reg = n.Country
	}
	if reg != "" {
		m["registered_country"] = country(reg, n.EU && (n.Country == "" || reg == n.Country))
	}
	if n.Continent != "" {
		m["continent"] = mmdbtype.Map{"code": mmdbtype.String(n.Continent), "geoname_id": mmdbtype.Uint32(6255148),
			"names": mmdbtype.Map{"en": mmdbtype.String("Continent " + n.Continent)}}
	}
	return m
}

// countries is a sample of real codes with their continent and EU membership.
var countries = []struct {
	code, continent string
	eu              bool
}{
	{"US", "NA", false}, {"CA", "NA", false}, {"MX", "NA", false}, {"BR", "SA", false}, {"AR", "SA", false},
	{"DE", "EU", true}, {"FR", "EU", true}, {"IT", "EU", true}, {"ES", "EU", true}, {"NL", "EU", true},
	{"PL", "EU", true}, {"SE", "EU", true}, {"AT", "EU", true}, {"IE", "EU", true}, {"GB", "EU", false},
	{"CH", "EU", false}, {"NO", "EU", false}, {"RU", "EU", false}, {"UA", "EU", false}, {"TR", "AS", false},
	{"JP", "AS", false}, {"CN", "AS", false}, {"IN", "AS", false}, {"KR", "AS", false}, {"SG", "AS", false},
	{"AU", "OC", false}, {"NZ", "OC", false}, {"ZA", "AF", false}, {"NG", "AF", false}, {"EG", "AF", false},
}

// Realistic returns n networks of a real country database's shape: mostly
// IPv4 /16–/24 blocks and some IPv6 /32–/48 blocks, each with a country.
// The same seed gives the same networks.
func Realistic(n int, seed uint64) []Network {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	out := make([]Network, 0, n)
	seen := map[string]bool{}
	for len(out) < n {
		c := countries[rng.IntN(len(countries))]
		var cidr string
		if rng.IntN(5) == 0 {
			// 2400::/12 – 29ff::/16: clear of the 6to4 and Teredo aliases.
			cidr = fmt.Sprintf("%x:%x:%x::/48", 0x2400+rng.IntN(0x600), rng.IntN(0x10000), rng.IntN(0x10000))
		} else {
			// Skip 0/8, 10/8, 127/8 and multicast: reserved space a real database leaves empty.
			a := 1 + rng.IntN(222)
			if a == 10 || a == 127 {
				continue
			}
			cidr = fmt.Sprintf("%d.%d.%d.0/24", a, rng.IntN(256), rng.IntN(256))
		}
		if seen[cidr] {
			continue
		}
		seen[cidr] = true
		out = append(out, Network{CIDR: cidr, Country: c.code, Continent: c.continent, EU: c.eu})
	}
	return out
}

// WriteASN writes a database without country data (the GeoLite2-ASN
// layout), which geoip must refuse as a country database.
func WriteASN(path string) error {
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-ASN", RecordSize: 24, Description: map[string]string{"en": "ASN test"}})
	if err != nil {
		return err
	}
	_, ipnet, _ := net.ParseCIDR("1.0.0.0/24")
	if err := tree.Insert(ipnet, mmdbtype.Map{
		"autonomous_system_number":       mmdbtype.Uint32(13335),
		"autonomous_system_organization": mmdbtype.String("Example"),
	}); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := tree.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
