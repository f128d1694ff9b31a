package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/edgeflags/edgeflags/rollout"
	"github.com/edgeflags/edgeflags/rules"
)

// runtimeLayer is the admin API's layer on top of the flag sources: per
// flag, an enabled override (the kill switch), a whole replacement
// definition, and a guarded rollout's state. It is kept in a store — the
// state file of one node, or Caddy's storage shared by a fleet — so it
// survives restarts, and shared by every config of the process that names
// the same store, so it survives config reloads too.
type runtimeLayer struct {
	store layerStore

	mu         sync.Mutex
	entries    map[string]runtimeEntry
	recent     []Change // newest last, at most maxRecent
	generation uint64   // of the document entries came from
	storeErr   *loadError
}

// runtimeEntry is the runtime layer's word on one flag.
type runtimeEntry struct {
	// Enabled overrides the flag's enabled field when set.
	Enabled *bool `json:"enabled,omitempty"`
	// Flag replaces the flag's definition when set (or adds the flag).
	Flag json.RawMessage `json:"flag,omitempty"`
	// Rollout is the state of the flag's guarded rollout.
	Rollout *rollout.State `json:"rollout,omitempty"`
	Actor   string         `json:"actor"`
	Reason  string         `json:"reason,omitempty"`
	At      time.Time      `json:"at"`
}

// Change is one audited change through the admin API.
type Change struct {
	At         time.Time       `json:"at"`
	Actor      string          `json:"actor"`
	Reason     string          `json:"reason,omitempty"`
	RemoteAddr string          `json:"remote_addr,omitempty"`
	Flag       string          `json:"flag"`
	Action     string          `json:"action"`
	Before     json.RawMessage `json:"before,omitempty"`
	After      json.RawMessage `json:"after,omitempty"`
	// Decision is a rollout's decision, with the numbers behind it.
	Decision *rollout.Decision `json:"decision,omitempty"`
}

const maxRecent = 100

// stateFile is what a store holds.
type stateFile struct {
	Version int `json:"version"` // of the format: 1
	// Generation counts the writes: a node serves a document with a
	// larger one than it has.
	Generation uint64                  `json:"generation,omitempty"`
	Flags      map[string]runtimeEntry `json:"flags"`
	// Recent are the latest changes, newest last: the audit trail every
	// node of a fleet lists.
	Recent []Change `json:"recent,omitempty"`
}

var (
	layersMu sync.Mutex
	layers   = map[string]*runtimeLayer{}
)

// openRuntimeLayer returns the layer kept in store, reading it the first
// time (and, for a shared store, again: another node may have changed
// it). A store that cannot be read is an error: starting without it would
// silently undo kill switches.
func openRuntimeLayer(store layerStore) (*runtimeLayer, error) {
	layersMu.Lock()
	defer layersMu.Unlock()
	l, ok := layers[store.where()]
	if ok {
		if _, shared := store.(storageStore); !shared {
			return l, nil
		}
	}
	doc, err := store.read()
	if err != nil {
		return nil, fmt.Errorf("feature_flags: %w", err)
	}
	if !ok {
		l = &runtimeLayer{}
		layers[store.where()] = l
	}
	l.mu.Lock()
	l.store = store // a reload may bring another storage module
	l.mu.Unlock()
	if _, err := l.follow(doc); err != nil {
		return nil, fmt.Errorf("feature_flags: %s: %w", store.where(), err)
	}
	metricStoreUp.Set(1)
	return l, nil
}

// follow takes a document read from the store when it is another than
// the one the layer has — the store is the truth, even one restored from
// a backup — and reports whether it did. A store with no document at all
// after one was read is not followed: a lost key must not silently drop
// the fleet's kill switches (errLayerMissing).
func (l *runtimeLayer) follow(doc stateFile) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case doc.Generation == 0 && l.generation > 0:
		return false, errLayerMissing
	case doc.Generation == l.generation && l.entries != nil:
		return false, nil
	}
	l.entries, l.recent, l.generation = doc.Flags, doc.Recent, doc.Generation
	if l.entries == nil {
		l.entries = map[string]runtimeEntry{}
	}
	return true, nil
}

