package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/dispatch"
	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/shadow"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Canary asks a run to canary a policy with the live experiment controller
// (internal/experiment) in virtual time: the same Router splits the node's
// decisions, the same Controller looks at the evidence and decides.
type Canary struct {
	// Spec is the experiment; Type defaults to canary. Its zero fields take
	// Config's defaults, as live.
	Spec experiment.Spec
	// Config is the experiments section (the defaults and the look
	// interval).
	Config experiment.Config
	// Seed seeds the split when Spec.Seed is zero.
	Seed uint64
}

// ParseCanary parses the --canary flag, KIND=POLICY[@VERSION].
func ParseCanary(s string) (experiment.Spec, error) {
	kind, pol, ok := strings.Cut(s, "=")
	if !ok || kind == "" || pol == "" {
		return experiment.Spec{}, fmt.Errorf("--canary %q: want KIND=POLICY, e.g. scheduling=edf", s)
	}
	return experiment.Spec{Kind: kind, Policy: pol, Type: experiment.Canary}, nil
}

// CanaryReport is the canary's outcome in a run's report.
type CanaryReport struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	Candidate string `json:"candidate"`
	Baseline  string `json:"baseline"`
	// Verdict is promoted, rolled_back, or inconclusive (the canary's
	// deadline passed, or the trace ended, before a decision: nothing was
	// promoted). An A/B test or switchback has better, worse,
	// no_difference or inconclusive.
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	// DecidedAtS is virtual seconds from the trace's start to the decision
	// (to the trace's end when inconclusive).
	DecidedAtS float64 `json:"decided_at_s"`
	// Step is the step reached (index into Steps).
	Step     int                   `json:"step"`
	Steps    []int                 `json:"steps"`
	Evidence []experiment.Decision `json:"evidence"`
	// Report is the last look: arms, comparisons, guards, SRM.
	Report *experiment.Report `json:"report,omitempty"`
	// Power is, per gating metric, the smallest effect the experiment
	// could have detected and the regression it rules out ("no
	// regression larger than X"), at its end, whatever the verdict.
	Power []experiment.Power `json:"power,omitempty"`
}

// canaryState is the run's experiment, when it has one.
type canaryState struct {
	ctl *experiment.Controller
	id  string
	// replay is an eviction experiment's cache replay (the controller
	// made it through Options.Replay); the simulator feeds it each start.
	replay *shadow.Pair
}

// startCanary puts the router between the decision core and the policy
// host and starts the experiment at virtual time zero.
func (s *simulator) startCanary(ctx context.Context, c *Canary) error {
	if k, err := abi.ParseKind(c.Spec.Kind); err == nil && k == abi.KindRouting {
		return errors.New("sim: a routing experiment needs a cluster: run it with --nodes 2 or more")
	}
	rt := experiment.NewRouter(experiment.Policies{Scheduler: s.core.Scheduler, Balancer: s.core.Balancer,
		Batcher: s.core.Batcher, Evictor: s.core.Evictor})
	ids := make([]string, 0, len(s.workers))
	devOf := make(map[string]string, len(s.workers))
	for _, w := range s.workers {
		ids = append(ids, w.id)
		devOf[w.id] = strconv.Itoa(w.dev)
	}
	state := &canaryState{}
	ctl, err := experiment.New(experiment.Options{Config: c.Config, Host: s.host, Router: rt, Clock: s.clk, Seed: c.Seed,
		Workers: func() []string { return ids }, WorkerDevice: func(id string) string { return devOf[id] }, Log: s.opts.Log,
		Replay: func(arms [2]*policy.Arm) (experiment.Replay, error) {
			p, err := shadow.NewPair(arms[experiment.Baseline], arms[experiment.Candidate], s.shadowTopology(), s.shadowSources(), s.clk)
			if err != nil {
				return nil, err
			}
			state.replay = p
			return p, nil
		}})
	if err != nil {
		return fmt.Errorf("sim: canary: %w", err)
	}
	spec := c.Spec
	if spec.Type == "" {
		spec.Type = experiment.Canary
	}
	if spec.Seed == 0 {
		spec.Seed = c.Seed | 1
	}
	rec, err := ctl.Start(ctx, spec)
	if err != nil {
		return fmt.Errorf("sim: canary: %w", err)
	}
	s.core = dispatch.Core{Scheduler: rt, Balancer: rt, Batcher: rt, Evictor: rt, MaxEvictionRounds: s.core.MaxEvictionRounds}
	// As a node does, the host tiers evict through the router too, so
	// that an eviction experiment decides there as well.
	s.ram.ev, s.disk.ev = rt.HostTier(s.ram.ev), rt.HostTier(s.disk.ev)
	state.ctl, state.id = ctl, rec.ID
	s.canary = state
	return nil
}

// shadowTopology is the node's cache geometry as the shadow's ghosts
// take it: each device's usable VRAM, the RAM and disk tiers.
func (s *simulator) shadowTopology() shadow.Topology {
	var topo shadow.Topology
	for _, d := range s.devices {
		topo.Devices = append(topo.Devices, shadow.Device{Name: d.cfg.Name, VRAMBytes: d.ledger.Usable()})
	}
	topo.RAMBytes, topo.DiskBytes = uint64(max(s.cfg.RAMBytes, 0)), uint64(max(s.cfg.DiskBytes, 0))
	return topo
}

