package tune

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/sim"
	"github.com/kiln-gpu/kiln/internal/tune/autotune"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// fakeExperiments records the canaries the tuner starts.
type fakeExperiments struct {
	mu      sync.Mutex
	running string
	started []experiment.Spec
	err     error
}

func (f *fakeExperiments) Running() (experiment.Record, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return experiment.Record{ID: f.running}, f.running != ""
}

func (f *fakeExperiments) Start(_ context.Context, s experiment.Spec) (experiment.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return experiment.Record{}, f.err
	}
	f.started = append(f.started, s)
	f.running = fmt.Sprintf("exp-%d", len(f.started))
	return experiment.Record{ID: f.running, Spec: s}, nil
}

var _ Experimenter = (*fakeExperiments)(nil)

// simNode is a tuner's view of a node that runs in the simulator: a node
// config, the active policies and their parameters, and recorded arrivals.
type simNode struct {
	cfg    sim.Config
	models []sim.Model
	reqs   []sim.Request
	active map[abi.Kind]Candidate
}

func (n *simNode) sources(exp Experimenter) Sources {
	return Sources{
		Requests: func(limit int) []sim.Request {
			if limit > 0 && len(n.reqs) > limit {
				return rebase(n.reqs[len(n.reqs)-limit:])
			}
			return n.reqs
		},
		Node: func() (sim.Config, []sim.Model, error) {
			c := n.cfg
			for k, a := range n.active {
				c = WithPolicy(c, k, a.Policy, a.Params)
			}
			return c, n.models, nil
		},
		Active: func(k abi.Kind) (string, map[string]float64, error) {
			a, ok := n.active[k]
			if !ok {
				return "", nil, errors.New("no such kind")
			}
			return a.Policy, maps.Clone(a.Params), nil
		},
		Experiments: exp,
	}
}

