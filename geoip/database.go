// Package geoip looks up the country, continent and EU membership of an IP
// address in a MaxMind DB format file, and reloads the file safely while
// lookups run. It knows nothing of flags or Caddy.
//
// It reads MaxMind-schema databases (GeoIP2 / GeoLite2 Country and City,
// DB-IP lite) and flat databases whose records are {"country_code": "US"}
// (the ip-location-db files); the schema is detected from the file. An
// address the database does not know — a private range, say — is [Unknown]:
// country and continent "XX".
//
//	r, err := geoip.Watch("GeoLite2-Country.mmdb", geoip.Options{Logger: log})
//	defer r.Close()
//	loc := r.Lookup(netip.MustParseAddr("81.2.69.160")) // {GB EU false}
package geoip

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"
)

// Location is what the database says about an address.
type Location struct {
	// Country is the ISO 3166-1 alpha-2 code of where the user is, "XX" when unknown.
	Country string
	// Continent is AF, AN, AS, EU, NA, OC or SA; "XX" when unknown.
	Continent string
	// EU reports membership of the European Union.
	EU bool
}

// Unknown is the Location of an address the database does not know.
var Unknown = Location{Country: "XX", Continent: "XX"}

// Schema is the record layout of a database, detected when it is opened.
type Schema string

// The schemas geoip reads.
const (
	SchemaMaxMind Schema = "maxmind" // country / continent / registered_country records
	SchemaFlat    Schema = "flat"    // {"country_code": …} records
)

// Database is one opened, verified database file. It is immutable and safe
// for concurrent use. Its memory belongs to the garbage collector, not to a
// memory map, so a Database still referenced by a lookup stays valid after a
// reload has replaced it.
type Database struct {
	Path     string
	Type     string // the database_type of its metadata, e.g. "GeoLite2-Country"
	Schema   Schema
	Built    time.Time
	Networks uint // nodes in the search tree: a size indication
	Loaded   time.Time

	// The networks, flattened at open into sorted ranges: a lookup is a
	// binary search over a few contiguous arrays, reads no database bytes
	// and allocates nothing. v4 and v6 each start with a range at the
	// lowest address, so every address falls in exactly one range.
	v4    ranges[v4]
	v6    ranges[uint128]
	locs  []Location // distinct locations; ranges index into it
	index map[Location]uint32
	// MaxMind databases alias 6to4 (2002::/16) and Teredo (2001::/32)
	// addresses into the IPv4 tree; the walk skips aliases, so Lookup
	// follows them itself where the file has them.
	alias6to4, aliasTeredo bool
}

// MaxSize bounds a database file; the largest real City databases are a few
// hundred MB.
const MaxSize = 1 << 30

// Open reads, verifies and opens the database at path. The error says what
// is wrong and names the path.
func Open(path string) (*Database, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("geoip database %s: %w", path, err)
	}
	if st.Size() > MaxSize {
		return nil, fmt.Errorf("geoip database %s: %d bytes is more than the limit of %d", path, st.Size(), MaxSize)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("geoip database %s: %w", path, err)
	}
	return OpenBytes(path, data)
}

// OpenBytes opens a database held in memory; name is used in errors. data
// must not be modified afterwards.
func OpenBytes(name string, data []byte) (db *Database, err error) {
	fail := func(format string, args ...any) (*Database, error) {
		return nil, fmt.Errorf("geoip database %s: %s", name, fmt.Sprintf(format, args...))
	}
	if len(data) == 0 {
		return fail("the file is empty")
	}
	// The reader is hardened, but a corrupt file must never take the server
	// down: whatever it does on bad data becomes an error here.
	defer func() {
		if r := recover(); r != nil {
			db, err = fail("corrupt file: %v", r)
		}
	}()
	reader, err := maxminddb.OpenBytes(data)
	if err != nil {
		return fail("not a MaxMind DB file (or a corrupt one): %v", err)
	}
	// Not reader.Verify: it also holds the metadata to niceties that the
	// format's readers do not need and real databases skip (an empty
	// description, say), and an edge that refuses a good database at
	// start-up is down. What lookups rely on is checked instead: the
	// format and layout (checkMetadata), every node and pointer of the
	// search tree (checkTree), and every record, as flatten decodes it.
	if err := checkMetadata(reader.Metadata); err != nil {
		return fail("%v", err)
	}
	if err := checkTree(data, reader.Metadata); err != nil {
		return fail("corrupt file (it may be truncated or still being written): %v", err)
	}
	schema, err := detectSchema(reader)
	if err != nil {
		return fail("%v", err)
	}
	db = &Database{
		Path:     name,
		Type:     reader.Metadata.DatabaseType,
		Schema:   schema,
		Built:    reader.Metadata.BuildTime(),
		Networks: reader.Metadata.NodeCount,
	}
	if err := db.flatten(reader); err != nil {
		return fail("%v", err)
	}
	db.Loaded = time.Now()
	return db, nil
}

