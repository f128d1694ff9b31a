package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// Where the runtime layer is kept: a local file (one node), or Caddy's
// configured storage (a fleet: every node reads and writes one document,
// under the storage's lock).

// layerStore keeps a runtime layer's document.
type layerStore interface {
	// where names the store in messages and the admin API.
	where() string
	// read returns the stored document; none yet is an empty one.
	read() (stateFile, error)
	// transact runs fn on the latest document and stores what it returns,
	// as one step for every node that shares the store. An error from fn
	// stores nothing and is returned as it is.
	transact(fn func(stateFile) (stateFile, error)) error
}

// fileStore is the state_file: one node's layer.
type fileStore struct{ path string }

func (s fileStore) where() string { return "state_file " + s.path }

func (s fileStore) read() (stateFile, error) {
	var sf stateFile
	data, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return sf, nil
	case err != nil:
		return sf, fmt.Errorf("%s: %w", s.where(), err)
	}
	if err := json.Unmarshal(data, &sf); err != nil {
		return sf, fmt.Errorf("%s is not valid (%v): it holds the admin API's changes; fix it, or remove it to drop them", s.where(), err)
	}
	return sf, nil
}

func (s fileStore) transact(fn func(stateFile) (stateFile, error)) error {
	cur, err := s.read()
	if err != nil {
		return fmt.Errorf("the change was not applied: %w", err)
	}
	next, err := fn(cur)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.path, mustJSON(next)); err != nil {
		return fmt.Errorf("the change was not applied: writing %s: %w", s.where(), err)
	}
	return nil
}

// storageStore keeps the layer in Caddy's storage, under a prefix that
// names the fleet.
type storageStore struct {
	storage certmagic.Storage
	prefix  string
}

// DefaultStatePrefix is where a fleet's keys live in Caddy's storage.
const DefaultStatePrefix = "feature_flags/"

// storeTimeout bounds one conversation with the store: a store that does
// not answer fails the change, clearly, rather than hanging the admin API.
// It outlasts the lock of a node that died holding it (the file system
// storage takes a lock not refreshed for 10 s as stale).
const storeTimeout = 15 * time.Second

func (s storageStore) where() string { return "storage " + s.prefix }

func (s storageStore) layerKey() string { return s.prefix + "layer.json" }

func (s storageStore) read() (stateFile, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	return s.load(ctx)
}

func (s storageStore) load(ctx context.Context) (stateFile, error) {
	var sf stateFile
	data, err := s.storage.Load(ctx, s.layerKey())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return sf, nil
	case err != nil:
		return sf, fmt.Errorf("%s: reading %s: %w", s.where(), s.layerKey(), err)
	}
	if err := json.Unmarshal(data, &sf); err != nil {
		return sf, fmt.Errorf("%s: %s is not valid (%v): it holds the fleet's runtime layer; fix it, or delete it to drop the layer", s.where(), s.layerKey(), err)
	}
	return sf, nil
}

func (s storageStore) transact(fn func(stateFile) (stateFile, error)) error {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	lock := s.prefix + "layer"
	if err := s.storage.Lock(ctx, lock); err != nil {
		return fmt.Errorf("the change was not applied: %s: taking the lock: %w", s.where(), err)
	}
	defer s.storage.Unlock(context.Background(), lock)
	cur, err := s.load(ctx)
	if err != nil {
		return fmt.Errorf("the change was not applied: %w", err)
	}
	next, err := fn(cur)
	if err != nil {
		return err
	}
	// A lock is only as good as the store's idea of a dead holder: one
	// that stalled past it may find its lock taken. The generation read
	// again just before the write catches the other node's change.
	if again, err := s.load(ctx); err != nil || again.Generation != cur.Generation {
		if err == nil {
			err = fmt.Errorf("the layer changed while this node held the lock (generation %d, now %d): try again", cur.Generation, again.Generation)
		}
		return fmt.Errorf("the change was not applied: %w", err)
	}
	if err := s.storage.Store(ctx, s.layerKey(), mustJSON(next)); err != nil {
		return fmt.Errorf("the change was not applied: %s: writing %s: %w", s.where(), s.layerKey(), err)
	}
	return nil
}

// stat returns what changes when the layer does: its size and time.
func (s storageStore) stat() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	info, err := s.storage.Stat(ctx, s.layerKey())
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", s.where(), err)
	}
	return fmt.Sprintf("%d %d", info.Size, info.Modified.UnixNano()), nil
}

// layerPollInterval is how often a node asks the store whether the layer
// changed, give or take a fifth (so that a fleet does not ask at once).
var layerPollInterval = time.Second

// watchLayer follows the layer in a shared store: a change another node
// made serves here within about a second. While the store does not
// answer, the last layer read serves on, and the admin API and a metric
// say so.
func (l *loader) watchLayer(s storageStore) {
	defer l.wg.Done()
	seen := ""
	for {
		jitter := time.Duration(rand.Int64N(int64(layerPollInterval) * 2 / 5))
		select {
		case <-l.stop:
			return
		case <-time.After(layerPollInterval*4/5 + jitter):
		}
		token, err := s.stat()
		if err == nil && token != seen {
			if err = l.followLayer(s); err == nil {
				seen = token
			}
		}
		if was := l.layer.storeError(); err != nil && was == nil {
			l.logger.Error("the fleet's store does not answer: the last layer read serves on", zap.String("store", s.where()), zap.Error(err))
		} else if err == nil && was != nil {
			l.logger.Info("the fleet's store answers again", zap.String("store", s.where()), zap.Time("failing_since", was.At))
		}
		l.layer.storeAnswered(err)
	}
}

// followLayer reads the layer and serves it, when it is another than the
// one this node has. It holds the loader's lock, so that no change of
// this node's is stored between the read and the swap.
func (l *loader) followLayer(s storageStore) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	doc, err := s.read()
	if err != nil {
		return err
	}
	changed, err := l.layer.follow(doc)
	if !changed || err != nil {
		return err
	}
	b := l.build(l.base, l.layer.snapshot())
	if err := l.app.checkSet(b.set); err != nil {
		l.logger.Error("the fleet's runtime layer does not fit this node's flags: the last good set serves", zap.Error(err))
		return nil
	}
	l.adopt(b)
	l.swap(b.set)
	return nil
}
