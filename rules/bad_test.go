package rules

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadFiles loads each file (or directory of files) under testdata/bad and
// checks that loading fails with every message its "# want:" lines name, and
// with no other.
func TestBadFiles(t *testing.T) {
	entries, err := os.ReadDir("../testdata/bad")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 30 {
		t.Fatalf("%d bad cases, want at least 25", len(entries))
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".want") {
			continue // the expectations of a JSON case, which cannot hold comments
		}
		t.Run(e.Name(), func(t *testing.T) {
			paths := []string{filepath.Join("../testdata/bad", e.Name())}
			if e.IsDir() {
				paths, _ = filepath.Glob(filepath.Join(paths[0], "*"))
			}
			var sources []Source
			var want []string
			for _, p := range paths {
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				sources = append(sources, Source{Name: filepath.Base(p), Data: data})
				want = append(want, wantLines(data)...)
				if sidecar, err := os.ReadFile(p + ".want"); err == nil {
					want = append(want, strings.Split(strings.TrimSpace(string(sidecar)), "\n")...)
				}
			}
			if len(want) == 0 {
				t.Fatal("no # want: line")
			}
			set, err := Load(sources...)
			if err == nil {
				t.Fatalf("loaded %d flags, want an error", set.Len())
			}
			got := strings.Split(err.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("errors differ\ngot:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func wantLines(data []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if w, ok := strings.CutPrefix(sc.Text(), "# want: "); ok {
			out = append(out, w)
		}
	}
	return out
}
