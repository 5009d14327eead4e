package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/shadow"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Watch asks a run to make a change by hand at virtual time At — activate
// Policy of Kind, or set Params of its active policy — and to have the
// live node's watcher (internal/experiment.Watcher) judge it: the window
// after the change against the window before, and a watch-rollback
// through the policy host when it hurt.
//
// Activating the policy that is already active changes nothing, but the
// watch is opened all the same: that is the A/A check that an unchanged
// policy re-activated is not rolled back.
type Watch struct {
	At     time.Duration
	Kind   string
	Policy string             // name or name@version; empty with Params
	Params map[string]float64 // a set of the active policy's parameters
	// Config is experiments.watch; Enabled is implied.
	Config experiment.WatchConfig
}

// ParseWatch parses the --watch flag, KIND=POLICY[@VERSION]@T, e.g.
// scheduling=fifo@30m (T a duration from the trace's start).
func ParseWatch(s string) (Watch, error) {
	kind, rest, ok := strings.Cut(s, "=")
	i := strings.LastIndex(rest, "@")
	if !ok || kind == "" || i <= 0 {
		return Watch{}, fmt.Errorf("--watch %q: want KIND=POLICY@T, e.g. scheduling=fifo@30m", s)
	}
	at, err := time.ParseDuration(rest[i+1:])
	if err != nil || at < 0 {
		return Watch{}, fmt.Errorf("--watch %q: time %q: want a duration such as 30m", s, rest[i+1:])
	}
	return Watch{At: at, Kind: kind, Policy: rest[:i]}, nil
}

// WatchReport is the watch's outcome in a run's report.
type WatchReport struct {
	Kind string  `json:"kind"`
	From string  `json:"from"`
	To   string  `json:"to"`
	AtS  float64 `json:"at_s"`
	// State is the watch's: rolled_back, kept, inconclusive, superseded,
	// or watching (the trace ended first).
	State  string `json:"state"`
	Reason string `json:"reason"`
	// Active is the kind's active policy at the end of the run.
	Active string           `json:"active"`
	Watch  experiment.Watch `json:"watch"`
}

// watchState is the run's watch.
type watchState struct {
	spec Watch
	w    *experiment.Watcher
	// shadow replays every start under the old and the new eviction
	// policy from the run's start, as a node's shadow runs from its own
	// (nil for other kinds): the watch's replay of the change.
	shadow  *shadow.Shadow
	applied bool
	change  experiment.WatchedChange
	err     error
}

// startWatch builds the watcher and schedules the change and the end of
// its window.
func (s *simulator) startWatch(spec *Watch) error {
	if spec == nil {
		return nil
	}
	if _, err := abi.ParseKind(spec.Kind); err != nil {
		return fmt.Errorf("sim: watch: %w", err)
	}
	if spec.Policy == "" && len(spec.Params) == 0 {
		return errors.New("sim: watch: want a policy to activate or params to set")
	}
	cfg := spec.Config
	cfg.Enabled = true
	ws := &watchState{spec: *spec}
	if k, _ := abi.ParseKind(spec.Kind); k == abi.KindEviction && spec.Policy != "" {
		from, _, _ := strings.Cut(s.host.ActiveRef(k), "@")
		sh, err := shadow.New(shadow.PolicyCandidates([]string{from, spec.Policy}, s.host, s.opts.Log, s.clk), s.shadowTopology(), s.shadowSources(), s.clk)
		if err != nil {
			return fmt.Errorf("sim: watch: shadow: %w", err)
		}
		ws.shadow = sh
	}
	var rt *experiment.Router
	if k, _ := abi.ParseKind(spec.Kind); k == abi.KindBalancing && spec.Policy != "" {
		// As on the node, placements go through the router, which replays
		// a balancing change's placements under the old policy too.
		rt = experiment.NewRouter(experiment.Policies{Scheduler: s.core.Scheduler, Balancer: s.core.Balancer,
			Batcher: s.core.Batcher, Evictor: s.core.Evictor})
		s.core.Balancer = rt
	}
	w, err := experiment.NewWatcher(experiment.WatchOptions{Config: cfg, Clock: s.clk, Log: s.opts.Log,
		Rollback: func(wt experiment.Watch) error { return s.watchRollback(wt) },
		Pending:  s.pendingJobs,
		Replay: func(c experiment.WatchedChange) experiment.Replay {
			if r := rt.ReplayChange(c); r != nil {
				return r
			}
			if ws.shadow == nil {
				return nil
			}
			if b, ok := ws.shadow.Between(c.From, c.To); ok {
				return b
			}
			return nil
		}})
	if err != nil {
		return fmt.Errorf("sim: watch: %w", err)
	}
	ws.w = w
	s.watch = ws
	s.push(event{at: spec.At, kind: evPoll})
	s.push(event{at: spec.At + w.JudgeAfter(), kind: evPoll})
	return nil
}

// watchRollback undoes the watched change through the host, as the node
// does; an A/A change (nothing changed) has nothing to undo.
func (s *simulator) watchRollback(wt experiment.Watch) error {
	k, err := abi.ParseKind(wt.Change.Kind)
	if err != nil {
		return err
	}
	if wt.Change.Action == "set" {
		if maps.Equal(wt.Change.Before, wt.Change.After) {
			return nil
		}
		return s.host.WatchRestoreParams(k, wt.Change.To, wt.Change.Before, wt.Change.After, wt.Reason)
	}
	if wt.Change.From == wt.Change.To {
		return nil
	}
	_, err = s.host.WatchRollback(k, wt.Change.To, wt.Reason)
	return err
}

