package geoip

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeflags/edgeflags/geoip/geoiptest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

var probe = netip.MustParseAddr("203.0.113.9")

// dbWith writes a database where probe is in country to path.
func dbWith(t testing.TB, path, country string) {
	t.Helper()
	nets := append([]geoiptest.Network{{CIDR: "203.0.113.0/24", Country: country, Continent: "EU"}}, geoiptest.Realistic(2000, 3)...)
	if err := geoiptest.Write(path, geoiptest.MaxMind, nets); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatchPicksUpANewFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "country.mmdb")
	dbWith(t, path, "DE")
	reloads := atomic.Int32{}
	r, err := Watch(path, Options{Interval: 10 * time.Millisecond, OnReload: func(db *Database, err error) {
		if err == nil {
			reloads.Add(1)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := r.Lookup(probe).Country; got != "DE" {
		t.Fatalf("got %s, want DE", got)
	}
	dbWith(t, path, "FR")
	waitFor(t, "the new file", func() bool { return r.Lookup(probe).Country == "FR" })
	if reloads.Load() != 1 {
		t.Errorf("%d reloads, want 1", reloads.Load())
	}
}

func TestCorruptFileKeepsTheOldDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "country.mmdb")
	dbWith(t, path, "DE")
	core, logs := observer.New(zap.InfoLevel)
	r, err := Watch(path, Options{Interval: time.Hour, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	good, _ := os.ReadFile(path)
	for name, data := range map[string][]byte{
		"truncated": good[:len(good)*2/3],
		"garbage":   []byte("<html>503 Service Unavailable</html>"),
		"empty":     nil,
		"corrupt":   flipBytes(good, 100, 300),
	} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		changed, err := r.Reload()
		if changed || err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s file: changed %v, err %v; want refused with the path named", name, changed, err)
		}
		if got := r.Lookup(probe).Country; got != "DE" {
			t.Errorf("%s file: lookups answer %s, want the old database's DE", name, got)
		}
		if r.LastError() == nil {
			t.Errorf("%s file: LastError is nil", name)
		}
	}
	refusals := logs.FilterMessageSnippet("refusing").All()
	if len(refusals) != 4 || refusals[0].ContextMap()["path"] != path {
		t.Errorf("%d refusals logged (%v), want 4 naming the path", len(refusals), refusals)
	}
	dbWith(t, path, "FR")
	if changed, err := r.Reload(); !changed || err != nil || r.Lookup(probe).Country != "FR" || r.LastError() != nil {
		t.Errorf("a good file after bad ones: changed %v, err %v", changed, err)
	}
}

func TestRemovedFileKeepsServing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "country.mmdb")
	dbWith(t, path, "DE")
	r, err := Watch(path, Options{Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	os.Remove(path)
	if _, err := r.Reload(); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("got %v, want a no such file error", err)
	}
	if r.Lookup(probe).Country != "DE" {
		t.Error("stopped serving the loaded database")
	}
}

// TestConfigMapSymlinkSwap replays how Kubernetes updates a ConfigMap
// volume: the file is a link through ..data, and ..data is swapped
// atomically to a new timestamped directory.
func TestConfigMapSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	link := func(target, name string) {
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.Symlink(target, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range []string{"DE", "FR"} {
		version := filepath.Join(dir, fmt.Sprintf("..2026_11_21_0%d", i))
		os.Mkdir(version, 0o755)
		dbWith(t, filepath.Join(version, "country.mmdb"), c)
	}
	link("..2026_11_21_00", "..data")
	link("..data/country.mmdb", "country.mmdb")
	path := filepath.Join(dir, "country.mmdb")
	r, err := Watch(path, Options{Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Lookup(probe).Country != "DE" {
		t.Fatal("not DE before the swap")
	}
	link("..2026_11_21_01", "..data")
	os.RemoveAll(filepath.Join(dir, "..2026_11_21_00"))
	waitFor(t, "the swapped ConfigMap", func() bool { return r.Lookup(probe).Country == "FR" })
}

func TestWatchRefusesAMissingOrCorruptFileAtStart(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "GeoLite2-Country.mmdb")
	if _, err := Watch(missing, Options{}); err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	corrupt := "../testdata/geoip/bad/libmaxminddb-offset-integer-overflow.mmdb"
	if _, err := Watch(corrupt, Options{}); err == nil || !strings.Contains(err.Error(), corrupt) {
		t.Errorf("corrupt file: %v", err)
	}
}

// TestLookupsDuringManyReloads swaps the file 100 times — good databases
// by atomic rename, broken ones written in place — while lookups run on
// four goroutines. Run it with -race. Every lookup must answer from one of
// the good databases: never a failure, never a crash.
func TestLookupsDuringManyReloads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "country.mmdb")
	versions := map[string]string{"DE": filepath.Join(dir, "de.mmdb"), "FR": filepath.Join(dir, "fr.mmdb")}
	for c, p := range versions {
		dbWith(t, p, c)
	}
	good, _ := os.ReadFile(versions["DE"])
	install := func(country string) {
		data, _ := os.ReadFile(versions[country])
		tmp := path + ".tmp"
		os.WriteFile(tmp, data, 0o644)
		os.Rename(tmp, path)
	}
	install("DE")
	r, err := Watch(path, Options{Interval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	var lookups, wrong atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			other := netip.MustParseAddr("10.9.9.9")
			for {
				select {
				case <-stop:
					return
				default:
				}
				if c := r.Lookup(probe).Country; c != "DE" && c != "FR" {
					wrong.Add(1)
				}
				if r.Lookup(other) != Unknown {
					wrong.Add(1)
				}
				lookups.Add(2)
			}
		}()
	}
	refused := 0
	for i := range 100 {
		switch i % 4 {
		case 0, 2:
			install([]string{"FR", "DE"}[i%4/2])
		case 1:
			os.WriteFile(path, good[:len(good)/3], 0o644) // a copy caught half-way
		case 3:
			os.WriteFile(path, flipBytes(good, len(good)/2, 64), 0o644)
		}
		if _, err := r.Reload(); err != nil {
			refused++
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d lookups during 100 swaps, %d files refused", lookups.Load(), refused)
	if wrong.Load() != 0 {
		t.Fatalf("%d lookups answered from no good database", wrong.Load())
	}
	if refused < 25 {
		t.Errorf("only %d of 50 broken files refused", refused)
	}
}
