package node

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/logging"
	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// nodeWatch is the live side of the watch of changes made by hand
// (internal/experiment.Watcher): the host's change events open watches, the
// dispatcher's finished jobs feed them, and a watch-rollback goes back
// through the host.
type nodeWatch struct {
	w *experiment.Watcher
	// promoting counts the experiment controller's own changes in
	// flight (a promotion and its parameters): those were judged by the
	// experiment and are not watched again.
	promoting atomic.Int32

	mu        sync.Mutex
	runningAt map[string]time.Time // job → when its models were resident
}

// openWatch builds the watcher and subscribes it to the policy host's
// changes; it runs before the experiment controller, which it wraps
// (promotingHost).
func (n *Node) openWatch() error {
	nw := &nodeWatch{runningAt: map[string]time.Time{}}
	w, err := experiment.NewWatcher(experiment.WatchOptions{Config: n.cfg.Experiments.Watch, Clock: n.opts.Clock, Pending: n.pendingJobs,
		Log: logging.Component(n.opts.Log, "watch"), Rollback: n.watchRollback, Replay: n.watchReplay})
	if err != nil {
		return err
	}
	nw.w = w
	n.watch = nw
	n.Policies.OnChange(nw.onChange)
	n.Metrics.Register(w)
	return nil
}

// watchReplay is the watch's replay of a change: for eviction, the
// shadow's warm ghosts of the old and the new policy, when it runs both;
// for balancing, the router's pricing of both policies' placements.
func (n *Node) watchReplay(c experiment.WatchedChange) experiment.Replay {
	if r := n.Router.ReplayChange(c); r != nil {
		return r
	}
	if n.Shadow == nil {
		return nil
	}
	if b, ok := n.Shadow.Between(c.From, c.To); ok {
		return b
	}
	return nil
}

// onChange is the policy host's change hook: a change by hand opens a
// watch; a rollback by hand or a fault's auto-rollback ends the open one.
func (nw *nodeWatch) onChange(e policy.ChangeEvent) {
	switch e.Action {
	case "activate", "set":
		if nw.promoting.Load() > 0 && !sharedHarm(e.Kind) {
			return // an experiment's promotion: judged by the experiment
		}
		nw.w.Changed(experiment.WatchedChange{Kind: e.Kind.String(), Action: e.Action, From: e.From, To: e.To,
			Reason: e.Reason, Before: e.Before, After: e.After, FromArm: e.FromArm})
	case "rollback", "auto-rollback":
		// The operator (or the fault counter) moved the kind on: the
		// watched change is no longer alone in the comparison.
		nw.w.Ended(e.Kind.String() + " " + e.Action + " to " + e.To)
	}
	// restore (a start) and watch-rollback (the watcher's own) open
	// nothing.
}

// watchRollback undoes a watched change through the host.
func (n *Node) watchRollback(w experiment.Watch) error {
	k, err := abi.ParseKind(w.Change.Kind)
	if err != nil {
		return err
	}
	if w.Change.Action == "set" {
		return n.Policies.WatchRestoreParams(k, w.Change.To, w.Change.Before, w.Change.After, w.Reason)
	}
	_, err = n.Policies.WatchRollback(k, w.Change.To, w.Reason)
	return err
}

// promotingHost is the policy host as the experiment controller sees it:
// its activations and parameter sets (a promotion) are marked so that the
// watch leaves them alone.
type promotingHost struct {
	*policy.Host
	nw *nodeWatch
}

var _ experiment.Host = promotingHost{}

func (p promotingHost) Activate(ctx context.Context, k abi.Kind, name string, number int, reason string) (policy.VersionInfo, error) {
	p.nw.promoting.Add(1)
	defer p.nw.promoting.Add(-1)
	return p.Host.Activate(ctx, k, name, number, reason)
}

func (p promotingHost) SetParam(k abi.Kind, name string, value float64) error {
	p.nw.promoting.Add(1)
	defer p.nw.promoting.Add(-1)
	return p.Host.SetParam(k, name, value)
}

// experimentHost is the host the experiment controller gets.
func (n *Node) experimentHost() experiment.Host {
	if n.watch == nil {
		return n.Policies
	}
	return promotingHost{Host: n.Policies, nw: n.watch}
}

// observeWatch is the dispatcher's JobFinished hook's part for the watch.
func (n *Node) observeWatch(j *job.Job) {
	nw := n.watch
	if nw == nil || !nw.w.Config().Enabled {
		return
	}
	nw.mu.Lock()
	running := nw.runningAt[j.ID]
	delete(nw.runningAt, j.ID)
	nw.mu.Unlock()
	if o, ok := experiment.ObservationOf(j, running); ok {
		nw.w.Observe(o)
	}
}

// maxRunning bounds the jobs whose resident time the watch remembers
// (jobs that never finish must not grow it without bound).
const maxRunning = 100_000

// runWatch follows the dispatcher's events (when each job's models were
// resident: its load time) and lets the watcher judge every second; the
// returned function waits for both after ctx ends.
func (n *Node) runWatch(ctx context.Context) func() {
	nw := n.watch
	if nw == nil || !nw.w.Config().Enabled {
		return func() {}
	}
	events, unsubscribe := n.Dispatcher.Subscribe(1024)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-events:
				if !ok {
					return
				}
				if e.Type != job.EventRunning {
					continue
				}
				nw.mu.Lock()
				if len(nw.runningAt) >= maxRunning {
					clear(nw.runningAt)
				}
				nw.runningAt[e.JobID] = n.opts.Clock.Now()
				nw.mu.Unlock()
			}
		}
	}()
	go func() {
		defer wg.Done()
		// A second is far finer than any window (at least a second, a
		// sixtieth of it per sub-window), and a look with nothing due is
		// one comparison. Short windows tick at least twice per
		// sub-window: a replay is sampled at ticks, and a sub-window
		// without a sample is missing from its comparison (a 10 s window
		// ticked each second left half of them empty, too few to judge).
		tick := min(time.Second, nw.w.Config().Window/120)
		for {
			select {
			case <-ctx.Done():
				return
			case <-n.opts.Clock.After(tick):
				nw.w.Tick()
			}
		}
	}()
	return func() {
		unsubscribe()
		wg.Wait()
	}
}

// watcher is the watch of changes made by hand, for GET
// /v1/experiments/watches; nil when there is none.
func (n *Node) watcher() *experiment.Watcher {
	if n.watch == nil {
		return nil
	}
	return n.watch.w
}

// pendingJobs lists the queued and running jobs for the watch's censored
// latencies (experiment.WatchOptions.Pending): queued and running from the
// store's memory.
func (n *Node) pendingJobs() []experiment.PendingJob {
	var out []experiment.PendingJob
	add := func(j *job.Job) {
		out = append(out, experiment.PendingJob{Created: j.CreatedAt, Deadline: time.Duration(j.DeadlineMS) * time.Millisecond})
	}
	for _, j := range n.Store.Snapshot(0) {
		add(j)
	}
	for _, j := range n.Store.Running() {
		add(j)
	}
	return out
}

// sharedHarm reports whether a kind's experiment arms share what its
// policy harms, so that a split cannot see all of it: a balancer's or an
// evictor's damage travels through the devices and caches both arms use
// (BENCHMARKS.md: balancing canaries promoted a balancer that costs +312%
// run alone). Its promotion is watched like a change by hand: the node
// before against the node after.
func sharedHarm(k abi.Kind) bool { return k == abi.KindBalancing || k == abi.KindEviction }
