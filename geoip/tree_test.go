package geoip

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeflags/edgeflags/geoip/geoiptest"
	"github.com/oschwald/maxminddb-golang/v2"
)

var updateBad = flag.Bool("update-bad", false, "write the corrupt database to testdata/geoip/bad")

// TestSharedSubtreesAreRefused corrupts a database so that 30 nodes above
// 0.0.0.0/32 point both children at the same node: the library's verifier
// accepts it, but it has 2³⁰ paths to walk. It must be refused at once.
func TestSharedSubtreesAreRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v4.mmdb")
	err := geoiptest.WriteIPv4(path, geoiptest.MaxMind, []geoiptest.Network{
		{CIDR: "0.0.0.0/32", Country: "DE", Continent: "EU", EU: true},
		{CIDR: "255.255.255.255/32", Country: "FR", Continent: "EU", EU: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if _, err := OpenBytes(path, data); err != nil {
		t.Fatalf("the untouched database: %v", err)
	}
	reader, err := maxminddb.OpenBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	if reader.Metadata.RecordSize != 24 {
		t.Fatalf("record size %d: this test edits 24-bit records", reader.Metadata.RecordSize)
	}
	// Follow the left-hand chain below the root, pointing each node's
	// right child (empty: nothing else is under 0.0.0.0/1) at its left.
	left := func(n uint) uint { b := data[n*6:]; return uint(b[0])<<16 | uint(b[1])<<8 | uint(b[2]) }
	n := left(0)
	for range 30 {
		copy(data[n*6+3:n*6+6], data[n*6:n*6+3])
		n = left(n)
	}
	if reader, err := maxminddb.OpenBytes(data); err != nil {
		t.Fatal(err)
	} else if err := reader.Verify(); err != nil {
		t.Fatalf("the library should accept the corrupt file for this test to mean anything: %v", err)
	}
	if *updateBad {
		if err := os.WriteFile("../testdata/geoip/bad/edgeflags-shared-subtrees.mmdb", data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	_, err = OpenBytes(path, data)
	if err == nil || !strings.Contains(err.Error(), "reached along two paths") || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v, want the shared subtree refused, naming the file", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("refusing took %s", took)
	}
}
