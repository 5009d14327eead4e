package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/api"
	"github.com/kiln-gpu/kiln/internal/node"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/sim"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

const policyUsage = `usage:
  kiln policy load FILE --kind K [--name N] [--activate] [--reason R]
  kiln policy activate NAME[@VERSION] [--kind K] [--reason R]
  kiln policy rollback KIND [--reason R]
  kiln policy unload NAME@VERSION [--kind K] [--reason R]
  kiln policy set KIND NAME=VALUE [NAME=VALUE ...]
  kiln policy list [--json]
  kiln policy test FILE --kind K [--seed N] [--samples N] [--trace T --models M [--config F] [--nodes N]] [--json]

set changes tunable parameters of KIND's active policy (the ones it
declares; list shows them), in place: no reload, no swap; all the values
or none. unload drops a version that is not active and no experiment runs,
and returns its memory. Loading bytes already loaded answers with that
version.

test runs a module here, without a kiln: the load checks, the self-test,
seeded random inputs and a trace, with the validation kiln applies.

Kinds: eviction, scheduling, batching, balancing, routing. Every command takes
--addr URL (default $KILN_ADDR or http://127.0.0.1:8188). Changes need the
admin token: --token, else $KILN_ADMIN_TOKEN, else admin.token from the
config, else the token kiln keeps in <data_dir>/admin.token (--data-dir,
--config, --set as for kiln serve).
`

// policyFlags are the flags every policy subcommand shares.
type policyFlags struct {
	configFlags
	addr, token, dataDir, reason, kind string
}

func (p *policyFlags) register(fs *flag.FlagSet) {
	p.configFlags.register(fs)
	fs.StringVar(&p.addr, "addr", "", addrUsage)
	fs.StringVar(&p.token, "token", "", "admin `TOKEN` (default $KILN_ADMIN_TOKEN, admin.token, <data_dir>/admin.token)")
	fs.StringVar(&p.dataDir, "data-dir", "", "kiln's data `DIR`, where it keeps a generated admin token")
	fs.StringVar(&p.reason, "reason", "", "why, recorded with the change")
	fs.StringVar(&p.kind, "kind", "", "policy `KIND`: eviction, scheduling, batching, balancing or routing")
}

// adminToken finds the token as documented in policyUsage.
func (p *policyFlags) adminToken() (string, error) {
	if p.token != "" {
		return p.token, nil
	}
	if t := os.Getenv("KILN_ADMIN_TOKEN"); t != "" {
		return t, nil
	}
	var extra []string
	if p.dataDir != "" {
		extra = append(extra, "data_dir="+p.dataDir)
	}
	cfg, err := p.load(extra...)
	if err != nil {
		return "", err
	}
	if cfg.Admin.Token != "" {
		return cfg.Admin.Token, nil
	}
	t, err := api.ReadAdminToken(cfg.DataDir)
	if err != nil {
		return "", fmt.Errorf("no admin token: pass --token, set KILN_ADMIN_TOKEN, or run where kiln's data dir is (--data-dir): %w", err)
	}
	return t, nil
}

