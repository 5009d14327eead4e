package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/node"
	"github.com/kiln-gpu/kiln/internal/sim"
	"github.com/kiln-gpu/kiln/internal/tune"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

const tuneUsage = `usage: kiln tune --kind K --policy NAME [--budget N] [--objective O] [--seed S]
                 [--params a,b] [--limit N] [--holdout F] [--repeats N] [--margin F]
                 [--no-canary] [--wait] [--json]
       kiln tune status [--json]

Searches the parameters the built-in policy NAME of kind K declares, in the
simulator, on the arrivals this kiln recorded (GET /v1/experiments/trace),
with the node described by the config (--config, --set as for kiln serve).
The search sees only the older arrivals; the most recent --holdout of them
(0.3) validate its best point against the defaults, whole and in --repeats
blocks. Only if the best point wins there by more than --margin (0.05) and
the blocks' noise (as tune.auto does) does kiln tune start a canary of it
through /v1/experiments, which re-validates it on live traffic and promotes
or rolls it back (kiln experiment show ID). --holdout 0 searches on every
arrival and canaries any gain. Needs the admin token.

Objectives: mean_latency (default), p95_latency, p99_latency, slo_miss, load_time.

kiln tune status shows the background tuner (tune.auto): whether it is on,
its next run, and its recent runs with what each found and why it started
a canary or kept the current settings (GET /v1/tune).
`

// parseTuneSpec reads "KIND=POLICY" (the --tune flag of kiln sim).
func parseTuneSpec(s string) (abi.Kind, string, error) {
	k, name, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return 0, "", fmt.Errorf("--tune %q: want KIND=POLICY, e.g. batching=same-model", s)
	}
	kind, err := abi.ParseKind(k)
	if err != nil {
		return 0, "", fmt.Errorf("--tune %q: %w", s, err)
	}
	return kind, name, nil
}

// simTune runs kiln sim's --tune search; nil without a spec.
func simTune(sc sim.Config, models []sim.Model, trace *sim.Trace, spec string, budget int, objective string, seed int64) (*tune.Result, error) {
	if spec == "" {
		return nil, nil
	}
	kind, name, err := parseTuneSpec(spec)
	if err != nil {
		return nil, err
	}
	return tune.Search(context.Background(), sc, models, trace, kind, name,
		tune.Options{Budget: budget, Seed: uint64(seed), Objective: objective})
}

// simReportWithTune is kiln sim's JSON report with the search's result.
type simReportWithTune struct {
	*sim.Report
	Tune *tune.Result `json:"tune,omitempty"`
}