// flatten walks every network once, decoding each distinct record once, and
// builds the range tables Lookup searches.
func (db *Database) flatten(reader *maxminddb.Reader) error {
	db.index = map[Location]uint32{}
	db.intern(Unknown) // index 0: the gaps between networks
	decoded := map[uintptr]uint32{}
	db.v4.add(0, 0)
	db.v6.add(uint128{}, 0)
	for res := range reader.Networks() {
		if err := res.Err(); err != nil {
			return fmt.Errorf("corrupt file: %v", err)
		}
		li, ok := decoded[res.Offset()]
		if !ok {
			loc, err := db.decode(res)
			if err != nil {
				return fmt.Errorf("corrupt file (it may be truncated or still being written): the record of %s: %v", res.Prefix(), err)
			}
			li = db.intern(loc)
			decoded[res.Offset()] = li
		}
		p := res.Prefix()
		addr := p.Addr().Unmap()
		bits := p.Bits()
		if p.Addr().Is4In6() {
			bits -= 96
		}
		if addr.Is4() {
			first, last := v4Bounds(addr, bits)
			db.v4.cover(first, last, li, last == ^v4(0))
		} else {
			first, last := v6Bounds(addr, bits)
			db.v6.cover(first, last, li, last == uint128{^uint64(0), ^uint64(0)})
		}
	}
	db.index = nil
	db.alias6to4, db.aliasTeredo = hasAlias(reader, 2, 0x20, 0x02), hasAlias(reader, 4, 0x20, 0x01)
	return nil
}

// hasAlias reports whether addresses starting with prefix hi, lo (and zeros
// up to byte at) lead into the IPv4 tree, with the IPv4 address at bytes at … at+3.
func hasAlias(reader *maxminddb.Reader, at int, hi, lo byte) bool {
	for res := range reader.Networks() {
		v4 := res.Prefix().Addr().Unmap()
		if !v4.Is4() {
			return false // no IPv4 data to alias
		}
		var b [16]byte
		b[0], b[1] = hi, lo
		a := v4.As4()
		copy(b[at:], a[:])
		alias := reader.Lookup(netip.AddrFrom16(b))
		return alias.Found() && alias.Offset() == res.Offset()
	}
	return false
}

func (db *Database) intern(loc Location) uint32 {
	if i, ok := db.index[loc]; ok {
		return i
	}
	i := uint32(len(db.locs))
	db.locs = append(db.locs, loc)
	db.index[loc] = i
	return i
}

// Lookup returns the location of ip. IPv4-mapped IPv6 addresses are looked
// up as IPv4. It never fails: whatever the database cannot answer is Unknown.
func (db *Database) Lookup(ip netip.Addr) Location {
	ip = ip.Unmap()
	switch {
	case ip.Is4():
		return db.locs[db.v4.find(toV4(ip.As4()))]
	case ip.Is6():
		b := ip.As16()
		switch {
		case db.alias6to4 && b[0] == 0x20 && b[1] == 0x02:
			return db.locs[db.v4.find(toV4([4]byte(b[2:6])))]
		case db.aliasTeredo && b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0:
			return db.locs[db.v4.find(toV4([4]byte(b[4:8])))]
		}
		return db.locs[db.v6.find(toUint128(b))]
	}
	return Unknown
}

