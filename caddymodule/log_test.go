package caddymodule

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFlagsInTheAccessLog shows the access log carrying the request's flags
// through log_append, which reads the placeholder after the handler chain
// has returned — so the request's evaluation must outlive the handler.
func TestFlagsInTheAccessLog(t *testing.T) {
	s := startCaddy(t, globalOptions+`	feature_flags {
		flags_file {FLAGS}
		identity {http.request.header.X-User-Id} cookie
	}
}
http://127.0.0.1:{EDGE} {
	log {
		output file {DIR}/access.log
	}
	log_append flags {feature_flags.all}
	log_append checkout {feature.new-checkout}
	feature_flags
	reverse_proxy {NEW}
}
`, demoFlags)
	s.get(t, "/", "X-User-Id: alice")
	s.get(t, "/", "Cookie: ff_uid="+unitWith("new-checkout", "off"))
	lines := readLogLines(t, filepath.Join(s.dir, "access.log"), 2)
	if len(lines) != 2 {
		t.Fatalf("%d access log lines, want 2", len(lines))
	}
	for i, want := range []string{"on", "off"} {
		if got := lines[i]["checkout"]; got != want {
			t.Errorf("line %d: checkout = %v, want %s", i, got, want)
		}
		flags, _ := lines[i]["flags"].(string)
		if !strings.HasPrefix(flags, "new-checkout="+want+", search-v2=off, dark-mode=") {
			t.Errorf("line %d: flags = %q", i, flags)
		}
	}
}

// unitWith returns an identity that a 25 % split of flag puts in variant.
func unitWith(flag, variant string) string {
	for i := 0; ; i++ {
		u := "log-unit-" + itoa(i+1)
		if variantFor(flag, u, 2500) == variant {
			return u
		}
	}
}

func readLogLines(t *testing.T, path string, want int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var lines []map[string]any
		if f, err := os.Open(path); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				var m map[string]any
				if json.Unmarshal(sc.Bytes(), &m) == nil {
					lines = append(lines, m)
				}
			}
			f.Close()
		}
		if len(lines) >= want || time.Now().After(deadline) {
			return lines
		}
		time.Sleep(20 * time.Millisecond)
	}
}
