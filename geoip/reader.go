package geoip

import (
	"errors"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// DefaultInterval is how often a Reader checks its file for a new version.
const DefaultInterval = 5 * time.Second

// Options configure a Reader.
type Options struct {
	// Interval between checks of the file; DefaultInterval when zero.
	Interval time.Duration
	// Logger receives reloads and refused files; nothing is logged when nil.
	Logger *zap.Logger
	// OnReload, when set, is called after every attempt to load a changed
	// file: with the new Database, or with the error that refused it.
	OnReload func(db *Database, err error)
}

// Reader serves lookups from a database file and replaces it when the file
// changes. A new file is read, verified and flattened completely before it
// is swapped in with one atomic store, so a lookup sees the old database or
// the new one, never a mix and never a closed one. A file that fails to
// open is refused, logged, and the current database keeps serving.
type Reader struct {
	path string
	opts Options
	db   atomic.Pointer[Database]

	mu      sync.Mutex // serializes reloads
	seen    os.FileInfo
	lastErr error

	stop chan struct{}
	done chan struct{}
}

// Watch opens the database at path and watches it for changes. A missing
// or corrupt file is an error that names the path and what is wrong.
// The file is followed through symbolic links, so replacing a link's target
// (as Kubernetes does with ConfigMap volumes) counts as a change.
func Watch(path string, opts Options) (*Reader, error) {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	r := &Reader{path: path, opts: opts, stop: make(chan struct{}), done: make(chan struct{})}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmtOpenError(path, err)
	}
	db, err := Open(path)
	if err != nil {
		return nil, err
	}
	r.db.Store(db)
	r.seen = st
	go r.watch()
	return r, nil
}

func fmtOpenError(path string, err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return errors.New("geoip database " + path + ": no such file: download one (see README, GeoIP) or fix the path")
	}
	return errors.New("geoip database " + path + ": " + err.Error())
}

// Lookup returns the location of ip in the current database.
func (r *Reader) Lookup(ip netip.Addr) Location {
	return r.db.Load().Lookup(ip)
}

// Database returns the database now serving.
func (r *Reader) Database() *Database { return r.db.Load() }

// Path returns the watched file.
func (r *Reader) Path() string { return r.path }

// LastError returns why the latest changed file was refused, or nil when
// the latest change loaded.
func (r *Reader) LastError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// Close stops watching. Lookups keep working on the last database.
func (r *Reader) Close() error {
	select {
	case <-r.stop:
	default:
		close(r.stop)
		<-r.done
	}
	return nil
}

func (r *Reader) watch() {
	defer close(r.done)
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.Reload()
		}
	}
}

// Reload checks the file now and loads it if it changed since the last
// check. It reports whether a new database now serves, and why a changed
// file was refused.
func (r *Reader) Reload() (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := os.Stat(r.path)
	if err != nil {
		// Gone for a moment, or for good: keep serving and say so once.
		if r.lastErr == nil || r.lastErr.Error() != fmtOpenError(r.path, err).Error() {
			r.lastErr = fmtOpenError(r.path, err)
			r.refused(r.lastErr)
		}
		return false, r.lastErr
	}
	if r.seen != nil && os.SameFile(st, r.seen) && st.Size() == r.seen.Size() && st.ModTime().Equal(r.seen.ModTime()) {
		return false, nil
	}
	r.seen = st
	start := time.Now()
	db, err := Open(r.path)
	if err != nil {
		r.lastErr = err
		r.refused(err)
		return false, err
	}
	old := r.db.Swap(db)
	r.lastErr = nil
	r.opts.Logger.Info("geoip database reloaded",
		zap.String("path", r.path), zap.String("type", db.Type), zap.Time("built", db.Built),
		zap.Time("previous_built", old.Built), zap.Duration("took", time.Since(start)))
	if r.opts.OnReload != nil {
		r.opts.OnReload(db, nil)
	}
	return true, nil
}

func (r *Reader) refused(err error) {
	cur := r.db.Load()
	r.opts.Logger.Error("geoip: refusing the changed database file; the previous one keeps serving",
		zap.String("path", r.path), zap.Error(err), zap.Time("serving_built", cur.Built), zap.Time("serving_since", cur.Loaded))
	if r.opts.OnReload != nil {
		r.opts.OnReload(nil, err)
	}
}