// request sends one policy API call; admin calls carry the token.
func (p *policyFlags) request(method, path, contentType string, body []byte, admin bool, out any) error {
	data, err := p.send(method, path, contentType, body, admin)
	if err != nil {
		return err
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}

// send is one policy API call with the flags' address and, for admin
// calls, the admin token.
func (p *policyFlags) send(method, path, contentType string, body []byte, admin bool) ([]byte, error) {
	var tok string
	if admin {
		var err error
		if tok, err = p.adminToken(); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return newClient(p.addr).send(ctx, method, path, contentType, tok, body)
}

// cmdPolicy implements `kiln policy load|activate|rollback|set|list`.
func cmdPolicy(args []string) error {
	if len(args) == 0 {
		return usagef("policy", "want a subcommand: load, activate, rollback, unload, set, list or test")
	}
	if isHelp(args[0]) {
		fmt.Print(policyUsage)
		return nil
	}
	sub, rest := args[0], args[1:]
	if sub == "test" {
		// Local: none of the flags that reach a kiln apply.
		return cmdPolicyTest(rest)
	}
	switch sub {
	case "load", "activate", "rollback", "unload", "set", "list":
	default:
		return usagef("policy", "unknown subcommand %q", sub)
	}
	fs := newFlags("policy "+sub, policyUsage)
	var pf policyFlags
	pf.register(fs.FlagSet)
	name := fs.String("name", "", "name of the loaded policy (default: the file name without .wasm)")
	activate := fs.Bool("activate", false, "activate the policy once loaded")
	out := fs.output("table")
	pos, err := fs.parse(rest)
	if err != nil {
		return err
	}
	switch sub {
	case "load":
		if len(pos) != 1 || pf.kind == "" {
			return usagef("policy load", "want FILE and --kind K")
		}
		if _, err := abi.ParseKind(pf.kind); err != nil {
			return err
		}
		wasm, err := os.ReadFile(pos[0])
		if err != nil {
			return err
		}
		n := *name
		if n == "" {
			n = strings.TrimSuffix(filepath.Base(pos[0]), ".wasm")
		}
		q := url.Values{"name": {n}, "reason": {pf.reason}}
		if *activate {
			q.Set("activate", "1")
		}
		var vi policy.VersionInfo
		if err := pf.request(http.MethodPost, "/v1/policies/"+pf.kind+"?"+q.Encode(), "application/wasm", wasm, true, &vi); err != nil {
			return err
		}
		state := "loaded"
		if vi.Reused {
			state = "already loaded (identical bytes)"
		}
		if vi.Active {
			state += ", active"
		}
		return out.print(vi, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "%s policy %s@%d %s (sha256 %.12s)\n", vi.Kind, vi.Name, vi.Version, state, vi.SHA256)
			return err
		})
	case "activate":
		if len(pos) != 1 {
			return usagef("policy activate", "want one NAME[@VERSION]")
		}
		n, ver, err := parseRef(pos[0])
		if err != nil {
			return err
		}
		vi, err := pf.versionAction(n, ver, "activate")
		if err != nil {
			return err
		}
		return out.print(vi, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "%s policy %s@%d is active\n", vi.Kind, vi.Name, vi.Version)
			return err
		})
	case "rollback":
		if len(pos) != 1 {
			return usagef("policy rollback", "want one KIND")
		}
		if _, err := abi.ParseKind(pos[0]); err != nil {
			return err
		}
		body, _ := json.Marshal(map[string]any{"reason": pf.reason})
		var vi policy.VersionInfo
		if err := pf.request(http.MethodPost, "/v1/policies/"+pos[0]+"/rollback", "application/json", body, true, &vi); err != nil {
			return err
		}
		return out.print(vi, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "%s policy rolled back to %s@%d\n", vi.Kind, vi.Name, vi.Version)
			return err
		})
	case "unload":
		if len(pos) != 1 {
			return usagef("policy unload", "want one NAME@VERSION")
		}
		n, ver, err := parseRef(pos[0])
		if err != nil {
			return err
		}
		if ver == 0 {
			return fmt.Errorf("policy %q: say which version to unload (NAME@VERSION; list shows them)", pos[0])
		}
		vi, err := pf.versionAction(n, ver, "unload")
		if err != nil {
			return err
		}
		return out.print(vi, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "%s policy %s@%d unloaded\n", vi.Kind, vi.Name, vi.Version)
			return err
		})
	case "set":
		if len(pos) < 2 {
			return usagef("policy set", "want KIND NAME=VALUE [NAME=VALUE ...]")
		}
		if _, err := abi.ParseKind(pos[0]); err != nil {
			return err
		}
		// One request for every value: the host checks them all against
		// the declared types and bounds and applies all or none.
		set := map[string]float64{}
		for _, a := range pos[1:] {
			n, v, ok := strings.Cut(a, "=")
			f, err := strconv.ParseFloat(v, 64)
			if !ok || n == "" || err != nil {
				return fmt.Errorf("parameter %q: want NAME=NUMBER", a)
			}
			if _, dup := set[n]; dup {
				return fmt.Errorf("parameter %s given twice", n)
			}
			set[n] = f
		}
		body, _ := json.Marshal(map[string]any{"params": set})
		if err := pf.request(http.MethodPut, "/v1/policies/"+pos[0]+"/params", "application/json", body, true, nil); err != nil {
			return fmt.Errorf("set %s: %w", pos[0], err)
		}
		fmt.Printf("%s policy: %s\n", pos[0], formatParams(set))
		return nil
	case "list":
		var list struct {
			Policies []policy.KindInfo `json:"policies"`
		}
		if err := pf.request(http.MethodGet, "/v1/policies", "", nil, false, &list); err != nil {
			return err
		}
		if list.Policies == nil {
			list.Policies = []policy.KindInfo{}
		}
		return out.print(list, func(w io.Writer) error { return writePolicies(w, list.Policies) })
	}
	return usagef("policy", "unknown subcommand %q", sub)
}

