package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/zeebo/xxh3"
	"go.uber.org/zap"

	"github.com/edgeflags/edgeflags/rules"
)

// Defaults for watching sources.
const (
	DefaultFilesCheckInterval = 500 * time.Millisecond
	DefaultURLInterval        = 30 * time.Second
	urlTimeout                = 10 * time.Second
	maxURLBackoff             = 5 * time.Minute
)

// loader keeps the flag set serving: it reads the sources, watches them,
// and rebuilds the set from the last good sources and the runtime layer. A
// source that fails to load is refused whole; the last good set serves on.
type loader struct {
	app    *App
	logger *zap.Logger
	layer  *runtimeLayer

	mu        sync.Mutex // serializes rebuilds; taken before layer.mu
	files     []*fileSource
	url       *urlSource
	base      parsed // the last good sources
	lastErr   error
	lastErrAt time.Time
	orphans   []string

	stop chan struct{}
	wg   sync.WaitGroup
}

// parsed is the flag sources as last read: parsed, compiled alone (the set
// that serves while the runtime layer is empty), and their version.
type parsed struct {
	docs    []*rules.Document
	set     *rules.Set
	version string
}

type fileSource struct {
	path string
	seen os.FileInfo
	data []byte
}

type urlSource struct {
	url       string
	interval  time.Duration
	client    *http.Client
	etag      string
	data      []byte // the last good body
	cachePath string
	fromCache bool
}

// sourceStatus is how the admin API shows a source.
type sourceStatus struct {
	Kind      string `json:"kind"`
	Location  string `json:"location"`
	ETag      string `json:"etag,omitempty"`
	FromCache bool   `json:"from_cache,omitempty"`
}

func newLoader(a *App, layer *runtimeLayer) *loader {
	l := &loader{app: a, logger: a.logger, layer: layer, stop: make(chan struct{})}
	for _, p := range a.FlagsFiles {
		l.files = append(l.files, &fileSource{path: p})
	}
	if a.FlagsURL != "" {
		interval := time.Duration(a.FlagsURLInterval)
		if interval <= 0 {
			interval = DefaultURLInterval
		}
		l.url = &urlSource{
			url: a.FlagsURL, interval: interval,
			client:    &http.Client{Timeout: urlTimeout},
			cachePath: filepath.Join(caddy.AppDataDir(), "feature_flags", "url-cache", fmt.Sprintf("%016x.json", xxh3.HashString(a.FlagsURL))),
		}
	}
	return l
}

// load reads every source for the first time and builds the first set.
// Any problem is an error: a config with bad flags does not load.
func (l *loader) load() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.files) == 0 && l.url == nil {
		return errNoSources
	}
	for _, f := range l.files {
		st, err := os.Stat(f.path)
		if err != nil {
			return fmt.Errorf("feature_flags: flags_file: %w", err)
		}
		if f.data, err = os.ReadFile(f.path); err != nil {
			return fmt.Errorf("feature_flags: flags_file: %w", err)
		}
		f.seen = st
	}
	if l.url != nil {
		if err := l.loadURL(); err != nil {
			return err
		}
	}
	base, err := l.parse()
	if err != nil {
		return fmt.Errorf("feature_flags: the flags are invalid:\n%w", err)
	}
	set, orphans, err := l.build(base, l.layer.snapshot())
	if err != nil {
		return fmt.Errorf("feature_flags: the runtime layer in %s no longer fits the flags: %w\n(fix the flags, or edit the state file to drop the change)", l.layer.path, err)
	}
	l.base, l.orphans = base, orphans
	l.swap(set)
	return nil
}

// loadURL fetches the URL source at start-up, falling back to the cached
// last good copy when the origin is down or serves something broken.
func (l *loader) loadURL() error {
	u := l.url
	body, etag, err := u.fetch()
	if err == nil && body != nil {
		if _, perr := rules.Parse(u.url, body); perr != nil {
			err = fmt.Errorf("the origin serves invalid flags:\n%w", perr)
		}
	}
	if err == nil {
		u.data, u.etag = body, etag
		l.writeCache()
		return nil
	}
	cached, cerr := os.ReadFile(u.cachePath)
	if cerr != nil {
		return fmt.Errorf("feature_flags: flags_url %s: %v, and there is no cached copy (%s) to start from", u.url, err, u.cachePath)
	}
	var c struct {
		ETag string `json:"etag"`
		Body []byte `json:"body"`
	}
	if jerr := json.Unmarshal(cached, &c); jerr != nil {
		return fmt.Errorf("feature_flags: flags_url %s: %v, and the cached copy %s is unreadable: %v", u.url, err, u.cachePath, jerr)
	}
	u.data, u.etag, u.fromCache = c.Body, c.ETag, true
	l.logger.Warn("flags_url unavailable at start-up: serving the cached copy; the origin is polled in the background",
		zap.String("url", u.url), zap.Error(err), zap.String("cache", u.cachePath))
	return nil
}

