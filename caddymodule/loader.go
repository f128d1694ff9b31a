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
	"strings"
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

	mu       sync.Mutex // serializes rebuilds; taken before layer.mu
	files    []*fileSource
	url      *urlSource
	base     parsed // the last good sources
	lastErr  *loadError
	orphans  []string
	setAside map[string]string // runtime entries that no longer fit: flag → why

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
	path    string
	seen    os.FileInfo
	pending os.FileInfo // an in-place change seen once, loaded when it holds still
	data    []byte
}

// loadError is why the latest change to a source was refused.
type loadError struct {
	Message string    `json:"message"`
	Source  string    `json:"source"`
	At      time.Time `json:"at"`
}

type urlSource struct {
	url       string
	interval  time.Duration
	client    *http.Client
	etag      string
	data      []byte // the last good body
	cachePath string
	fromCache bool
	finalURL  string // where the last answer came from, after redirects
}

// sourceStatus is how the admin API shows a source.
type sourceStatus struct {
	Kind      string `json:"kind"`
	Location  string `json:"location"`
	FinalURL  string `json:"final_url,omitempty"`
	ETag      string `json:"etag,omitempty"`
	FromCache bool   `json:"from_cache,omitempty"`
	Flags     int    `json:"flags"`
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
			client:    &http.Client{Timeout: urlTimeout, CheckRedirect: checkRedirect(a.FlagsURLRedirects == "any")},
			cachePath: filepath.Join(caddy.AppDataDir(), "feature_flags", "url-cache", fmt.Sprintf("%016x.json", xxh3.HashString(a.FlagsURL))),
		}
	}
	return l
}

// maxRedirects bounds the redirects a flags_url fetch follows.
const maxRedirects = 5

// checkRedirect refuses, unless any is set, redirects to another host and
// from HTTPS to HTTP: either hands the flags of every node to whoever
// controls the target.
func checkRedirect(any bool) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("more than %d redirects", maxRedirects)
		}
		if any {
			return nil
		}
		first := via[0].URL
		if req.URL.Host != first.Host {
			return fmt.Errorf("redirected from %s to another host, %s: point flags_url at the final URL, or allow it with flags_url_redirects any", first.Host, req.URL.Host)
		}
		if first.Scheme == "https" && req.URL.Scheme != "https" {
			return fmt.Errorf("redirected from HTTPS to %s: point flags_url at the final URL, or allow it with flags_url_redirects any", req.URL)
		}
		return nil
	}
}

// readSource reads a flags file through the size limit: a larger file is
// refused from its size alone, and one that grows while it is read is cut
// off at the limit, never read whole.
func readSource(path string) ([]byte, os.FileInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if st.Size() > rules.MaxSourceSize {
		return nil, st, fmt.Errorf("%s: %d bytes, more than the limit of %d: split the flags over several files", path, st.Size(), rules.MaxSourceSize)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, st, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, rules.MaxSourceSize+1))
	if err != nil {
		return nil, st, err
	}
	if len(data) > rules.MaxSourceSize {
		return nil, st, fmt.Errorf("%s: more than the limit of %d bytes: split the flags over several files", path, rules.MaxSourceSize)
	}
	return data, st, nil
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
		data, st, err := readSource(f.path)
		if err != nil {
			return fmt.Errorf("feature_flags: flags_file: %w", err)
		}
		f.data, f.seen = data, st
	}
	if l.url != nil {
		if err := l.loadURL(); err != nil {
			return err
		}
	}
	base, err := l.parse()
	if err != nil {
		return fmt.Errorf("feature_flags: the flags are invalid (check them with caddy flags validate): %s", oneLine(err))
	}
	for _, doc := range base.docs {
		if definesNothing(doc) {
			l.logger.Warn("a flags source defines no flags", zap.String("source", doc.Name))
		}
	}
	b := l.build(base, l.layer.snapshot())
	if err := l.app.checkSet(b.set); err != nil {
		return fmt.Errorf("feature_flags: %s", oneLine(err))
	}
	l.base = base
	l.adopt(b)
	l.swap(b.set)
	return nil
}

// definesNothing reports whether a source is empty, comments only, or {}.
func definesNothing(doc *rules.Document) bool {
	return len(doc.Flags) == 0 && len(doc.Segments) == 0
}

// emptied refuses, unless allow_empty_flags is set, a change that leaves a
// source which defined flags defining nothing: an origin answering 200 with
// an empty body, or a file truncated to nothing, must not wipe every flag.
func (l *loader) emptied(next parsed) error {
	if l.app.AllowEmptyFlags || l.base.docs == nil {
		return nil
	}
	var names []string
	for i, doc := range next.docs {
		if definesNothing(doc) && i < len(l.base.docs) && !definesNothing(l.base.docs[i]) {
			names = append(names, doc.Name)
		}
	}
	if names == nil {
		return nil
	}
	return fmt.Errorf("%s now defines no flags (empty, comments only, or {}): refusing to drop %d flags; if that is intended, set allow_empty_flags",
		strings.Join(names, ", "), l.base.set.Len())
}