func writePolicies(w io.Writer, kinds []policy.KindInfo) error {
	{
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tPOLICY\tSOURCE\tACTIVE\tCALLS\tFAULTS\tLOADED\tPARAMS")
		for _, k := range kinds {
			for _, v := range k.Versions {
				act := ""
				if v.Active {
					act = "*"
				}
				fmt.Fprintf(tw, "%s\t%s@%d\t%s\t%s\t%d\t%d\t%s\t%s\n", k.Kind, v.Name, v.Version, v.Source, act, v.Calls, v.Faults,
					v.LoadedAt.Format(time.RFC3339), formatParams(v.Params))
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		return writeRecentChanges(w, kinds)
	}
}

// recentChanges is how many of each kind's latest changes list shows
// (--json has them all).
const recentChanges = 3

// writeRecentChanges lists each kind's latest changes after start-up —
// activations, sets, rollbacks and why (a watch-rollback names the metric
// that regressed) — so that an operator sees what undid their change.
func writeRecentChanges(w io.Writer, kinds []policy.KindInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := false
	for _, k := range kinds {
		var cs []policy.Change
		for _, c := range k.Changes {
			if c.Action != "start" {
				cs = append(cs, c)
			}
		}
		for _, c := range cs[max(len(cs)-recentChanges, 0):] {
			if !header {
				fmt.Fprintln(tw, "\nTIME\tKIND\tACTION\tFROM\tTO\tREASON")
				header = true
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Time.Format(time.RFC3339), c.Kind, c.Action, c.From, c.To, c.Reason)
		}
	}
	return tw.Flush()
}

// formatParams writes parameters as name=value, by name.
func formatParams(ps map[string]float64) string {
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(ps)) {
		parts = append(parts, n+"="+strconv.FormatFloat(ps[n], 'g', -1, 64))
	}
	return strings.Join(parts, " ")
}

// parseRef parses NAME[@VERSION]; version 0 means the newest.
func parseRef(s string) (string, int, error) {
	n, v, ok := strings.Cut(s, "@")
	if !ok {
		return n, 0, nil
	}
	ver, err := strconv.Atoi(v)
	if err != nil || ver < 1 {
		return "", 0, fmt.Errorf("policy %q: version must be a positive integer", s)
	}
	return n, ver, nil
}

// resolveKind finds the one kind that has a policy called name.
func (p *policyFlags) resolveKind(name string) (string, error) {
	var out struct {
		Policies []policy.KindInfo `json:"policies"`
	}
	if err := p.request(http.MethodGet, "/v1/policies", "", nil, false, &out); err != nil {
		return "", err
	}
	var kinds []string
	for _, k := range out.Policies {
		has := slices.Contains(k.Builtins, name)
		for _, v := range k.Versions {
			has = has || v.Name == name
		}
		if has {
			kinds = append(kinds, k.Kind)
		}
	}
	switch len(kinds) {
	case 0:
		return "", fmt.Errorf("no policy named %q is loaded or built in", name)
	case 1:
		return kinds[0], nil
	}
	return "", fmt.Errorf("policy %q exists for %s; say which with --kind", name, strings.Join(kinds, " and "))
}

// cmdPolicyTest is `kiln policy test FILE --kind K`: the load's checks, the
// self-test and a seeded trace, here, with kiln's own validation.
func cmdPolicyTest(args []string) error {
	fs := newFlags("policy test", policyUsage)
	kind := fs.String("kind", "", "policy kind: eviction, scheduling, batching, balancing or routing")
	out := fs.output("table")
	seed := fs.Uint64("seed", 0, "seed of the random inputs (default: drawn, and printed)")
	samples := fs.Int("samples", 1000, "decisions in the trace")
	printInputs := fs.Int("print-inputs", 0, "print the first N random inputs as JSON instead of testing")
	timeout := fs.Duration("call-timeout", 0, "per-call deadline (default policies.call_timeout, 50ms)")
	tracePath := fs.String("trace", "", "also replay this trace CSV in the simulator (as kiln sim --trace), once with the config's policy and once with the module")
	modelsPath := fs.String("models", "", "--trace: the model table CSV (as kiln sim --models)")
	nodes := fs.Int("nodes", 0, "--trace: replay on a cluster of N nodes of the config's shape (as kiln sim --nodes; default 3 for a routing module, which one node never asks, else 1)")
	var cf configFlags
	cf.register(fs.FlagSet)
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 && *printInputs == 0 || len(pos) > 1 || *kind == "" {
		return usagef("policy test", "want FILE and --kind K (or --kind K --print-inputs N)")
	}
	if (*tracePath == "") != (*modelsPath == "") {
		return usagef("policy test", "--trace and --models go together")
	}
	if *nodes < 0 || *nodes > 0 && *tracePath == "" {
		return usagef("policy test", "--nodes N (N ≥ 1) goes with --trace")
	}
	k, err := abi.ParseKind(*kind)
	if err != nil {
		return err
	}
	if !flagSet(fs.FlagSet, "seed") {
		*seed = uint64(time.Now().UnixNano()) % 1e9
	}
	if *printInputs > 0 {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		for i := range *printInputs {
			if err := enc.Encode(policy.SampleInput(k, *seed, i)); err != nil {
				return err
			}
		}
		return nil
	}
	wasm, err := os.ReadFile(pos[0])
	if err != nil {
		return err
	}
	rep, err := policy.Check(context.Background(), k, wasm, policy.CheckOptions{Seed: *seed, Samples: *samples, CallTimeout: *timeout},
		zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, NoColor: true}).Level(zerolog.InfoLevel))
	if err != nil {
		return fmt.Errorf("policy test %s (seed %d): %w", pos[0], *seed, err)
	}
	var replay *traceReplay
	if *tracePath != "" {
		n := *nodes
		if n == 0 {
			n = 1
			if k == abi.KindRouting {
				n = 3
			}
		}
		if replay, err = replayTrace(cf, *tracePath, *modelsPath, k, pos[0], wasm, n); err != nil {
			return fmt.Errorf("policy test %s: %w", pos[0], err)
		}
	}
	if out.structured() {
		return out.print(struct {
			policy.CheckReport
			Replay *traceReplay `json:"replay,omitempty"`
		}{rep, replay}, nil)
	}
	defer replay.print(os.Stdout)
	article := "a"
	if strings.ContainsRune("aeiou", rune(rep.Kind[0])) {
		article = "an"
	}
	fmt.Printf("%s: passes as %s %s policy (sha256 %.12s)\n", pos[0], article, rep.Kind, rep.SHA256)
	fmt.Printf("  load checks and self-test: ok (fixed samples and %d random, seed %d)\n", policy.LoadSamples, *seed)
	fmt.Printf("  trace: %d decisions, %d answered, %d no decision, 0 faults\n", rep.Trace.Decisions, rep.Trace.OK, rep.Trace.NoDecision)
	for _, p := range rep.Params {
		fmt.Printf("  param %s (%s) default %v in [%v, %v]\n", p.Name, p.Type, p.Default, p.Min, p.Max)
	}
	return nil
}