var errLayerMissing = errors.New("the fleet's runtime layer is missing from the store: this node serves the last one it read, and its next change stores that copy again")

// storeAnswered notes whether the shared store answered the last poll.
func (l *runtimeLayer) storeAnswered(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.storeErr = nil
		metricStoreUp.Set(1)
	case l.storeErr == nil:
		l.storeErr = &loadError{Message: err.Error(), Source: l.store.where(), At: time.Now().UTC()}
		metricStoreUp.Set(0)
	}
}

// storeError returns since when, and why, the shared store does not answer.
func (l *runtimeLayer) storeError() *loadError {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.storeErr
}

// snapshot returns a copy of the entries, for building a flag set.
func (l *runtimeLayer) snapshot() map[string]runtimeEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.entries)
}

// recentChanges returns the latest changes, newest first.
func (l *runtimeLayer) recentChanges() []Change {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Change, len(l.recent))
	for i, c := range l.recent {
		out[len(out)-1-i] = c
	}
	return out
}

// update changes the entry for key with fn (which returns false to drop
// it) in the latest document of the store, lets try build and check the
// resulting flag set, and only when that succeeds stores it — with audit,
// when given, added to the recent changes — and keeps the change. It
// returns what try returned, or why the store refused.
func (l *runtimeLayer) update(key string, fn func(e runtimeEntry, ok bool) (runtimeEntry, bool), try func(map[string]runtimeEntry) error, audit *Change) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var kept stateFile
	err := l.store.transact(func(cur stateFile) (stateFile, error) {
		if cur.Generation == 0 && l.generation > 0 { // the store lost it: this node's copy is the best there is
			cur = stateFile{Version: 1, Generation: l.generation, Flags: l.entries, Recent: l.recent}
		}
		next := make(map[string]runtimeEntry, len(cur.Flags)+1)
		for k, v := range cur.Flags {
			next[k] = v
		}
		old, ok := next[key]
		if e, keep := fn(old, ok); keep {
			next[key] = e
		} else {
			delete(next, key)
		}
		if err := try(next); err != nil {
			return cur, err
		}
		recent := cur.Recent
		if cur.Generation == l.generation {
			recent = l.recent // with this node's own records since
		}
		if audit != nil {
			recent = appendRecent(recent, *audit)
		}
		kept = stateFile{Version: 1, Generation: cur.Generation + 1, Flags: next, Recent: recent}
		return kept, nil
	})
	if err != nil {
		return err
	}
	l.entries, l.recent, l.generation = kept.Flags, kept.Recent, kept.Generation
	return nil
}

// record keeps a change edgeflags made by itself in this node's recent
// changes (a fleet's store keeps those made through update).
func (l *runtimeLayer) record(c Change) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recent = appendRecent(l.recent, c)
}

// appendRecent adds c to a list of recent changes, keeping the newest
// maxRecent, without writing into an array another list shares.
func appendRecent(list []Change, c Change) []Change {
	list = append(slices.Clip(list), c)
	return list[max(0, len(list)-maxRecent):]
}

