package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/edgeflags/edgeflags/rollout"
)

// A fleet's nodes in Caddy's storage: each node publishes a small key of
// its own every nodeReportInterval — who it is, which layer it serves, and
// its counts of the running rollouts' steps — and reads the others', so
// that a rollout is judged on the fleet's sums. A key not refreshed for
// nodeExpiry belongs to a node that is gone, and whichever node sees it
// first deletes it: ephemeral nodes leave no litter (mholt/caddy-ratelimit
// issue #50).

var (
	nodeReportInterval = 2 * time.Second
	nodeExpiry         = 30 * time.Second
)

// nodeReport is one node's key.
type nodeReport struct {
	Node       string    `json:"node"`
	At         time.Time `json:"at"`
	Generation uint64    `json:"generation"` // of the layer it serves
	// Steps are its counts of each running rollout's current step, by
	// stepKey.
	Steps map[string]rollout.Evidence `json:"steps,omitempty"`
}

// fleetNodeStatus is a node as the admin API lists it.
type fleetNodeStatus struct {
	Node       string    `json:"node"`
	At         time.Time `json:"at"`
	Generation uint64    `json:"generation"`
}

// fleetView is what this node last read of the others.
type fleetView struct {
	store storageStore
	node  string

	mu     sync.Mutex
	others map[string]rollout.Evidence // the other nodes' counts, summed, by step key
	nodes  []fleetNodeStatus
}

// defaultNodeName names a node that was not given one: its host and
// process, unique on a host that runs several.
func defaultNodeName() string {
	host, err := os.Hostname()
	if err != nil {
		host = "node"
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

func (v *fleetView) nodeKey(node string) string { return v.store.prefix + "nodes/" + node + ".json" }

// othersOf returns the other nodes' counts of a step.
func (v *fleetView) othersOf(step string) rollout.Evidence {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.others[step]
}

// status lists the fleet's nodes, this one first.
func (v *fleetView) status() []fleetNodeStatus {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.nodes)
}

// watchFleet publishes this node's key and reads the others' every
// nodeReportInterval until stop is closed.
func (a *App) watchFleet(v *fleetView, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(nodeReportInterval)
	defer t.Stop()
	for {
		if err := a.reportToFleet(v); err != nil {
			a.logger.Warn("publishing this node's counts to the fleet's store", zap.String("store", v.store.where()), zap.Error(err))
		}
		select {
		case <-stop:
			ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
			v.store.storage.Delete(ctx, v.nodeKey(v.node)) // a node that stops says so at once
			cancel()
			return
		case <-t.C:
		}
	}
}

// listNodes lists the nodes' keys. The file system storage walks the
// directory, and fails when a file it saw is gone by the time it looks —
// another node's write renaming its temporary file — so a listing that
// meets a vanished file is taken again.
func (v *fleetView) listNodes(ctx context.Context) ([]string, error) {
	for try := 0; ; try++ {
		keys, err := v.store.storage.List(ctx, v.store.prefix+"nodes", false)
		switch {
		case err == nil:
			return keys, nil
		case !errors.Is(err, fs.ErrNotExist):
			return nil, err
		case len(keys) == 0 && try > 0, try == 5:
			return keys, nil // no node key at all yet, or a churn this listing cannot get past
		}
	}
}

// reportToFleet writes this node's key and reads every other node's.
func (a *App) reportToFleet(v *fleetView) error {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	l := a.loader.layer
	mine := nodeReport{Node: v.node, At: time.Now().UTC(), Steps: map[string]rollout.Evidence{}}
	l.mu.Lock()
	mine.Generation = l.generation
	l.mu.Unlock()
	for key, e := range l.snapshot() {
		if st := e.Rollout; st != nil && st.Status == rollout.Running {
			mine.Steps[stepKey(key, st)] = armsFor(key, st).evidence()
		}
	}
	if err := v.store.storage.Store(ctx, v.nodeKey(v.node), mustJSON(mine)); err != nil {
		return err
	}
	keys, err := v.listNodes(ctx)
	if err != nil {
		return err
	}
	others := map[string]rollout.Evidence{}
	nodes := []fleetNodeStatus{{Node: mine.Node, At: mine.At, Generation: mine.Generation}}
	for _, key := range keys {
		if !strings.HasSuffix(key, ".json") || key == v.nodeKey(v.node) {
			continue
		}
		data, err := v.store.storage.Load(ctx, key)
		if err != nil {
			continue // deleted meanwhile, or unreadable: not counted
		}
		var r nodeReport
		if json.Unmarshal(data, &r) != nil || time.Since(r.At) > nodeExpiry {
			v.store.storage.Delete(ctx, key)
			a.logger.Info("deleted the key of a node gone from the fleet", zap.String("key", key), zap.Time("last_seen", r.At))
			continue
		}
		nodes = append(nodes, fleetNodeStatus{Node: r.Node, At: r.At, Generation: r.Generation})
		for step, ev := range r.Steps {
			sum := others[step]
			sum.Merge(ev)
			others[step] = sum
		}
	}
	sort.Slice(nodes[1:], func(i, j int) bool { return nodes[1+i].Node < nodes[1+j].Node })
	v.mu.Lock()
	v.others, v.nodes = others, nodes
	v.mu.Unlock()
	return nil
}

// stepEvidence is a rollout step's counts: this node's, and in a fleet
// every other node's as last read.
func (a *App) stepEvidence(flag string, st *rollout.State) rollout.Evidence {
	ev := armsFor(flag, st).evidence()
	if a.fleet != nil {
		ev.Merge(a.fleet.othersOf(stepKey(flag, st)))
	}
	return ev
}