// flagSet reports whether the flag name was given.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// traceReplay is `kiln policy test --trace`: the simulator run on a
// recorded (or generated) trace with the config's policy of the kind, and
// the same run with the module active, so that an author sees what the
// module decides on real arrivals — and the faults the host would count,
// stalls included — before shipping it.
type traceReplay struct {
	Trace    string      `json:"trace"`
	Kind     string      `json:"kind"`
	Nodes    int         `json:"nodes"`
	Baseline *sim.Report `json:"baseline"`
	Module   *sim.Report `json:"module"`
}

// replayTrace runs the trace twice in the simulator, on nodes nodes of the
// config's shape: with the config's policies, and with the module active
// as kind k.
func replayTrace(cf configFlags, tracePath, modelsPath string, k abi.Kind, file string, wasm []byte, nodes int) (*traceReplay, error) {
	cfg, err := cf.load()
	if err != nil {
		return nil, err
	}
	mf, err := os.Open(modelsPath)
	if err != nil {
		return nil, err
	}
	defer mf.Close()
	models, err := sim.ReadModels(mf, modelsPath)
	if err != nil {
		return nil, err
	}
	tf, err := os.Open(tracePath)
	if err != nil {
		return nil, err
	}
	defer tf.Close()
	trace, err := sim.ReadTrace(tf, sim.TraceOptions{File: tracePath, Models: models, WorkflowDir: filepath.Dir(tracePath)})
	if err != nil {
		return nil, err
	}
	cc := sim.ClusterConfig{Node: node.SimConfig(cfg), Nodes: nodes, NetworkDelay: cfg.Sim.NetworkDelay}
	r := &traceReplay{Trace: tracePath, Kind: k.String(), Nodes: nodes}
	if r.Baseline, err = sim.RunCluster(context.Background(), cc, models, trace, sim.Options{Seed: 1}); err != nil {
		return nil, err
	}
	name := strings.TrimSuffix(filepath.Base(file), ".wasm")
	mod := sim.Module{Kind: k, Name: name, WASM: wasm}
	if r.Module, err = sim.RunCluster(context.Background(), cc, models, trace, sim.Options{Seed: 1, Modules: []sim.Module{mod}}); err != nil {
		return nil, err
	}
	return r, nil
}