// writeSimTune writes a sim report and, if a search ran, its result: JSON
// with a "tune" object, or markdown with the tuning table after the report.
func writeSimTune(w io.Writer, format string, rep *sim.Report, res *tune.Result) error {
	if format == "md" {
		if err := rep.WriteMarkdown(w); err != nil {
			return err
		}
		if res == nil {
			return nil
		}
		fmt.Fprintln(w)
		return res.WriteMarkdown(w)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(simReportWithTune{Report: rep, Tune: res})
}

// cmdTune implements `kiln tune`.
func cmdTune(args []string) error {
	if len(args) > 0 && args[0] == "status" {
		return cmdTuneStatus(args[1:])
	}
	fs := newFlags("tune", tuneUsage)
	var p policyFlags
	p.register(fs.FlagSet)
	name := fs.String("policy", "", "built-in policy whose parameters to search")
	budget := fs.Int("budget", tune.DefaultBudget, "simulator runs, the defaults' included")
	objective := fs.String("objective", tune.ObjectiveMeanLatency, "what to minimise")
	seed := fs.Uint64("seed", 1, "seed of the random phase")
	limit := fs.Int("limit", 0, "use only the last N recorded arrivals (0: all)")
	noCanary := fs.Bool("no-canary", false, "search only; do not start a canary")
	outFmt := fs.output("table")
	wait := fs.Bool("wait", false, "follow the canary until it is promoted or rolled back")
	only := fs.String("params", "", "search only these parameters, comma-separated (default: all)")
	holdout := fs.Float64("holdout", 0.3, "fraction of the most recent arrivals kept from the search to validate its result (0: none)")
	repeats := fs.Int("repeats", 4, "blocks the hold-out is cut into; their spread is the noise a gain must clear")
	margin := fs.Float64("margin", 0.05, "smallest gain on the hold-out, beyond the noise, worth a canary")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("tune", "unexpected argument %q (want status, or flags)", pos[0])
	}
	if p.kind == "" || *name == "" {
		return usagef("tune", "--kind and --policy are required")
	}
	var params []string
	if *only != "" {
		params = strings.Split(*only, ",")
	}
	kind, err := abi.ParseKind(p.kind)
	if err != nil {
		return fmt.Errorf("tune: %w", err)
	}
	if _, err := tune.Declared(kind, *name); err != nil {
		return err
	}
	cfg, err := p.load()
	if err != nil {
		return err
	}

	path := "/v1/experiments/trace"
	if *limit > 0 {
		path += fmt.Sprintf("?limit=%d", *limit)
	}
	csv, err := p.send("GET", path, "", nil, true)
	if err != nil {
		return fmt.Errorf("tune: fetch the recorded arrivals: %w", err)
	}
	var list struct {
		Models []catalog.Entry `json:"models"`
	}
	if err := p.request("GET", "/v1/models", "", nil, false, &list); err != nil {
		return fmt.Errorf("tune: fetch the model catalog: %w", err)
	}
	models := make([]sim.Model, 0, len(list.Models))
	for _, m := range list.Models {
		b := m.NominalBytes
		if b <= 0 {
			b = m.Bytes
		}
		models = append(models, sim.Model{ID: m.ID, Bytes: b, Family: m.Family})
	}
	trace, err := sim.ReadTrace(bytes.NewReader(csv), sim.TraceOptions{File: "recorded arrivals", Models: models})
	if err != nil {
		return fmt.Errorf("tune: %w", err)
	}
	if len(trace.Requests) < 20 {
		return fmt.Errorf("tune: kiln has recorded %d arrivals; a search needs at least 20", len(trace.Requests))
	}
	if *holdout < 0 || *holdout > 0.9 {
		return fmt.Errorf("tune: --holdout %g: want a fraction in [0, 0.9]", *holdout)
	}
	train, hold := trace.Requests, []sim.Request(nil)
	if *holdout > 0 {
		train, hold = tune.SplitHoldout(trace.Requests, *holdout)
	}
	sc := node.SimConfig(cfg)
	res, err := tune.Search(context.Background(), sc, models, &sim.Trace{Requests: train}, kind, *name,
		tune.Options{Budget: *budget, Seed: *seed, Objective: *objective, Params: params})
	if err != nil {
		return err
	}
	var val *tune.Validation
	if *holdout > 0 && res.Gain > 0 {
		val, err = tune.ValidateHoldout(context.Background(), sc, models, hold, kind,
			tune.Candidate{Policy: *name, Params: res.Defaults}, tune.Candidate{Policy: *name, Params: res.Best},
			res.Objective, *repeats, *margin, nil)
		if err != nil {
			return err
		}
	}
	var canaryErr error
	out := struct {
		Tune       *tune.Result     `json:"tune"`
		Arrivals   int              `json:"arrivals"`
		Holdout    int              `json:"holdout"`
		Validation *tune.Validation `json:"validation,omitempty"`
		Experiment json.RawMessage  `json:"experiment,omitempty"`
		Note       string           `json:"note,omitempty"`
	}{Tune: res, Arrivals: len(trace.Requests), Holdout: len(hold), Validation: val}
	switch {
	case res.Gain <= 0:
		out.Note = "the defaults were not beaten in the simulator; no canary started"
	case val != nil && !val.Passed:
		out.Note = "on the hold-out: " + val.Reason + "; no canary started"
	case *noCanary:
		out.Note = "--no-canary: no canary started"
	default:
		spec, _ := json.Marshal(map[string]any{"kind": kind.String(), "policy": *name, "type": "canary", "params": res.Best})
		var exp json.RawMessage
		if canaryErr = p.request("POST", "/v1/experiments", "application/json", spec, true, &exp); canaryErr != nil {
			// The search's result is worth printing all the same.
			canaryErr = fmt.Errorf("tune: could not start the canary of the best parameters: %w", canaryErr)
			out.Note = canaryErr.Error()
		} else {
			out.Experiment = exp
		}
	}
	var id string
	if len(out.Experiment) > 0 {
		var e struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(out.Experiment, &e)
		id = e.ID
	}
	if outFmt.structured() {
		if err := outFmt.print(out, nil); err != nil {
			return err
		}
	} else {
		note := out.Note
		if canaryErr != nil {
			note = "" // main prints the error
		}
		if err := printTune(res, out.Arrivals, out.Holdout, val, note, id); err != nil {
			return err
		}
	}
	if canaryErr != nil {
		return canaryErr
	}
	if *wait && id != "" {
		return followExperiment(&p, id, outFmt)
	}
	return nil
}