// shadowSources are the models' sizes, as the simulator reserves them,
// and the transfer rates the simulator charges.
func (s *simulator) shadowSources() shadow.Sources {
	bw := shadow.Bandwidths{RAM: s.cfg.Cost.DiskBytesPerS, Disk: s.cfg.RemoteBytesPerS}
	for _, d := range s.devices {
		bw.H2D = append(bw.H2D, d.cfg.H2DBytesPerS)
	}
	return shadow.Sources{
		Demand: s.demand.Of,
		Model: func(id string) (uint64, uint64, bool) {
			m, ok := s.models[id]
			if !ok {
				return 0, 0, false
			}
			return uint64(max(m.Bytes, 0)), uint64(cost.VRAMBytes(m.Family, m.Bytes)), true
		},
		Bandwidth: func() shadow.Bandwidths { return bw },
	}
}

// replayStart feeds an eviction experiment's cache replay, and the shadow
// of a watched eviction change, the models of the jobs that started on w,
// as the live node feeds its replay and its shadow job starts.
func (s *simulator) replayStart(w *simWorker, jobs []*simJob) {
	for _, j := range jobs {
		if s.canary != nil && s.canary.replay != nil {
			s.canary.replay.AccessOn(w.dev, w.id, j.models)
		}
		if s.watch != nil && s.watch.shadow != nil {
			s.watch.shadow.AccessOn(w.dev, w.id, j.models)
		}
	}
}

// observeCanary counts jobs of a batch that finished on a worker for their
// arm.
func (s *simulator) observeCanary(worker string, jobs []*simJob) {
	if s.canary == nil {
		return
	}
	for _, j := range jobs {
		lat := j.done - j.req.Time
		s.canary.ctl.Observe(experiment.Observation{JobID: j.id, Worker: worker, Latency: lat,
			QueueWait: j.start - j.req.Time, Load: j.load, Run: j.compute,
			HasDeadline: j.req.DeadlineMS > 0, Interactive: j.req.Class == job.Interactive,
			MissedDeadline: j.req.DeadlineMS > 0 && lat > time.Duration(j.req.DeadlineMS)*time.Millisecond})
	}
}

// tickCanary lets the controller look when a look is due.
func (s *simulator) tickCanary() {
	if s.canary != nil {
		s.canary.ctl.Tick()
	}
}

// canaryReport ends a canary the trace did not decide (inconclusive) and
// reports it.
func (s *simulator) canaryReport() *CanaryReport {
	if s.canary == nil {
		return nil
	}
	rec, err := s.canary.ctl.Get(s.canary.id)
	if err != nil {
		return nil
	}
	verdict := rec.Verdict
	if rec.State == experiment.Running {
		if r, err := s.canary.ctl.Abort(rec.ID, "the trace ended before a decision"); err == nil {
			rec = r
		}
		verdict = "inconclusive"
	}
	return &CanaryReport{ID: rec.ID, Kind: rec.Spec.Kind, Candidate: rec.Candidate, Baseline: rec.Baseline, Verdict: verdict,
		Reason: rec.Reason, DecidedAtS: rec.EndedAt.Sub(rec.StartedAt).Seconds(), Step: rec.Step, Steps: rec.Spec.Steps,
		Evidence: rec.Decisions, Report: rec.Report, Power: rec.Power}
}

// writeCanaryMarkdown is the report's canary section.
func writeCanaryMarkdown(w io.Writer, c *CanaryReport) {
	if c == nil {
		return
	}
	fmt.Fprintf(w, "\n## Canary\n\n%s policy %s against %s: **%s** at %.0f s (step %d of %v). %s\n\n",
		c.Kind, c.Candidate, c.Baseline, c.Verdict, c.DecidedAtS, c.Step, c.Steps, c.Reason)
	if c.Report != nil {
		fmt.Fprintln(w, "| arm | policy | n | p50 s | p95 s | deadline miss | faults |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|")
		for _, a := range c.Report.Arms {
			fmt.Fprintf(w, "| %s | %s | %d | %.2f | %.2f | %.1f%% | %d |\n", a.Arm, a.Policy, a.N, a.P50S, a.P95S, 100*a.DeadlineMissRate, a.Faults)
		}
		fmt.Fprintln(w)
		if len(c.Report.Comparisons) > 0 {
			fmt.Fprintln(w, "| metric | test | n (b/c) | effect (c−b) | interval | p | verdict |")
			fmt.Fprintln(w, "|---|---|---:|---:|---|---:|---|")
			for _, cm := range c.Report.Comparisons {
				fmt.Fprintf(w, "| %s | %s | %d/%d | %+.4g | [%.4g, %.4g] | %.3g | %s |\n", cm.Metric, cm.Test, cm.NA, cm.NB,
					cm.Effect, cm.Low, cm.High, cm.P, cm.Verdict)
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintln(w, "| at s | step | share | action | reason |")
	fmt.Fprintln(w, "|---:|---:|---:|---|---|")
	for _, d := range c.Evidence {
		fmt.Fprintf(w, "| %.0f | %d | %d%% | %s | %s |\n", d.AtS, d.Step, d.Share, d.Action, d.Reason)
	}
}