// apply lays entries over the base documents: replaced definitions and
// enabled overrides take the place of the base flags, and flags only the
// layer defines go in a document of their own. Entries whose flag is
// neither in the base nor defined by the layer are returned as orphans.
func apply(base []*rules.Document, entries map[string]runtimeEntry) (docs []*rules.Document, orphans []string, err error) {
	defined := map[string]*rules.Flag{}
	keys := make([]string, 0, len(entries))
	for k := range entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []error
	for _, k := range keys {
		if e := entries[k]; e.Flag != nil {
			f, err := rules.ParseFlag("runtime layer", k, e.Flag)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			defined[k] = f
		}
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	used := map[string]bool{}
	override := func(f *rules.Flag) *rules.Flag {
		e, ok := entries[f.Key]
		if !ok {
			return f
		}
		used[f.Key] = true
		if d := defined[f.Key]; d != nil {
			f = d
		}
		if e.Enabled != nil {
			c := *f
			c.Enabled = e.Enabled
			f = &c
		}
		if st := e.Rollout; st != nil && f.Rollout != nil && len(f.Rollout.Steps) > 0 {
			f = withRolloutShare(f, st)
		}
		return f
	}
	for _, d := range base {
		nd := &rules.Document{Name: d.Name, Segments: d.Segments, Flags: make([]*rules.Flag, len(d.Flags))}
		for i, f := range d.Flags {
			nd.Flags[i] = override(f)
		}
		docs = append(docs, nd)
	}
	layer := &rules.Document{Name: "runtime layer"}
	for _, k := range keys {
		if used[k] {
			continue
		}
		if defined[k] == nil {
			orphans = append(orphans, k)
			continue
		}
		layer.Flags = append(layer.Flags, override(defined[k]))
	}
	if len(layer.Flags) > 0 {
		docs = append(docs, layer)
	}
	return docs, orphans, nil
}

// writeFileAtomic writes data to path so that a crash leaves the old file
// or the new one, never a mix: a temporary file beside it, fsync, rename,
// fsync of the directory.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, there is nothing to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err) // only types of this package, which always marshal
	}
	return b
}

// runtimeDiff is a flag on which the runtime layer and the files
// disagree, and who made it so.
type runtimeDiff struct {
	Flag string `json:"flag"`
	// Runtime is what the layer does: killed, pinned enabled, replaced,
	// replaced and killed, added, added and killed.
	Runtime string `json:"runtime"`
	// File is what the files say: enabled, disabled, or absent.
	File   string    `json:"file"`
	Actor  string    `json:"actor"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// fileFlag returns the sources' definition of key, or nil; the caller
// holds l.mu or reads a base that no longer changes.
func (l *loader) fileFlag(key string) *rules.Flag {
	return findFlag(l.base.docs, key)
}

// findFlag returns the definition of key in docs, or nil.
func findFlag(docs []*rules.Document, key string) *rules.Flag {
	for _, d := range docs {
		for _, f := range d.Flags {
			if f.Key == key {
				return f
			}
		}
	}
	return nil
}

func enabledOf(f *rules.Flag) bool { return f == nil || f.Enabled == nil || *f.Enabled }

// definedEnabled reports whether key's definition, without the layer's
// enabled pin — the runtime replacement in e, or else the files' — says
// enabled. The caller holds l.mu.
func (l *loader) definedEnabled(key string, e runtimeEntry) bool {
	if e.Flag != nil {
		if f, err := rules.ParseFlag("runtime layer", key, e.Flag); err == nil {
			return enabledOf(f)
		}
	}
	return enabledOf(l.fileFlag(key))
}

// differs lists the entries of the runtime layer that make a flag serve
// otherwise than its files say.
func (l *loader) differs(entries map[string]runtimeEntry) []runtimeDiff {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []runtimeDiff
	for _, k := range sortedKeys(entries) {
		e := entries[k]
		file := l.fileFlag(k)
		d := runtimeDiff{Flag: k, File: "absent", Actor: e.Actor, Reason: e.Reason, At: e.At}
		if file != nil {
			d.File = map[bool]string{true: "enabled", false: "disabled"}[enabledOf(file)]
		}
		switch {
		case e.Flag != nil && file != nil:
			d.Runtime = "replaced"
		case e.Flag != nil:
			d.Runtime = "added"
		case e.Enabled == nil || *e.Enabled == enabledOf(file):
			continue // agrees with the file
		}
		if e.Enabled != nil {
			state := map[bool]string{true: "pinned enabled", false: "killed"}[*e.Enabled]
			if d.Runtime == "" {
				d.Runtime = state
			} else {
				d.Runtime += " and " + state
			}
		}
		out = append(out, d)
	}
	return out
}