func newAuto(t *testing.T, cfg autotune.Config, src Sources, clk clock.Clock) *Auto {
	t.Helper()
	cfg.Auto = true
	a, err := NewAuto(AutoOptions{Config: cfg, Sources: src, Clock: clk, Wall: wall(), Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// heavy is a workload where batching pays: 1.5 jobs/s of a few popular
// checkpoints on two single-worker GPUs, so that same-model jobs queue and
// a batch saves their loads.
func heavy(seed uint64, jobs int) sim.GenConfig {
	return sim.GenConfig{Kind: sim.KindZipf, Jobs: jobs, Rate: 1.5, Checkpoints: 5, Seed: seed}
}

// unseenGain runs the current setting and the canaried one of kind k on a
// workload the tuner never saw and returns the canaried one's relative
// gain of mean latency.
func unseenGain(t *testing.T, n *simNode, k abi.Kind, spec experiment.Spec, g sim.GenConfig) float64 {
	t.Helper()
	models, reqs, err := sim.Generate(g)
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := n.sources(nil).Node()
	cur := n.active[k]
	tr := &sim.Trace{Requests: reqs}
	base, _, err := Evaluate(context.Background(), c, models, tr, k, cur.Policy, cur.Params, ObjectiveMeanLatency, wall())
	if err != nil {
		t.Fatal(err)
	}
	cand, _, err := Evaluate(context.Background(), c, models, tr, k, spec.Policy, spec.Params, ObjectiveMeanLatency, wall())
	if err != nil {
		t.Fatal(err)
	}
	return (base - cand) / base
}

// TestAutoCanariesWhatWinsOnUnseenTraffic tunes, end to end in the
// simulator, a node whose current batching setting is really worse than
// another on its traffic: batching off (the other built-in, same-model,
// is tried) and same-model with batches of one (an operator's poor
// setting; only the parameters are searched). Batches of one are batching
// off, so both cases find the same winner, the first by trying another
// built-in, the second by searching the current one's parameters. The
// tuner must start a canary of a better setting, and that setting must
// also beat the current one on a workload from another seed that neither
// the search nor the hold-out saw.
func TestAutoCanariesWhatWinsOnUnseenTraffic(t *testing.T) {
	for _, tc := range []struct {
		name        string
		current     Candidate
		tryBuiltins bool
		jobs        int
	}{
		{name: "other built-in", current: Candidate{Policy: "none"}, tryBuiltins: true, jobs: 3000},
		{name: "parameters", current: Candidate{Policy: "same-model", Params: map[string]float64{"max_size": 1, "max_wait_ms": 200}}, jobs: 3000},
	} {
		for _, seed := range []uint64{31, 32} {
			t.Run(fmt.Sprintf("%s/seed %d", tc.name, seed), func(t *testing.T) {
				models, reqs, err := sim.Generate(heavy(seed, tc.jobs))
				if err != nil {
					t.Fatal(err)
				}
				n := &simNode{cfg: node(), models: models, reqs: reqs, active: map[abi.Kind]Candidate{
					abi.KindBatching: tc.current, abi.KindScheduling: {Policy: "priority"}, abi.KindBalancing: {Policy: "least-loaded"}}}
				exp := &fakeExperiments{}
				cfg := autotune.DefaultConfig()
				cfg.Kinds, cfg.Budget, cfg.TryBuiltins, cfg.MinArrivals = []string{"batching"}, 16, tc.tryBuiltins, 200
				r := newAuto(t, cfg, n.sources(exp), clock.NewFake(time.Unix(0, 0))).RunOnce(context.Background())
				t.Logf("%s: %s", r.Outcome, r.Reason)
				if r.Outcome != OutcomeCanaryStarted || len(exp.started) != 1 || r.Experiment != "exp-1" {
					t.Fatalf("outcome %s, canaries %v; want one canary", r.Outcome, exp.started)
				}
				spec := exp.started[0]
				if spec.Kind != "batching" || spec.Policy != "same-model" || spec.Type != experiment.Canary {
					t.Fatalf("canary spec %+v", spec)
				}
				if tc.current.Policy == "same-model" && spec.Params["max_size"] <= 1 {
					t.Errorf("canaried params %v keep batches of one", spec.Params)
				}
				v := r.Kinds[0].Validation
				if v == nil || !v.Passed || v.LowerBound <= cfg.Margin || r.Train+r.Holdout != len(reqs) {
					t.Fatalf("validation %+v, split %d+%d", v, r.Train, r.Holdout)
				}
				// The claim: better on traffic the tuner never saw.
				g := unseenGain(t, n, abi.KindBatching, spec, heavy(seed+1000, 1500))
				t.Logf("gain on an unseen workload: %.1f%%", 100*g)
				if g <= 0 {
					t.Errorf("the canaried setting loses %.1f%% on an unseen workload", -100*g)
				}
			})
		}
	}
}

// TestAutoKeepsDefaultsWhereTheyAreBest: at a light load nothing queues,
// so no policy or parameter changes latency by more than noise, and the
// tuner, searching every kind and every built-in, must keep the current
// settings and say why for each kind.
func TestAutoKeepsDefaultsWhereTheyAreBest(t *testing.T) {
	for _, seed := range []uint64{41, 42} {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			models, reqs, err := sim.Generate(sim.GenConfig{Kind: sim.KindZipf, Jobs: 1200, Rate: 0.2, Checkpoints: 5, Seed: seed})
			if err != nil {
				t.Fatal(err)
			}
			n := &simNode{cfg: node(), models: models, reqs: reqs, active: map[abi.Kind]Candidate{
				abi.KindScheduling: {Policy: "priority"}, abi.KindBatching: {Policy: "same-model"},
				abi.KindBalancing: {Policy: "affinity"}, abi.KindEviction: {Policy: "gdsf"}}}
			exp := &fakeExperiments{}
			cfg := autotune.DefaultConfig()
			cfg.Budget, cfg.TryBuiltins = 36, true
			r := newAuto(t, cfg, n.sources(exp), clock.NewFake(time.Unix(0, 0))).RunOnce(context.Background())
			t.Logf("%s: %s", r.Outcome, r.Reason)
			if r.Outcome != OutcomeKeptDefaults || len(exp.started) != 0 {
				t.Fatalf("outcome %s, canaries %v; want the defaults kept", r.Outcome, exp.started)
			}
			if len(r.Kinds) != 3 {
				t.Fatalf("kinds %+v", r.Kinds)
			}
			for _, kr := range r.Kinds {
				if kr.Note == "" || kr.SimRuns < 2 {
					t.Errorf("%s: note %q after %d runs", kr.Kind, kr.Note, kr.SimRuns)
				}
			}
		})
	}
}

// lightNode is a node with a few hundred recorded arrivals at a light load.
func lightNode(t *testing.T, jobs int) *simNode {
	t.Helper()
	models, reqs, err := sim.Generate(sim.GenConfig{Kind: sim.KindZipf, Jobs: jobs, Rate: 0.3, Checkpoints: 4, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	return &simNode{cfg: node(), models: models, reqs: reqs, active: map[abi.Kind]Candidate{
		abi.KindScheduling: {Policy: "priority"}, abi.KindBatching: {Policy: "same-model"}, abi.KindBalancing: {Policy: "affinity"}}}
}

func TestAutoSkipsAndFails(t *testing.T) {
	small := autotune.DefaultConfig()
	small.Kinds, small.Budget, small.MinArrivals = []string{"batching"}, 4, 100
	for _, tc := range []struct {
		name    string
		jobs    int
		exp     *fakeExperiments
		edit    func(*simNode)
		want    string
		started int
		reason  string
	}{
		{name: "another experiment runs", jobs: 300, exp: &fakeExperiments{running: "exp-abc"}, want: OutcomeSkippedBusy, reason: "exp-abc"},
		{name: "too few arrivals", jobs: 60, exp: &fakeExperiments{}, want: OutcomeSkippedFewArrivals, reason: "a run needs 100"},
		{name: "arrivals of models no longer in the catalog", jobs: 300, exp: &fakeExperiments{},
			edit: func(n *simNode) { n.models = n.models[:1] }, want: OutcomeSkippedFewArrivals, reason: "without"},
		{name: "a module cannot be simulated", jobs: 300, exp: &fakeExperiments{},
			edit: func(n *simNode) { n.active[abi.KindBatching] = Candidate{Policy: "my-batcher"} }, want: OutcomeKeptDefaults, reason: "not a built-in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := lightNode(t, tc.jobs)
			if tc.edit != nil {
				tc.edit(n)
			}
			r := newAuto(t, small, n.sources(tc.exp), clock.NewFake(time.Unix(0, 0))).RunOnce(context.Background())
			if r.Outcome != tc.want || !strings.Contains(r.Reason, tc.reason) || len(tc.exp.started) != tc.started {
				t.Errorf("outcome %s (%s), %d canaries; want %s with %q", r.Outcome, r.Reason, len(tc.exp.started), tc.want, tc.reason)
			}
		})
	}
}

// TestAutoRefusedCanaryFails: when the controller refuses the winner's
// canary, the run is a failure with the controller's reason, and an
// experiment that started meanwhile makes it a skip.
func TestAutoRefusedCanary(t *testing.T) {
	models, reqs, err := sim.Generate(heavy(31, 3000))
	if err != nil {
		t.Fatal(err)
	}
	cfg := autotune.DefaultConfig()
	cfg.Kinds, cfg.Budget, cfg.TryBuiltins, cfg.MinArrivals = []string{"batching"}, 4, true, 200
	for _, tc := range []struct {
		err  error
		want string
	}{
		{err: errors.New("unit workers needs at least two workers"), want: OutcomeFailed},
		{err: fmt.Errorf("%w: exp-x", experiment.ErrBusy), want: OutcomeSkippedBusy},
	} {
		n := &simNode{cfg: node(), models: models, reqs: reqs, active: map[abi.Kind]Candidate{abi.KindBatching: {Policy: "none"}}}
		r := newAuto(t, cfg, n.sources(&fakeExperiments{err: tc.err}), clock.NewFake(time.Unix(0, 0))).RunOnce(context.Background())
		if r.Outcome != tc.want || !strings.Contains(r.Reason, tc.err.Error()) {
			t.Errorf("outcome %s (%s), want %s", r.Outcome, r.Reason, tc.want)
		}
	}
}

// TestAutoLoop: the loop runs once per interval of its clock, reports
// through Status, the handler and the metric, and stops with its context.
func TestAutoLoop(t *testing.T) {
	n := lightNode(t, 300)
	clk := clock.NewFake(time.Unix(1000, 0))
	cfg := autotune.DefaultConfig()
	cfg.Kinds, cfg.Budget, cfg.MinArrivals, cfg.Interval = []string{"batching"}, 4, 100, time.Hour
	exp := &fakeExperiments{running: "exp-busy"}
	a := newAuto(t, cfg, n.sources(exp), clk)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Run(ctx)
	}()
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitUntil("the loop to wait", func() bool { return clk.Waiters() > 0 })
	if st := a.Status(); len(st.Runs) != 0 || st.NextRunAt == nil || !st.NextRunAt.Equal(time.Unix(1000, 0).Add(time.Hour)) {
		t.Fatalf("before the first interval: %+v", st)
	}
	clk.Advance(time.Hour)
	waitUntil("a run", func() bool { return len(a.Status().Runs) == 1 && clk.Waiters() > 0 })
	exp.mu.Lock()
	exp.running = ""
	exp.mu.Unlock()
	clk.Advance(time.Hour)
	waitUntil("a second run", func() bool { return len(a.Status().Runs) == 2 })
	cancel()
	<-done

	st := a.Status()
	if st.Runs[0].Outcome != OutcomeKeptDefaults || st.Runs[1].Outcome != OutcomeSkippedBusy || st.Counts[OutcomeSkippedBusy] != 1 {
		t.Errorf("runs %+v, counts %v", st.Runs, st.Counts)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(a)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			counts[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if counts[OutcomeSkippedBusy] != 1 || counts[OutcomeKeptDefaults] != 1 || len(counts) != len(Outcomes) {
		t.Errorf("kiln_tune_runs_total: %v", counts)
	}
}

func TestSplitHoldoutAndBlocks(t *testing.T) {
	var reqs []sim.Request
	for i := range 10 {
		reqs = append(reqs, sim.Request{Time: time.Duration(i+5) * time.Second, Models: []string{"m"}})
	}
	train, hold := SplitHoldout(reqs, 0.3)
	if len(train) != 7 || len(hold) != 3 || train[0].Time != 0 || hold[0].Time != 0 || hold[2].Time != 2*time.Second {
		t.Errorf("split %v | %v", train, hold)
	}
	if reqs[0].Time != 5*time.Second {
		t.Error("the split changed its input")
	}
	bs := Blocks(reqs, 3)
	if len(bs) != 3 || len(bs[0])+len(bs[1])+len(bs[2]) != 10 || bs[2][0].Time != 0 {
		t.Errorf("blocks %v", bs)
	}
}

func TestValidateHoldout(t *testing.T) {
	n := lightNode(t, 200)
	c, _, _ := n.sources(nil).Node()
	cur := Candidate{Policy: "same-model"}
	v, err := ValidateHoldout(context.Background(), c, n.models, n.reqs, abi.KindBatching, cur, cur, ObjectiveMeanLatency, 4, 0.05, wall())
	if err != nil {
		t.Fatal(err)
	}
	// A candidate identical to the current setting gains nothing in any
	// block, so it has no noise and fails the margin.
	if v.Passed || v.Gain != 0 || v.Noise != 0 || len(v.BlockGains) != 4 || v.SimRuns != 10 {
		t.Errorf("A/A validation %+v", v)
	}
	if _, err := ValidateHoldout(context.Background(), c, n.models, n.reqs, abi.KindBatching, cur, cur, ObjectiveMeanLatency, 1, 0.05, wall()); err == nil {
		t.Error("one block measures no noise, but validation ran")
	}
}

// TestAutoDeadline: a run whose context ends (the node stopping, or
// tune.timeout passing) stops its simulations and fails without a canary.
func TestAutoDeadline(t *testing.T) {
	n := lightNode(t, 300)
	cfg := autotune.DefaultConfig()
	cfg.Kinds, cfg.Budget, cfg.MinArrivals = []string{"batching"}, 4, 100
	exp := &fakeExperiments{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := newAuto(t, cfg, n.sources(exp), clock.NewFake(time.Unix(0, 0))).RunOnce(ctx)
	if r.Outcome != OutcomeFailed || !strings.Contains(r.Reason, "context canceled") || len(exp.started) != 0 {
		t.Errorf("outcome %s (%s), %d canaries", r.Outcome, r.Reason, len(exp.started))
	}
}

// TestAutoStartsARealCanary hands the tuner's winner to the experiment
// controller that a node runs (on a policy host with the active
// policies), not a fake: the controller must accept the spec and run the
// tuned candidate, with its parameters, against the active policy.
func TestAutoStartsARealCanary(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	host, err := policy.NewHost(policy.Config{NativeBuiltins: true, Batching: "none"}, zerolog.Nop(), clk)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	ctl, err := experiment.New(experiment.Options{Host: host, Clock: clk, Seed: 1,
		Router:  experiment.NewRouter(experiment.Policies{Scheduler: host.Scheduler(), Balancer: host.Balancer(), Batcher: host.Batcher(), Evictor: host.Evictor()}),
		Workers: func() []string { return []string{"w0", "w1"} }})
	if err != nil {
		t.Fatal(err)
	}
	models, reqs, err := sim.Generate(heavy(31, 3000))
	if err != nil {
		t.Fatal(err)
	}
	n := &simNode{cfg: node(), models: models, reqs: reqs}
	src := n.sources(ctl)
	src.Active = func(k abi.Kind) (string, map[string]float64, error) {
		a, err := host.ActiveArm(k)
		if err != nil {
			return "", nil, err
		}
		return a.Name(), a.Params(), nil
	}
	cfg := autotune.DefaultConfig()
	cfg.Kinds, cfg.Budget, cfg.TryBuiltins, cfg.MinArrivals = []string{"batching"}, 8, true, 200
	cfg.Guards = []string{"faults==0", "ratio_p95<=1.5"}
	r := newAuto(t, cfg, src, clk).RunOnce(context.Background())
	if r.Outcome != OutcomeCanaryStarted {
		t.Fatalf("outcome %s: %s", r.Outcome, r.Reason)
	}
	rec, ok := ctl.Running()
	if !ok || rec.ID != r.Experiment || rec.Spec.Type != experiment.Canary || rec.Baseline != "none@1" ||
		!strings.HasPrefix(rec.Candidate, "same-model@") || rec.Spec.Params["max_size"] <= 1 || len(rec.Spec.Guards) != 2 {
		t.Fatalf("running experiment %+v (ok %v)", rec, ok)
	}
	// One canary at a time: the next run is skipped while it runs.
	if r2 := newAuto(t, cfg, src, clk).RunOnce(context.Background()); r2.Outcome != OutcomeSkippedBusy {
		t.Errorf("second run while the canary runs: %s (%s)", r2.Outcome, r2.Reason)
	}
}