// loadURL fetches the URL source at start-up, falling back to the cached
// last good copy when the origin is down or serves something broken.
func (l *loader) loadURL() error {
	u := l.url
	body, etag, final, err := u.fetch()
	u.finalURL = final // at start-up: nothing reads it yet
	var empty bool
	if err == nil && body != nil {
		doc, perr := rules.Parse(u.url, body)
		switch {
		case perr != nil:
			err = fmt.Errorf("the origin serves invalid flags:\n%w", perr)
		case definesNothing(doc) && !l.app.AllowEmptyFlags:
			empty = true
		}
	}
	if err == nil && !empty {
		u.data, u.etag = body, etag
		l.writeCache()
		return nil
	}
	cached, cerr := readURLCache(u.cachePath)
	if err == nil {
		if cerr != nil || len(cached.Body) == 0 {
			u.data, u.etag = body, etag // empty, and nothing better to start from
			return nil
		}
		// An empty answer is more likely a broken origin than the end of
		// every flag: start from the last good copy, as during an outage.
		err = errors.New("the origin serves a document that defines no flags (set allow_empty_flags if that is intended)")
	}
	if errors.Is(cerr, os.ErrNotExist) {
		return fmt.Errorf("feature_flags: flags_url %s: %v, and there is no cached copy (%s) to start from", u.url, err, u.cachePath)
	}
	if cerr != nil {
		return fmt.Errorf("feature_flags: flags_url %s: %v, and %v", u.url, err, cerr)
	}
	u.data, u.etag, u.fromCache = cached.Body, cached.ETag, true
	l.logger.Warn("flags_url unavailable at start-up: serving the cached copy; the origin is polled in the background",
		zap.String("url", u.url), zap.Error(err), zap.String("cache", u.cachePath))
	return nil
}

// urlCache is the last good copy of the URL source, kept under Caddy's
// data directory for start-ups during an outage.
type urlCache struct {
	URL  string `json:"url"`
	ETag string `json:"etag"`
	Body []byte `json:"body"`
}

func readURLCache(path string) (urlCache, error) {
	var c urlCache
	data, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("the cached copy %s is unreadable: %v", path, err)
	}
	return c, nil
}

func (l *loader) writeCache() {
	u := l.url
	data := mustJSON(urlCache{u.url, u.etag, u.data})
	if err := writeFileAtomic(u.cachePath, data); err != nil {
		l.logger.Warn("cannot cache flags_url copy; a restart during an origin outage will fail", zap.String("cache", u.cachePath), zap.Error(err))
	}
}

// fetch gets the URL, conditionally on the ETag. A nil body with a nil
// error means not modified.
func (u *urlSource) fetch() (body []byte, etag, finalURL string, err error) {
	req, err := http.NewRequest(http.MethodGet, u.url, nil)
	if err != nil {
		return nil, "", "", err
	}
	if u.etag != "" {
		req.Header.Set("If-None-Match", u.etag)
	}
	req.Header.Set("Accept", "application/yaml, application/json;q=0.9, */*;q=0.5")
	resp, err := u.client.Do(req)
	if err != nil {
		return nil, "", "", err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return nil, u.etag, u.finalURL, nil
	case http.StatusOK:
	default:
		return nil, "", "", fmt.Errorf("GET %s: %s", u.url, resp.Status)
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, rules.MaxSourceSize+1))
	if err != nil {
		return nil, "", "", fmt.Errorf("GET %s: %w", u.url, err)
	}
	if len(body) > rules.MaxSourceSize {
		return nil, "", "", fmt.Errorf("GET %s: more than %d bytes", u.url, rules.MaxSourceSize)
	}
	final := "" // where a redirect led; the caller keeps it, under the loader's lock
	if f := resp.Request.URL.String(); f != u.url {
		final = f
	}
	return body, resp.Header.Get("ETag"), final, nil
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

// built is a flag set with what the runtime layer could not add to it.
type built struct {
	set      *rules.Set
	orphans  []string          // entries for flags nothing defines
	setAside map[string]string // entries that no longer compile with the sources: flag → why
}