func printTune(res *tune.Result, arrivals, holdout int, val *tune.Validation, note, id string) error {
	if holdout > 0 {
		fmt.Printf("searched on the %d older of %d recorded arrivals; the %d most recent validate\n\n", arrivals-holdout, arrivals, holdout)
	} else {
		fmt.Printf("searched on %d recorded arrivals\n\n", arrivals)
	}
	if err := res.WriteMarkdown(os.Stdout); err != nil {
		return err
	}
	if val != nil {
		fmt.Printf("\nhold-out: %s\n", val.Reason)
	}
	if note != "" {
		fmt.Printf("\n%s\n", note)
	}
	if id != "" {
		fmt.Printf("\ncanary %s started: kiln experiment show %s\n", id, id)
	}
	return nil
}

// cmdTuneStatus implements `kiln tune status`.
func cmdTuneStatus(args []string) error {
	fs := newFlags("tune status", tuneUsage)
	var p policyFlags
	p.register(fs.FlagSet)
	out := fs.output("table")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("tune status", "unexpected argument %q", pos[0])
	}
	data, err := p.send("GET", "/v1/tune", "", nil, false)
	if err != nil {
		return fmt.Errorf("tune status: %w", err)
	}
	var st tune.Status
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("tune status: %w", err)
	}
	return out.print(json.RawMessage(data), func(w io.Writer) error { return printTuneStatus(w, st) })
}

func printTuneStatus(w io.Writer, st tune.Status) error {
	var b strings.Builder
	if !st.Auto {
		b.WriteString("the background tuner is off (tune.auto: false)\n")
	} else {
		fmt.Fprintf(&b, "the background tuner is on: every %s, kinds %s, objective %s, hold-out %.0f%% in %d blocks, margin %.0f%%\n",
			st.Config.Interval, strings.Join(st.Config.Kinds, ", "), st.Config.Objective, 100*st.Config.Holdout,
			st.Config.Repeats, 100*st.Config.Margin)
		if st.Running {
			b.WriteString("a run is in progress\n")
		} else if st.NextRunAt != nil {
			fmt.Fprintf(&b, "next run at %s\n", st.NextRunAt.Format("2006-01-02 15:04:05 MST"))
		}
	}
	if len(st.Runs) == 0 {
		b.WriteString("no runs yet\n")
	} else {
		b.WriteString("\n| started | outcome | arrivals (train + hold-out) | experiment | reason |\n|---|---|---|---|---|\n")
		for _, r := range st.Runs {
			fmt.Fprintf(&b, "| %s | %s | %d (%d + %d) | %s | %s |\n", r.StartedAt.Format("2006-01-02 15:04:05"), r.Outcome,
				r.Arrivals, r.Train, r.Holdout, r.Experiment, strings.ReplaceAll(r.Reason, "|", "/"))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
