package node

import (
	"context"
	"strconv"
	"sync"

	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/logging"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// openExperiments builds the experiment controller behind
// /v1/experiments over the router New made (with no experiment running the
// router hands every decision straight to the active policies).
func (n *Node) openExperiments() error {
	if err := n.openWatch(); err != nil {
		return err
	}
	ctl, err := experiment.New(experiment.Options{
		Config: n.cfg.Experiments, Host: n.experimentHost(), Router: n.Router, Clock: n.opts.Clock,
		Seed: uint64(n.opts.Clock.Now().UnixNano()), DataDir: n.cfg.DataDir,
		Log: logging.Component(n.opts.Log, "experiment"),
		// An eviction experiment also replays the node's accesses under
		// both arms in ghost caches (experiment.Replay).
		Replay: n.startReplay,
		Workers: func() []string {
			if n.Pool == nil {
				return nil
			}
			var ids []string
			for _, w := range n.Pool.Workers() {
				ids = append(ids, w.ID())
			}
			return ids
		},
		WorkerDevice: func(id string) string {
			if n.Pool == nil {
				return id
			}
			for _, w := range n.Pool.Workers() {
				if w.ID() == id {
					if d := w.Device(); d.UUID != "" {
						return d.UUID
					}
					return strconv.Itoa(w.Device().Index)
				}
			}
			return id
		},
	})
	if err != nil {
		return err
	}
	n.Experiments = ctl
	// A version an experiment runs as an arm must stay loaded: the host
	// refuses to unload it while the experiment runs.
	n.Policies.SetInUse(func(k abi.Kind, ref string) string {
		rec, ok := ctl.Running()
		if ok && rec.Spec.Kind == k.String() && (rec.Candidate == ref || rec.Baseline == ref) {
			return "experiment " + rec.ID
		}
		return ""
	})
	n.Metrics.Register(ctl)
	return nil
}

// runExperiments starts the controller's loop (which first resumes, or
// rolls back, what was running when kiln stopped) and its event reader;
// the returned function waits for both after ctx ends.
func (n *Node) runExperiments(ctx context.Context) func() {
	events, unsubscribe := n.Dispatcher.Subscribe(1024)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		// Resuming pins the arms again: wait until the host has compiled
		// the built-ins and restored the policies loaded before the
		// restart, so that a candidate is not missed for being early.
		if err := n.Policies.WaitReady(ctx); err != nil {
			return
		}
		n.Experiments.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		n.Experiments.Follow(ctx, events)
	}()
	watchDone := n.runWatch(ctx)
	return func() {
		unsubscribe()
		wg.Wait()
		watchDone()
	}
}