// build lays the runtime layer's entries over the sources and compiles the
// result; with no entries, the sources' own set serves as it is. An entry
// that no longer fits — it names a segment or a flag the files dropped, say
// — is set aside, never blocks the sources: the sources compile alone, so
// build always returns a set.
func (l *loader) build(base parsed, entries map[string]runtimeEntry) built {
	if len(entries) == 0 {
		return built{set: base.set}
	}
	b, err := compileLayer(base, entries)
	if err == nil {
		return b
	}
	// Find the entries that do not fit: keep each one that compiles with
	// the ones kept before it; the last set that compiled serves.
	keep := map[string]runtimeEntry{}
	aside := map[string]string{}
	b = built{set: base.set}
	for _, k := range sortedKeys(entries) {
		keep[k] = entries[k]
		next, err := compileLayer(base, keep)
		if err != nil {
			aside[k] = err.Error()
			delete(keep, k)
			continue
		}
		b = next
	}
	b.setAside = aside
	return b
}

// compileLayer compiles the sources with entries laid over them.
func compileLayer(base parsed, entries map[string]runtimeEntry) (built, error) {
	if len(entries) == 0 {
		return built{set: base.set}, nil
	}
	docs, orphans, err := apply(base.docs, entries)
	if err != nil {
		return built{}, err
	}
	set, err := rules.Compile(docs...)
	if err != nil {
		return built{}, err
	}
	set.Version = fmt.Sprintf("%s-%016x", base.version, xxh3.Hash(mustJSON(entries)))
	return built{set: set, orphans: orphans}, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// warnPinned logs every flag whose enabled field the files change while
// the runtime layer pins it: the file's change does not apply, and the
// operator editing the file should hear why. The caller holds l.mu.
func (l *loader) warnPinned(next parsed) {
	for key, e := range l.layer.snapshot() {
		if e.Enabled == nil || e.Flag != nil {
			continue
		}
		before, after := enabledOf(l.fileFlag(key)), enabledOf(findFlag(next.docs, key))
		if before != after && after != *e.Enabled {
			l.logger.Warn("the files change a flag's enabled field, but the runtime layer pins it: the pin serves; drop it with enable or DELETE /feature-flags/flags/"+key+"/runtime",
				zap.String("flag", key), zap.Bool("file_enabled", after), zap.Bool("runtime_enabled", *e.Enabled),
				zap.String("pinned_by", e.Actor), zap.Time("pinned_at", e.At))
		}
	}
}

// adopt records what a build left out of the runtime layer, auditing every
// entry newly set aside and every one that fits again.
func (l *loader) adopt(b built) {
	l.orphans = b.orphans
	for _, k := range sortedKeys(b.setAside) {
		if _, was := l.setAside[k]; !was {
			l.logger.Error("a runtime layer entry no longer fits the flags and is set aside: the files' definition serves; drop it with DELETE /feature-flags/flags/"+k+"/runtime, or restore what it needs",
				zap.String("flag", k), zap.String("error", b.setAside[k]))
			l.app.auditSystem(k, "runtime_set_aside", b.setAside[k])
		}
	}
	for _, k := range sortedKeys(l.setAside) {
		if _, still := b.setAside[k]; !still {
			l.app.auditSystem(k, "runtime_reapplied", "the entry fits the flags again")
		}
	}
	l.setAside = b.setAside
	metricRuntimeSetAside.Set(float64(len(b.setAside)))
}

func (l *loader) swap(set *rules.Set) {
	old := l.app.set.Swap(set)
	metricVersion.Reset()
	metricVersion.WithLabelValues(set.Version).Set(1)
	metricFlags.Set(float64(set.Len()))
	forgetObserved(set)
	if old != nil {
		forgetFlags(old, set)
		l.logger.Info("flags applied", zap.String("version", set.Version), zap.String("previous", old.Version), zap.Int("flags", set.Len()))
	}
}

// fail records why a change to what's named by source was refused.
func (l *loader) fail(source string, err error) {
	l.lastErr = &loadError{Message: err.Error(), Source: source, At: time.Now().UTC()}
	metricReloads.WithLabelValues("error").Inc()
}

// reload rebuilds after sources changed, and reports whether a new set
// serves; the caller holds l.mu. A refused change is logged, counted and
// kept as lastErr.
func (l *loader) reload(what string) (bool, error) {
	base, err := l.parse()
	if err == nil && base.version == l.base.version {
		l.lastErr = nil // back to what serves: nothing is wrong any more
		return false, nil
	}
	if err == nil {
		err = l.emptied(base)
	}
	var b built
	if err == nil {
		b = l.build(base, l.layer.snapshot())
		err = l.app.checkSet(b.set)
	}
	if err != nil {
		l.fail(what, err)
		l.logger.Error("refusing changed flags: the last good flags keep serving",
			zap.String("source", what), zap.String("serving", l.app.set.Load().Version), zap.Error(err))
		return false, err
	}
	l.warnPinned(base)
	l.base, l.lastErr = base, nil
	l.adopt(b)
	metricReloads.WithLabelValues("ok").Inc()
	l.swap(b.set)
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
	if s, shared := l.layer.store.(storageStore); shared {
		l.wg.Add(1)
		go l.watchLayer(s)
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
//
// A file replaced whole — renamed over, as editors, config management and
// Kubernetes do — is complete and loads at once. A file changed in place
// may be half written: it loads only once its size and time have held
// still for one check interval, and is not used if it changes while read.
func (l *loader) checkFiles() {
	l.mu.Lock()
	defer l.mu.Unlock()
	var changed []string
	for _, f := range l.files {
		st, err := os.Stat(f.path)
		if err != nil {
			if f.seen != nil {
				f.seen = nil
				l.fail(f.path, fmt.Errorf("flags_file: %w", err))
				l.logger.Error("flags file unreadable: the last good flags keep serving", zap.Error(err))
			}
			continue
		}
		if f.seen != nil && sameStat(st, f.seen) {
			f.pending = nil
			continue
		}
		if f.seen != nil && os.SameFile(st, f.seen) && (f.pending == nil || !sameStat(st, f.pending)) {
			f.pending = st // written in place: wait until it holds still
			continue
		}
		data, _, err := readSource(f.path)
		if err != nil {
			f.seen = st
			l.fail(f.path, fmt.Errorf("flags_file: %w", err))
			l.logger.Error("refusing changed flags file: the last good flags keep serving", zap.Error(err))
			continue
		}
		if after, err := os.Stat(f.path); err != nil || !sameStat(after, st) {
			continue // changed while read: next tick
		}
		f.seen, f.pending, f.data = st, nil, data
		changed = append(changed, f.path)
	}
	if len(changed) > 0 {
		sort.Strings(changed)
		l.reload(strings.Join(changed, ", "))
	}
}

// oneLine writes a config-load error so that it reads well where Caddy
// shows it: inside JSON (its logs, the admin API), and inside JSON again
// (caddy reload logs the admin API's answer). Line breaks would become
// \n and quotes \\\", so errors go on one line, and quotes are single.
func oneLine(err error) string {
	msg := strings.NewReplacer("\n", " | ", `"`, "'").Replace(err.Error())
	if es := (rules.Errors)(nil); errors.As(err, &es) && len(es) > 1 {
		return fmt.Sprintf("%d errors: %s", es.Count(), msg)
	}
	return msg
}

func sameStat(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
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
		body, etag, final, err := u.fetch()
		if err != nil {
			failures++
			l.mu.Lock()
			l.fail(u.url, fmt.Errorf("flags_url: %w", err))
			l.mu.Unlock()
			l.logger.Warn("flags_url fetch failed: the last good flags keep serving", zap.String("url", u.url), zap.Int("failures", failures), zap.Duration("next_try_in", min(u.interval<<min(failures, 10), maxURLBackoff)), zap.Error(err))
			continue
		}
		failures = 0
		if body == nil {
			continue // 304 Not Modified
		}
		l.mu.Lock()
		u.finalURL = final
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
		if u.finalURL != "" {
			l.logger.Info("flags_url was redirected", zap.String("url", u.url), zap.String("final_url", u.finalURL))
		}
		l.mu.Unlock()
	}
}

// loaderStatus is how the admin API shows the loader.
type loaderStatus struct {
	sources  []sourceStatus
	lastErr  *loadError
	orphans  []string
	setAside map[string]string
}

// filesModified is when the flag files last changed, as the loader last
// read them: the latest modification time, or zero when a URL is a source
// too (its answers carry no such time).
func (l *loader) filesModified() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var latest time.Time
	if l.url != nil {
		return latest
	}
	for _, f := range l.files {
		if f.seen != nil && f.seen.ModTime().After(latest) {
			latest = f.seen.ModTime()
		}
	}
	return latest
}

// status reports the sources for the admin API.
func (l *loader) status() loaderStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := loaderStatus{lastErr: l.lastErr, orphans: l.orphans, setAside: l.setAside}
	flags := func(i int) int {
		if i < len(l.base.docs) {
			return len(l.base.docs[i].Flags)
		}
		return 0
	}
	for i, f := range l.files {
		st.sources = append(st.sources, sourceStatus{Kind: "file", Location: f.path, Flags: flags(i)})
	}
	if u := l.url; u != nil {
		st.sources = append(st.sources, sourceStatus{Kind: "url", Location: u.url, FinalURL: u.finalURL, ETag: u.etag, FromCache: u.fromCache, Flags: flags(len(l.files))})
	}
	return st
}