// print writes the two runs side by side; a nil replay prints nothing.
func (r *traceReplay) print(w io.Writer) {
	if r == nil {
		return
	}
	b, m := r.Baseline, r.Module
	where := "the simulator"
	if r.Nodes > 1 {
		where = fmt.Sprintf("a simulated cluster of %d nodes", r.Nodes)
	}
	fmt.Fprintf(w, "  trace %s in %s (%d jobs), the config's policy against the module:\n", r.Trace, where, b.Jobs)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "    \t%s\t%s\n", b.Policies[r.Kind], m.Policies[r.Kind])
	row := func(name string, f func(*sim.Report) float64, format string) {
		fmt.Fprintf(tw, "    %s\t"+format+"\t"+format+"\n", name, f(b), f(m))
	}
	row("completed", func(r *sim.Report) float64 { return float64(r.Completed) }, "%.0f")
	row("failed", func(r *sim.Report) float64 { return float64(r.Failed) }, "%.0f")
	row("mean latency s", func(r *sim.Report) float64 { return r.MeanLatencyS }, "%.2f")
	row("p95 latency s", func(r *sim.Report) float64 { return r.P95LatencyS }, "%.2f")
	row("interactive p95 s", func(r *sim.Report) float64 { return r.PerClass["interactive"].P95LatencyS }, "%.2f")
	row("total load time s", func(r *sim.Report) float64 { return r.TotalLoadTimeS }, "%.1f")
	tw.Flush()
	if len(m.PolicyFaults) == 0 {
		fmt.Fprintln(w, "  faults on the trace: none")
	}
	for v, by := range m.PolicyFaults {
		fmt.Fprintf(w, "  faults on the trace: %s %v\n", v, by)
	}
	for _, rb := range m.PolicyRollbacks {
		fmt.Fprintf(w, "  %s\n", rb)
	}
}

// versionAction posts action ("activate", "unload") for name@version to
// its kind (--kind, or the one the name is found in) and returns the
// version the node answers with.
func (pf *policyFlags) versionAction(name string, version int, action string) (policy.VersionInfo, error) {
	var vi policy.VersionInfo
	kind := pf.kind
	if kind == "" {
		var err error
		if kind, err = pf.resolveKind(name); err != nil {
			return vi, err
		}
	}
	body, _ := json.Marshal(map[string]any{"name": name, "version": version, "reason": pf.reason})
	err := pf.request(http.MethodPost, "/v1/policies/"+kind+"/"+action, "application/json", body, true, &vi)
	return vi, err
}