// tickWatch makes the change once its time has come and lets the watcher
// judge.
func (s *simulator) tickWatch() {
	ws := s.watch
	if ws == nil {
		return
	}
	if !ws.applied && s.now >= ws.spec.At {
		ws.applied = true
		ws.change, ws.err = s.applyWatchChange(ws.spec)
		if ws.err == nil {
			ws.w.Changed(ws.change)
		}
	}
	ws.w.Tick()
}

// applyWatchChange activates the policy (or sets the params) as kiln
// policy activate (set) would.
func (s *simulator) applyWatchChange(spec Watch) (experiment.WatchedChange, error) {
	k, _ := abi.ParseKind(spec.Kind)
	from := s.host.ActiveRef(k)
	c := experiment.WatchedChange{Kind: spec.Kind, From: from, To: from}
	if spec.Policy == "" {
		arm, err := s.host.ActiveArm(k)
		if err != nil {
			return c, err
		}
		cur := arm.Params()
		c.Action, c.Before, c.After = "set", map[string]float64{}, maps.Clone(spec.Params)
		for n := range spec.Params {
			c.Before[n] = cur[n]
		}
		return c, s.host.SetParams(k, spec.Params)
	}
	name, number := spec.Policy, 0
	if n, v, ok := strings.Cut(spec.Policy, "@"); ok {
		var err error
		if number, err = strconv.Atoi(v); err != nil {
			return c, fmt.Errorf("sim: watch: policy %q: bad version", spec.Policy)
		}
		name = n
	}
	// Pinned before the swap, as the node's change hook hands it over.
	fromArm, err := s.host.ActiveArm(k)
	if err != nil {
		return c, err
	}
	c.FromArm = fromArm
	vi, err := s.host.Activate(context.Background(), k, name, number, "sim watch")
	if err != nil {
		return c, err
	}
	c.Action, c.To = "activate", fmt.Sprintf("%s@%d", vi.Name, vi.Version)
	return c, nil
}

// observeWatch counts the jobs of a finished batch.
func (s *simulator) observeWatch(jobs []*simJob) {
	if s.watch == nil {
		return
	}
	for _, j := range jobs {
		lat := j.done - j.req.Time
		s.watch.w.Observe(experiment.Observation{JobID: j.id, Latency: lat, QueueWait: j.start - j.req.Time,
			Load: j.load, Run: j.compute, HasDeadline: j.req.DeadlineMS > 0,
			MissedDeadline: j.req.DeadlineMS > 0 && lat > time.Duration(j.req.DeadlineMS)*time.Millisecond})
	}
}

// watchReport is the watch's outcome.
func (s *simulator) watchReport() *WatchReport {
	ws := s.watch
	if ws == nil {
		return nil
	}
	k, _ := abi.ParseKind(ws.spec.Kind)
	r := &WatchReport{Kind: ws.spec.Kind, From: ws.change.From, To: ws.change.To, AtS: ws.spec.At.Seconds(),
		Active: s.host.ActiveRef(k), State: experiment.WatchOpen}
	if ws.err != nil {
		r.State, r.Reason = "failed", ws.err.Error()
		return r
	}
	if !ws.applied {
		r.State, r.Reason = "not_made", "the trace ended before the change"
		return r
	}
	if all := ws.w.Watches(); len(all) > 0 {
		r.Watch = all[0]
		r.State, r.Reason = all[0].State, all[0].Reason
	}
	return r
}

// writeWatchMarkdown is the report's watch section.
func writeWatchMarkdown(w io.Writer, r *WatchReport) {
	if r == nil {
		return
	}
	fmt.Fprintf(w, "\n## Watch\n\n%s %s → %s at %.0f s: **%s**. %s (active at the end: %s)\n\n", r.Kind, r.From, r.To, r.AtS, r.State, r.Reason, r.Active)
	if len(r.Watch.Comparisons) == 0 {
		return
	}
	fmt.Fprintln(w, "| metric | before | after | effect | lower bound | threshold | verdict |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---|")
	for _, c := range r.Watch.Comparisons {
		fmt.Fprintf(w, "| %s | %.4g | %.4g | %+.4g | %+.4g | %.4g | %s |\n", c.Metric, c.Before, c.After, c.Effect, c.Low, c.Threshold, c.Verdict)
	}
}

// pendingJobs lists the jobs that have arrived and not finished, for the
// watch's censored latencies (experiment.WatchOptions.Pending), in the
// watcher's clock.
func (s *simulator) pendingJobs() []experiment.PendingJob {
	now := s.clk.Now()
	var out []experiment.PendingJob
	for _, j := range s.jobs {
		if j.state != jobQueued && j.state != jobRunning {
			continue
		}
		out = append(out, experiment.PendingJob{Created: now.Add(-(s.now - j.req.Time)),
			Deadline: time.Duration(j.req.DeadlineMS) * time.Millisecond})
	}
	return out
}