// maxmindRecord holds the fields edgeflags reads from a MaxMind-schema
// record; the decoder skips the rest (localized names, geoname ids).
type maxmindRecord struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
		EU      bool   `maxminddb:"is_in_european_union"`
	} `maxminddb:"country"`
	RegisteredCountry struct {
		ISOCode string `maxminddb:"iso_code"`
		EU      bool   `maxminddb:"is_in_european_union"`
	} `maxminddb:"registered_country"`
	Continent struct {
		Code string `maxminddb:"code"`
	} `maxminddb:"continent"`
}

type flatRecord struct {
	CountryCode string `maxminddb:"country_code"`
}

// decode reads the Location from a record of the database's schema. A
// record that decodes but does not have the schema's shape (a number
// where the country code belongs, say) is Unknown; one that does not
// decode at all is an error: the file is corrupt.
func (db *Database) decode(res maxminddb.Result) (Location, error) {
	loc := Unknown
	switch db.Schema {
	case SchemaFlat:
		var rec flatRecord
		if err := res.Decode(&rec); err != nil {
			return Unknown, decodable(res, err)
		}
		if !validCode(rec.CountryCode) {
			return Unknown, nil
		}
		loc.Country = rec.CountryCode
		loc.Continent, loc.EU = continentOf(rec.CountryCode)
	default:
		var rec maxmindRecord
		if err := res.Decode(&rec); err != nil {
			return Unknown, decodable(res, err)
		}
		// country is where the user is; registered_country (where the
		// block is registered) serves only when country is absent.
		switch {
		case validCode(rec.Country.ISOCode):
			loc.Country, loc.EU = rec.Country.ISOCode, rec.Country.EU
		case validCode(rec.RegisteredCountry.ISOCode):
			loc.Country, loc.EU = rec.RegisteredCountry.ISOCode, rec.RegisteredCountry.EU
		}
		if validCode(rec.Continent.Code) {
			loc.Continent = rec.Continent.Code
		} else if loc.Country != "XX" {
			loc.Continent, _ = continentOf(loc.Country)
		}
	}
	return loc, nil
}

// decodable tells a record of another shape (nil: it is Unknown) from one
// that cannot be decoded at all (the error).
func decodable(res maxminddb.Result, err error) error {
	var v any
	if res.Decode(&v) == nil {
		return nil
	}
	return err
}

// checkMetadata checks what reading the file depends on: the format's
// major version and the search tree's layout.
func checkMetadata(md maxminddb.Metadata) error {
	switch {
	case md.BinaryFormatMajorVersion != 2:
		return fmt.Errorf("binary format version %d.%d: only MaxMind DB format 2 is read", md.BinaryFormatMajorVersion, md.BinaryFormatMinorVersion)
	case md.IPVersion != 4 && md.IPVersion != 6:
		return fmt.Errorf("corrupt metadata: ip_version %d, want 4 or 6", md.IPVersion)
	case md.RecordSize != 24 && md.RecordSize != 28 && md.RecordSize != 32:
		return fmt.Errorf("corrupt metadata: record_size %d, want 24, 28 or 32", md.RecordSize)
	case md.NodeCount == 0:
		return errors.New("the database holds no networks (node_count 0)")
	}
	return nil
}

// validCode reports whether s looks like a two-letter upper-case code.
func validCode(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

// detectSchema reads records until one says which layout the file has.
func detectSchema(r *maxminddb.Reader) (Schema, error) {
	var keys []string
	n := 0
	for res := range r.Networks() {
		if err := res.Err(); err != nil {
			return "", fmt.Errorf("corrupt file: %v", err)
		}
		var rec map[string]any
		if err := res.Decode(&rec); err != nil {
			return "", fmt.Errorf("corrupt record at %s: %v", res.Prefix(), err)
		}
		if _, ok := rec["country_code"]; ok {
			return SchemaFlat, nil
		}
		for _, k := range []string{"country", "registered_country", "continent"} {
			if _, ok := rec[k]; ok {
				return SchemaMaxMind, nil
			}
		}
		if keys == nil {
			for k := range rec {
				keys = append(keys, k)
			}
			sort.Strings(keys)
		}
		if n++; n > 100 {
			break
		}
	}
	if n == 0 {
		return "", errors.New("the database holds no networks")
	}
	return "", fmt.Errorf("no country data (database type %q, record keys %s): want a country database, with country.iso_code or country_code",
		r.Metadata.DatabaseType, strings.Join(keys, ", "))
}
