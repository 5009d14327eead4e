package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kiln-gpu/kiln/internal/experiment"
)

const experimentUsage = `usage:
  kiln experiment canary     --kind K --policy NAME[@V] [--steps 5,25,50,100] [--guard 'p95<=30s']...
  kiln experiment ab         --kind K --policy NAME[@V] [--share 50]
  kiln experiment switchback --kind K --policy NAME[@V] [--window 10m] [--burn-in 1m]
  kiln experiment list [--json]
  kiln experiment show ID [--json]
  kiln experiment abort ID [--reason R]
  kiln experiment shadow [--json]    (eviction: ghost caches, no split)

Starting an experiment also takes --baseline NAME[@V] (default: the active
policy), --unit workers|traffic, --step-duration D, --min-samples N,
--deadline D, --confidence C, --seed N, and --wait (follow it to its end;
the exit status is 0 when promoted or completed, 3 when rolled back, 4 when
a canary ended inconclusive: not promoted, the baseline keeps serving).
Guards: p50 p90 p95 p99 mean queue_p95 load_p95 (durations), error_rate
deadline_miss_rate hit_ratio faults (numbers), or ratio_<metric> against the
baseline; a trailing ! makes one critical. Every command takes --addr URL;
changes need the admin token (--token, $KILN_ADMIN_TOKEN, admin.token, or
<data_dir>/admin.token with --data-dir).
`

// cmdExperiment implements `kiln experiment`.
func cmdExperiment(args []string) error {
	if len(args) == 0 {
		return usagef("experiment", "want a subcommand: canary, ab, switchback, list, show, abort or shadow")
	}
	if isHelp(args[0]) {
		fmt.Print(experimentUsage)
		return nil
	}
	sub, rest := args[0], args[1:]
	if sub == "shadow" {
		return cmdExperimentShadow(rest)
	}
	switch sub {
	case "canary", "ab", "switchback", "list", "show", "abort":
	default:
		return usagef("experiment", "unknown subcommand %q", sub)
	}
	fs := newFlags("experiment "+sub, experimentUsage)
	var pf policyFlags
	pf.register(fs.FlagSet)
	out := fs.output("table")
	var spec experiment.Spec
	var guards []string
	fs.StringVar(&spec.Policy, "policy", "", "candidate policy, NAME or NAME@VERSION")
	fs.StringVar(&spec.Baseline, "baseline", "", "baseline policy (default: the active one)")
	steps := fs.String("steps", "", "canary steps in percent, e.g. 5,25,50,100")
	fs.Func("guard", "a guard such as 'p95<=30s' (repeatable)", func(s string) error { guards = append(guards, s); return nil })
	unit := fs.String("unit", "", "workers or traffic")
	share := fs.Int("share", 0, "A/B: the candidate's share in percent")
	stepDur := fs.Duration("step-duration", 0, "least time per canary step")
	minSamples := fs.Int("min-samples", 0, "jobs per arm before a verdict")
	deadline := fs.Duration("deadline", 0, "the experiment's deadline")
	window := fs.Duration("window", 0, "switchback window")
	burnIn := fs.Duration("burn-in", 0, "switchback burn-in per window")
	confidence := fs.Float64("confidence", 0, "1 - alpha")
	seed := fs.Uint64("seed", 0, "seed of the split (default: random, recorded)")
	wait := fs.Bool("wait", false, "follow the experiment until it ends")
	pos, err := fs.parse(rest)
	if err != nil {
		return err
	}
	switch sub {
	case "canary", "ab", "switchback":
		if len(pos) > 0 {
			return usagef("experiment "+sub, "unexpected argument %q", pos[0])
		}
		spec.Type, spec.Kind, spec.Unit, spec.Share = experiment.Type(sub), pf.kind, experiment.Unit(*unit), *share
		spec.Guards, spec.MinSamples, spec.Confidence, spec.Seed = guards, *minSamples, *confidence, *seed
		spec.StepDuration, spec.Deadline = experiment.Duration(*stepDur), experiment.Duration(*deadline)
		spec.Window, spec.BurnIn = experiment.Duration(*window), experiment.Duration(*burnIn)
		if *steps != "" {
			s, err := experiment.ParseSteps(*steps)
			if err != nil {
				return err
			}
			spec.Steps = s
		}
		if spec.Kind == "" || spec.Policy == "" {
			return usagef("experiment "+sub, "--kind and --policy are required")
		}
		for _, g := range guards {
			if _, err := experiment.ParseGuard(g); err != nil {
				return err
			}
		}
		body, _ := json.Marshal(spec)
		var rec experiment.Record
		if err := pf.request(http.MethodPost, "/v1/experiments", "application/json", body, true, &rec); err != nil {
			return err
		}
		if !*wait {
			return printRecord(out, rec)
		}
		fmt.Fprintf(os.Stderr, "experiment %s started; following it (Ctrl-C leaves it running)\n", rec.ID)
		return followExperiment(&pf, rec.ID, out)
	case "list":
		var list struct {
			Experiments []experiment.Summary  `json:"experiments"`
			Following   *experiment.Following `json:"following,omitempty"`
		}
		if err := pf.request(http.MethodGet, "/v1/experiments", "", nil, false, &list); err != nil {
			return err
		}
		if list.Experiments == nil {
			list.Experiments = []experiment.Summary{}
		}
		return out.print(list, func(w io.Writer) error {
			tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTYPE\tKIND\tCANDIDATE\tBASELINE\tSTATE\tSTEP\tVERDICT\tSTARTED")
			for _, s := range list.Experiments {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d (%d%%)\t%s\t%s\n", s.ID, s.Type, s.Kind, s.Candidate, s.Baseline, s.State,
					s.Step, s.Share, dash(s.Verdict), s.StartedAt.Local().Format(time.DateTime))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if f := list.Following; f != nil {
				fmt.Fprintf(w, "\nThis node follows routing %s %s of node %s: step %d, %d%% of its jobs to %s against %s.\n",
					f.Type, f.Experiment, f.Node, f.Step, f.Share, f.Candidate, f.Baseline)
			}
			return nil
		})
	case "show", "abort":
		if len(pos) != 1 {
			return usagef("experiment "+sub, "want exactly one ID")
		}
		var rec experiment.Record
		path := "/v1/experiments/" + url.PathEscape(pos[0])
		if sub == "show" {
			err = pf.request(http.MethodGet, path, "", nil, false, &rec)
		} else {
			body, _ := json.Marshal(map[string]string{"reason": pf.reason})
			err = pf.request(http.MethodPost, path+"/abort", "application/json", body, true, &rec)
		}
		if err != nil {
			return err
		}
		return printRecord(out, rec)
	}
	return usagef("experiment", "unknown subcommand %q", sub)
}