func (l *loader) writeCache() {
	u := l.url
	data := mustJSON(struct {
		URL  string `json:"url"`
		ETag string `json:"etag"`
		Body []byte `json:"body"`
	}{u.url, u.etag, u.data})
	if err := writeFileAtomic(u.cachePath, data); err != nil {
		l.logger.Warn("cannot cache flags_url copy; a restart during an origin outage will fail", zap.String("cache", u.cachePath), zap.Error(err))
	}
}

// fetch gets the URL, conditionally on the ETag. A nil body with a nil
// error means not modified.
func (u *urlSource) fetch() ([]byte, string, error) {
	req, err := http.NewRequest(http.MethodGet, u.url, nil)
	if err != nil {
		return nil, "", err
	}
	if u.etag != "" {
		req.Header.Set("If-None-Match", u.etag)
	}
	req.Header.Set("Accept", "application/yaml, application/json;q=0.9, */*;q=0.5")
	resp, err := u.client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return nil, u.etag, nil
	case http.StatusOK:
	default:
		return nil, "", fmt.Errorf("GET %s: %s", u.url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, rules.MaxSourceSize+1))
	if err != nil {
		return nil, "", fmt.Errorf("GET %s: %w", u.url, err)
	}
	if len(body) > rules.MaxSourceSize {
		return nil, "", fmt.Errorf("GET %s: more than %d bytes", u.url, rules.MaxSourceSize)
	}
	return body, resp.Header.Get("ETag"), nil
}

// parse parses and compiles every source's current content as one set,
// alone: the sources' own problems are reported as theirs, not as the
// runtime layer's.
func (l *loader) parse() (parsed, error) {
	var sources []rules.Source
	for _, f := range l.files {
		sources = append(sources, rules.Source{Name: f.path, Data: f.data})
	}
	if l.url != nil {
		sources = append(sources, rules.Source{Name: l.url.url, Data: l.url.data})
	}
	docs, set, err := rules.LoadDocuments(sources...)
	if err != nil {
		return parsed{}, err
	}
	return parsed{docs: docs, set: set, version: set.Version}, nil
}

// build lays the runtime layer's entries over the sources and compiles
// the result; with no entries, the sources' own set serves as it is.
func (l *loader) build(base parsed, entries map[string]runtimeEntry) (*rules.Set, []string, error) {
	if len(entries) == 0 {
		return base.set, nil, nil
	}
	docs, orphans, err := apply(base.docs, entries)
	if err != nil {
		return nil, nil, err
	}
	set, err := rules.Compile(docs...)
	if err != nil {
		return nil, nil, err
	}
	set.Version = fmt.Sprintf("%s-%016x", base.version, xxh3.Hash(mustJSON(entries)))
	return set, orphans, nil
}

func (l *loader) swap(set *rules.Set) {
	old := l.app.set.Swap(set)
	metricVersion.Reset()
	metricVersion.WithLabelValues(set.Version).Set(1)
	metricFlags.Set(float64(set.Len()))
	if old != nil {
		l.logger.Info("flags applied", zap.String("version", set.Version), zap.String("previous", old.Version), zap.Int("flags", set.Len()))
	}
}

// reload rebuilds after sources changed, and reports whether a new set
// serves; the caller holds l.mu. A refused change is logged, counted and
// kept as lastErr.
func (l *loader) reload(what string) (bool, error) {
	base, err := l.parse()
	if err == nil && base.version == l.base.version {
		return false, nil // touched, not changed
	}
	var set *rules.Set
	var orphans []string
	if err == nil {
		set, orphans, err = l.build(base, l.layer.snapshot())
	}
	if err != nil {
		l.lastErr, l.lastErrAt = err, time.Now()
		metricReloads.WithLabelValues("error").Inc()
		l.logger.Error("refusing changed flags: the last good flags keep serving",
			zap.String("source", what), zap.String("serving", l.app.set.Load().Version), zap.Error(err))
		return false, err
	}
	l.base, l.orphans, l.lastErr = base, orphans, nil
	metricReloads.WithLabelValues("ok").Inc()
	l.swap(set)
	return true, nil
}

