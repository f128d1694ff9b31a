package caddymodule

import (
	"os"
	"testing"
)

// TestMain keeps the tests' Caddy data (state files, URL caches) and
// config (autosave) out of the user's own directories.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "edgeflags-test-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_DATA_HOME", dir+"/data")
	os.Setenv("XDG_CONFIG_HOME", dir+"/config")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