// exitRolledBack is the exit status of --wait when the candidate lost.
type exitRolledBack struct{ id, reason string }

func (e exitRolledBack) Error() string {
	return fmt.Sprintf("experiment %s rolled back: %s", e.id, e.reason)
}
func (exitRolledBack) ExitCode() int { return 3 }

// exitInconclusive is the exit status of --wait when a canary reached its
// deadline undecided: nothing was promoted, which a script that waits for
// a promotion must not mistake for one.
type exitInconclusive struct{ id, reason string }

func (e exitInconclusive) Error() string {
	return fmt.Sprintf("experiment %s inconclusive (not promoted): %s", e.id, e.reason)
}
func (exitInconclusive) ExitCode() int { return 4 }

func followExperiment(pf *policyFlags, id string, out *output) error {
	asJSON := out.structured()
	last := -1
	for {
		var rec experiment.Record
		if err := pf.request(http.MethodGet, "/v1/experiments/"+url.PathEscape(id), "", nil, false, &rec); err != nil {
			return err
		}
		if n := len(rec.Decisions); n-1 != last && !asJSON {
			for _, d := range rec.Decisions[max(last+1, 0):] {
				if d.Action != "hold" || d.Looks == 1 {
					fmt.Fprintf(os.Stderr, "%7.0fs  step %d (%d%%)  %-8s %s\n", d.AtS, d.Step, d.Share, d.Action, d.Reason)
				}
			}
			last = n - 1
		}
		if rec.State != experiment.Running {
			if err := printRecord(out, rec); err != nil {
				return err
			}
			switch rec.State {
			case experiment.RolledBack:
				return exitRolledBack{id: rec.ID, reason: rec.Reason}
			case experiment.Inconclusive:
				return exitInconclusive{id: rec.ID, reason: rec.Reason}
			}
			return nil
		}
		time.Sleep(2 * time.Second)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printRecord prints an experiment's report: arms, n, effects with their
// intervals, p-values, verdicts, the SRM check, guards and decisions.
func printRecord(out *output, rec experiment.Record) error {
	return out.print(rec, func(w io.Writer) error { return writeRecord(w, rec) })
}

func writeRecord(w io.Writer, rec experiment.Record) error {
	s := rec.Spec
	fmt.Fprintf(w, "experiment %s: %s of %s, candidate %s against baseline %s (unit %s, seed %d)\n",
		rec.ID, s.Type, s.Kind, rec.Candidate, rec.Baseline, rec.Assignment.Unit, rec.Assignment.Seed)
	fmt.Fprintf(w, "state %s", rec.State)
	if rec.Verdict != "" {
		fmt.Fprintf(w, ", verdict %s", rec.Verdict)
	}
	if rec.Reason != "" {
		fmt.Fprintf(w, ": %s", rec.Reason)
	}
	fmt.Fprintln(w)
	if !rec.EndedAt.IsZero() {
		// decided_at_s, as the simulator's report names it.
		fmt.Fprintf(w, "decided at %.0fs after the start (%s)\n", rec.EndedAt.Sub(rec.StartedAt).Seconds(), rec.EndedAt.Local().Format(time.DateTime))
	}
	if len(rec.Power) > 0 {
		// Every verdict says what it could have seen: a promotion or an
		// inconclusive end is "no regression larger than X".
		fmt.Fprintln(w, "resolution (smallest detectable effect; regression ruled out):")
		for _, p := range rec.Power {
			switch {
			case !p.Bounded:
				fmt.Fprintf(w, "  %s: nothing bounded (too few windows)\n", p.Metric)
			case p.DetectableRel > 0:
				fmt.Fprintf(w, "  %s: +%.4g (+%.1f%%); no worse than +%.4g (+%.1f%%)\n", p.Metric, p.Detectable, 100*p.DetectableRel, p.NoWorseThan, 100*p.NoWorseThanRel)
			default:
				fmt.Fprintf(w, "  %s: +%.4g; no worse than +%.4g\n", p.Metric, p.Detectable, p.NoWorseThan)
			}
		}
	}
	if s.Type == experiment.Canary {
		fmt.Fprintf(w, "steps %v, at step %d since %s\n", s.Steps, rec.Step, rec.StepStartedAt.Local().Format(time.DateTime))
	}
	if a := rec.Assignment; len(a.CandidateWorkers) > 0 {
		fmt.Fprintf(w, "workers: candidate %s; baseline %s; job shares %.2f / %.2f (the rest is production, not counted)\n",
			strings.Join(a.CandidateWorkers, ","), strings.Join(a.BaselineWorkers, ","), a.JobShare, a.BaselineShare)
	}
	rep := rec.Report
	if rep == nil {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "ARM\tPOLICY\tN\tFAILED\tP50\tP95\tP99\tQUEUE P95\tLOAD MEAN\tDEADLINE MISS\tVRAM HIT\tFAULTS\tGPU BUSY")
	for _, a := range rep.Arms {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.2fs\t%.2fs\t%.2fs\t%.2fs\t%.2fs\t%.1f%%\t%.1f%%\t%d\t%.0fs\n", a.Arm, a.Policy, a.N, a.Failed,
			a.P50S, a.P95S, a.P99S, a.QueueP95S, a.LoadMeanS, 100*a.DeadlineMissRate, 100*a.HitRatio, a.Faults, a.GPUBusyS)
	}
	tw.Flush()
	if len(rep.Comparisons) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "METRIC\tTEST\tN (B/C)\tEFFECT (C-B)\tINTERVAL\tP\tDETECTABLE\tNO WORSE THAN\tVERDICT")
		for _, c := range rep.Comparisons {
			v := c.Verdict.String()
			if !c.Gating {
				v += " (info)"
			}
			// Every verdict says the smallest effect it could have seen
			// (internal/experiment/RATIONALE.md); "-" where it bounds nothing.
			det, nwt := "-", "-"
			if c.Detectable > 0 {
				det, nwt = fmt.Sprintf("+%.4g", c.Detectable), fmt.Sprintf("+%.4g", c.NoWorseThan)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%+.4g\t[%.4g, %.4g]\t%.3g\t%s\t%s\t%s\n", c.Metric, c.Test, c.NA, c.NB, c.Effect, c.Low, c.High, c.P, det, nwt, v)
		}
		tw.Flush()
	}
	if rep.SRM != nil {
		status := "ok"
		if rep.SRM.Mismatch {
			status = "MISMATCH: the split is not what was asked; do not trust the comparisons"
		}
		fmt.Fprintf(w, "\nSRM: counts %d/%d against a candidate share of %.2f: p=%.3g, %s\n",
			rep.SRM.Baseline, rep.SRM.Candidate, rep.SRM.Expected, rep.SRM.P, status)
	}
	for _, g := range rep.Guards {
		status := "ok"
		switch {
		case !g.Judged:
			status = "not judged yet"
		case !g.OK:
			status = "BREACHED"
		}
		fmt.Fprintf(w, "guard %s: %.4g over %d jobs, %s\n", g.Guard, g.Value, g.N, status)
	}
	if rep.Share >= 100 && s.Type == experiment.Canary {
		fmt.Fprintln(w, "step verdict: no baseline left at 100%; the guards and the candidate's sample gate this step")
	} else {
		fmt.Fprintf(w, "step verdict: %s\n", rep.Verdict)
	}
	if len(rec.Decisions) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "AT\tSTEP\tSHARE\tACTION\tLOOKS\tREASON")
		for _, d := range rec.Decisions {
			fmt.Fprintf(tw, "%.0fs\t%d\t%d%%\t%s\t%d\t%s\n", d.AtS, d.Step, d.Share, d.Action, d.Looks, d.Reason)
		}
		tw.Flush()
	}
	return nil
}