func (l *loader) start() {
	if len(l.files) > 0 {
		l.wg.Add(1)
		go l.watchFiles()
	}
	if l.url != nil {
		l.wg.Add(1)
		go l.pollURL()
	}
}

func (l *loader) close() {
	close(l.stop)
	l.wg.Wait()
}

func (l *loader) watchFiles() {
	defer l.wg.Done()
	interval := time.Duration(l.app.FlagsCheckInterval)
	if interval <= 0 {
		interval = DefaultFilesCheckInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.checkFiles()
		}
	}
}

// checkFiles rereads files whose stat changed (a symlink swap included:
// stat follows links) and reloads if any did.
func (l *loader) checkFiles() {
	l.mu.Lock()
	defer l.mu.Unlock()
	var changed []string
	for _, f := range l.files {
		st, err := os.Stat(f.path)
		if err != nil {
			if f.seen != nil {
				f.seen = nil
				l.lastErr, l.lastErrAt = fmt.Errorf("flags_file: %w", err), time.Now()
				metricReloads.WithLabelValues("error").Inc()
				l.logger.Error("flags file unreadable: the last good flags keep serving", zap.Error(err))
			}
			continue
		}
		if f.seen != nil && os.SameFile(st, f.seen) && st.Size() == f.seen.Size() && st.ModTime().Equal(f.seen.ModTime()) {
			continue
		}
		data, err := os.ReadFile(f.path)
		if err != nil {
			continue // next tick
		}
		f.seen, f.data = st, data
		changed = append(changed, f.path)
	}
	if len(changed) > 0 {
		sort.Strings(changed)
		l.reload(fmt.Sprint(changed))
	}
}

// errNoSources is returned when a config names no flag source.
var errNoSources = errors.New("feature_flags: no flags_file or flags_url: add one, e.g. flags_file flags.yaml")

func (l *loader) pollURL() {
	defer l.wg.Done()
	u := l.url
	failures := 0
	for {
		wait := u.interval
		if failures > 0 {
			wait = min(u.interval<<min(failures, 10), maxURLBackoff)
		}
		wait += time.Duration(rand.Int64N(int64(wait/10) + 1)) // jitter: a fleet does not poll in step
		select {
		case <-l.stop:
			return
		case <-time.After(wait):
		}
		body, etag, err := u.fetch()
		if err != nil {
			failures++
			metricReloads.WithLabelValues("error").Inc()
			l.mu.Lock()
			l.lastErr, l.lastErrAt = fmt.Errorf("flags_url: %w", err), time.Now()
			l.mu.Unlock()
			l.logger.Warn("flags_url fetch failed: the last good flags keep serving", zap.String("url", u.url), zap.Int("failures", failures), zap.Duration("next_try_in", min(u.interval<<min(failures, 10), maxURLBackoff)), zap.Error(err))
			continue
		}
		failures = 0
		if body == nil {
			continue // 304 Not Modified
		}
		l.mu.Lock()
		old := u.data
		u.data, u.etag = body, etag // the ETag even of a refused body: no refetch until it changes
		applied, err := l.reload(u.url)
		switch {
		case err != nil:
			u.data = old // keep the last good body, for the cache and the next rebuild
		case applied:
			u.fromCache = false
			l.writeCache()
		}
		l.mu.Unlock()
	}
}

// status reports the sources for the admin API.
func (l *loader) status() (sources []sourceStatus, lastErr string, lastErrAt time.Time, orphans []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, f := range l.files {
		sources = append(sources, sourceStatus{Kind: "file", Location: f.path})
	}
	if l.url != nil {
		sources = append(sources, sourceStatus{Kind: "url", Location: l.url.url, ETag: l.url.etag, FromCache: l.url.fromCache})
	}
	if l.lastErr != nil {
		lastErr, lastErrAt = l.lastErr.Error(), l.lastErrAt
	}
	return sources, lastErr, lastErrAt, l.orphans
}
