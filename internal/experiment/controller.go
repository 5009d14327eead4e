package experiment

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Errors the API maps to status codes.
var (
	// ErrBusy: an experiment is already running on this node.
	ErrBusy = errors.New("an experiment is already running")
	// ErrNotFound: no experiment has that ID.
	ErrNotFound = errors.New("experiment not found")
	// ErrNotRunning: the experiment already ended.
	ErrNotRunning = errors.New("experiment is not running")
	// ErrInvalid wraps every problem with a spec.
	ErrInvalid = errors.New("invalid experiment")
)

// Host is what the controller needs of the policy host (*policy.Host).
type Host interface {
	Arm(ctx context.Context, k abi.Kind, name string, number int) (*policy.Arm, error)
	ArmWithParams(ctx context.Context, k abi.Kind, name string, number int, params map[string]float64) (*policy.Arm, error)
	SetParam(k abi.Kind, name string, value float64) error
	ActiveArm(k abi.Kind) (*policy.Arm, error)
	Activate(ctx context.Context, k abi.Kind, name string, number int, reason string) (policy.VersionInfo, error)
}

// Options are the controller's collaborators.
type Options struct {
	Config Config
	Host   Host
	// Router is the dispatcher's policies; the controller installs and
	// removes each experiment's split there.
	Router *Router
	Clock  clock.Clock
	// Rand draws seeds and IDs; nil seeds one from Seed.
	Rand *rand.Rand
	Seed uint64
	// Workers lists the node's worker IDs, for worker-group splits.
	Workers func() []string
	// WorkerDevice names the device a worker runs on; with it a
	// worker-group split keeps each device's workers in one arm (nil: every
	// worker counts as a device of its own).
	WorkerDevice func(id string) string
	// Replay, when set, starts a replay of the node's model accesses under
	// an eviction experiment's two arms (Replay); its comparison gates the
	// experiment beside the live metrics. Nil: eviction experiments are
	// judged on the live metrics alone.
	Replay func(arms [2]*policy.Arm) (Replay, error)
	// DataDir holds the record (File); empty keeps it in memory only (the
	// simulator).
	DataDir string
	Log     zerolog.Logger
}

// Controller runs one experiment at a time: it splits the node through the
// Router, counts each finished job for its arm, looks at the evidence every
// Config.Interval (and at once when an arm faults), and takes the decisions
// of DESIGN §4.7: hold, advance, promote, roll back, conclude. Every
// decision is recorded with its evidence and persisted before it acts.
//
// The controller reads time only from its clock, so the simulator runs the
// same code in virtual time (Tick after each event).
type Controller struct {
	// following is the spec of the routing experiment of another node
	// that this node follows (FollowRouting), nil when none; under mu.
	following *FollowSpec
	cfg       Config
	host      Host
	router    *Router
	clk       clock.Clock
	log       zerolog.Logger
	workers   func() []string
	device    func(id string) string
	replay    func(arms [2]*policy.Arm) (Replay, error)
	store     *fileStore

	wake    chan struct{}
	faulted atomic.Bool

	liveMu    sync.Mutex
	runningAt map[string]time.Time // job → when its models were resident (Follow)

	mu   sync.Mutex
	rng  *rand.Rand
	recs []*Record
	run  *active
	last *active // the last experiment that ran, for the metrics
}

// active is the running experiment's state.
type active struct {
	rec      *Record
	kind     abi.Kind
	arms     [2]*policy.Arm
	faults0  [2]int64
	r        *routing
	step     [2]*armAcc    // this step's observations
	total    [2]*armAcc    // the whole experiment's, for the metrics
	tier     [2]tierCounts // this step's, written by the router
	tierDone [2]tierCounts // the steps before
	// series and tests are the gating metrics' paired windows and their
	// always-valid tests, over the whole experiment (every step with a
	// baseline adds to them): see windowed.go and RATIONALE.md.
	series   [nGating]*pairedSeries
	tests    [nGating]*autoSeq
	rank     *Comparison  // the last rank test, reused while the counts stay
	replay   *replayState // an eviction experiment's cache replay or a balancing one's placement replay, if any
	alpha    float64      // per gating test
	nextLook time.Time
	rng      *rand.Rand
}

// New returns a controller and loads the record from DataDir. Experiments
// that were running when kiln stopped are resumed by Resume.
func New(opts Options) (*Controller, error) {
	cfg := opts.Config.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real()
	}
	if opts.Router == nil {
		return nil, errors.New("experiments: no router")
	}
	rng := opts.Rand
	if rng == nil {
		rng = rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x5eed))
	}
	c := &Controller{cfg: cfg, host: opts.Host, router: opts.Router, clk: opts.Clock, log: opts.Log,
		workers: opts.Workers, device: opts.WorkerDevice, replay: opts.Replay, rng: rng, wake: make(chan struct{}, 1), runningAt: map[string]time.Time{}}
	if c.workers == nil {
		c.workers = func() []string { return nil }
	}
	if opts.DataDir != "" {
		c.store = &fileStore{path: filepath.Join(opts.DataDir, File)}
		recs, err := c.store.load()
		if err != nil {
			return nil, err
		}
		for i := range recs {
			c.recs = append(c.recs, &recs[i])
		}
	}
	return c, nil
}

// Config is the controller's config, defaults filled.
func (c *Controller) Config() Config { return c.cfg }

// List returns every recorded experiment, newest first.
func (c *Controller) List() []Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Record, 0, len(c.recs))
	for i := len(c.recs) - 1; i >= 0; i-- {
		out = append(out, c.recs[i].clone())
	}
	return out
}

// Get returns one experiment's record.
func (c *Controller) Get(id string) (Record, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.recs {
		if r.ID == id {
			return r.clone(), nil
		}
	}
	return Record{}, fmt.Errorf("%w: %s", ErrNotFound, id)
}

// Running returns the running experiment's record, if any.
func (c *Controller) Running() (Record, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.run == nil {
		return Record{}, false
	}
	return c.run.rec.clone(), true
}

// Start validates spec, pins both arms and starts the experiment.
func (c *Controller) Start(ctx context.Context, spec Spec) (Record, error) {
	spec = spec.withDefaults(c.cfg)
	workers := c.workers()
	if spec.Unit == "" {
		// A balancer needs a choice of workers, which a small worker group
		// does not give it; scheduling and batching are cleanest split by
		// workers, which gives each arm its own queue discipline.
		spec.Unit = Traffic
		switch {
		case spec.Kind == "routing":
			// Each job is routed by its arm (route.go).
		case spec.Kind == "eviction":
			// Only by asking: a split by devices compares the devices'
			// VRAM alone, the host tiers being shared (Spec.Unit).
		case spec.Kind == "balancing":
			// Split by whole devices where each arm then still has two
			// devices to choose between at 50%: a balancer's harm travels
			// through the device it crowds, which a traffic split shares
			// between the arms (test-busiest: +312% alone, promoted by
			// traffic-split canaries).
			if len(c.deviceGroups(workers)) >= 4 {
				spec.Unit = Workers
			}
		case len(workers) >= 2:
			spec.Unit = Workers
		}
	}
	if err := spec.Validate(); err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if spec.Unit == Workers && len(workers) < 2 {
		return Record{}, fmt.Errorf("%w: unit workers needs at least two workers (this node has %d); use unit traffic", ErrInvalid, len(workers))
	}
	if spec.kind() == abi.KindEviction && spec.Unit == Workers {
		// Two workers of one device share its VRAM: splitting them would
		// let one arm's evictor drop the other arm's models.
		switch n := len(c.deviceGroups(workers)); {
		case c.device == nil:
			return Record{}, fmt.Errorf("%w: an eviction experiment by workers splits whole devices, and this node does not say which device each worker runs on; use a switchback", ErrInvalid)
		case n < 2:
			return Record{}, fmt.Errorf("%w: an eviction experiment by workers splits whole devices, and this node has %d; use a switchback", ErrInvalid, n)
		}
	}
	if c.host == nil {
		return Record{}, errors.New("experiments: no policy host")
	}
	k := spec.kind()
	cand, base, err := c.pin(ctx, k, spec.Policy, spec.Baseline, spec.Params)
	if err != nil {
		return Record{}, err
	}
	replay := c.startReplay(k, [2]*policy.Arm{base, cand})
	started := false
	defer func() {
		if !started && replay != nil {
			replay.Close()
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.run != nil {
		return Record{}, fmt.Errorf("%w: %s", ErrBusy, c.run.rec.ID)
	}
	if r := c.router.cur.Load(); r != nil && r.follows != "" {
		return Record{}, fmt.Errorf("%w: %w (%s): start experiments there, or after it ends", ErrBusy, ErrFollowing, r.follows)
	}
	now := c.clk.Now()
	if spec.Seed == 0 {
		spec.Seed = c.rng.Uint64() | 1
	}
	rec := &Record{ID: fmt.Sprintf("exp-%08x", c.rng.Uint32()), Spec: spec, State: Running,
		Baseline: base.Ref(), Candidate: cand.Ref(), StartedAt: now}
	a := &active{rec: rec, kind: k, arms: [2]*policy.Arm{base, cand},
		rng: rand.New(rand.NewPCG(spec.Seed, 7))}
	a.faults0 = [2]int64{base.Faults(), cand.Faults()}
	a.alpha = gatingAlpha(spec, replay != nil)
	c.newTests(a)
	c.attachReplay(a, replay, now)
	c.startStep(a, now, 0, workers)
	what := fmt.Sprintf("%s of %s %s against %s (%s)", spec.Type, spec.Kind, rec.Candidate, rec.Baseline, spec.Unit)
	if len(spec.Params) > 0 {
		what += fmt.Sprintf(" with params %v", cand.Params())
	}
	c.decide(a, now, "start", what, nil)
	c.recs = append(c.recs, rec)
	c.trim()
	c.run = a
	if err := c.persist(); err != nil {
		c.run = nil
		c.router.set(nil)
		c.recs = c.recs[:len(c.recs)-1]
		return Record{}, err
	}
	started = true
	c.log.Info().Str("experiment", rec.ID).Str("type", string(spec.Type)).Str("candidate", rec.Candidate).
		Str("baseline", rec.Baseline).Msg("experiment started")
	return rec.clone(), nil
}

// pin resolves both arms; the baseline defaults to the active policy.
func (c *Controller) pin(ctx context.Context, k abi.Kind, candRef, baseRef string, params map[string]float64) (cand, base *policy.Arm, err error) {
	name, num, err := policy.ParseRef(candRef)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if cand, err = c.host.ArmWithParams(ctx, k, name, num, params); err != nil {
		return nil, nil, fmt.Errorf("%w: candidate: %w", ErrInvalid, err)
	}
	if baseRef == "" {
		base, err = c.host.ActiveArm(k)
	} else if name, num, err = policy.ParseRef(baseRef); err == nil {
		base, err = c.host.Arm(ctx, k, name, num)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: baseline: %w", ErrInvalid, err)
	}
	return cand, base, nil
}

// deviceGroups groups workers by the device they run on, in sorted order
// (each worker alone without Options.WorkerDevice).
func (c *Controller) deviceGroups(workers []string) [][]string {
	byDev := map[string][]string{}
	for _, w := range workers {
		d := w
		if c.device != nil {
			d = "dev:" + c.device(w)
		}
		byDev[d] = append(byDev[d], w)
	}
	out := make([][]string, 0, len(byDev))
	for _, d := range slices.Sorted(maps.Keys(byDev)) {
		g := byDev[d]
		slices.Sort(g)
		out = append(out, g)
	}
	return out
}

// gatingAlpha splits the experiment's alpha between its gating tests
// (Bonferroni over the four metrics, and the cache replay's when it has
// one), so that the chance of a false rollback over the whole experiment
// stays under alpha. Each test runs over the whole experiment, every step
// adding to it, and spends its share over a plan of looks, so neither the
// looks nor the steps need a share of their own.
func gatingAlpha(s Spec, replay bool) float64 {
	n := nGating
	if replay {
		n++
	}
	return (1 - s.Confidence) / float64(n)
}

// sharePct is the candidate's share at step i, in percent.
func sharePct(s Spec, i int) int {
	switch s.Type {
	case Canary:
		return s.Steps[min(i, len(s.Steps)-1)]
	case AB:
		return s.Share
	}
	return 50
}

// startStep installs step i's split and fresh accumulators.
func (c *Controller) startStep(a *active, now time.Time, i int, workers []string) {
	rec, spec := a.rec, a.rec.Spec
	rec.Step, rec.StepStartedAt = i, now
	pct := sharePct(spec, i)
	r := &routing{kind: a.kind, typ: spec.Type, unit: spec.Unit, seed: spec.Seed, arms: a.arms,
		exp: rec.ID, step: i, start: now, now: c.clk.Now, onFault: c.onFault, placed: map[string]placement{},
		assign: map[string]int8{}, byClass: map[job.Class]*classWork{}, byModels: map[string]*[3]float64{}}
	as := Assignment{Unit: spec.Unit, Seed: spec.Seed}
	switch spec.Unit {
	case Workers:
		n := len(workers)
		r.group = splitDevices(c.deviceGroups(workers), groupSize(n, pct), spec.Seed)
		var k, m int
		for _, g := range r.group {
			switch g {
			case Candidate:
				k++
			case Baseline:
				m++
			}
		}
		r.shares = [3]float64{float64(m) / float64(n), float64(k) / float64(n), float64(n-k-m) / float64(n)}
		for _, w := range slices.Sorted(slices.Values(workers)) {
			switch r.group[w] {
			case Candidate:
				as.CandidateWorkers = append(as.CandidateWorkers, w)
			case Baseline:
				as.BaselineWorkers = append(as.BaselineWorkers, w)
			}
		}
	case Traffic:
		r.shares = armShares(float64(pct) / 100)
	case Windows:
		r.shares = [3]float64{0.5, 0.5, 0}
		r.start = rec.StartedAt
		r.window, r.burnIn = time.Duration(spec.Window), time.Duration(spec.BurnIn)
		r.windows = switchbackWindows(spec.Seed, 64)
		as.Windows = r.windows
	}
	r.share = r.shares[Candidate]
	as.JobShare, as.BaselineShare = r.shares[Candidate], r.shares[Baseline]
	rec.Assignment = as
	for arm := range 2 {
		r.faultsSeen[arm].Store(a.arms[arm].Faults())
		a.step[arm] = newArmAcc()
		if a.total[arm] == nil {
			a.total[arm] = newArmAcc()
		}
	}
	if a.r != nil {
		// The old routing may still be writing (a placement in flight);
		// take its counts under its lock.
		a.r.mu.Lock()
		for arm := range 2 {
			a.tierDone[arm].hits += a.tier[arm].hits
			a.tierDone[arm].misses += a.tier[arm].misses
			a.tierDone[arm].bytes += a.tier[arm].bytes
		}
		a.tier = [2]tierCounts{}
		a.r.tierAcc = nil
		a.r.mu.Unlock()
	}
	r.tierAcc = &a.tier
	if a.replay != nil {
		r.placeRep, _ = a.replay.r.(*placementReplay)
	}
	a.rank = nil
	a.r = r
	a.nextLook = now.Add(c.cfg.Interval)
	c.router.set(r)
}

// onFault is the router's signal that an arm's version faulted. It must
// not block: it runs on the dispatcher's decision path.
func (c *Controller) onFault(int) {
	c.faulted.Store(true)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Observe counts a finished job for its arm. It does nothing when no
// experiment runs.
func (c *Controller) Observe(o Observation) {
	if !c.router.Active() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.run
	if a == nil {
		return
	}
	p, ok := a.r.attribute(o.JobID, o.Worker)
	if !ok {
		if p.discard {
			a.step[p.arm].discarded++
		}
		return
	}
	c.observeLocked(a, p, o)
}

// observeLocked counts o for placement p's arm, with c.mu held.
func (c *Controller) observeLocked(a *active, p placement, o Observation) {
	win := -1
	if a.r.typ == Switchback {
		win = p.window
	}
	a.step[p.arm].add(o, win)
	a.total[p.arm].add(o, win)
	if a.r.typ != Switchback && sharePct(a.rec.Spec, a.rec.Step) >= 100 {
		return // no baseline to pair with: the step is gated by guards
	}
	// The window: the minute the job finished in, or a switchback's
	// window pair (its arm is the window's in which it was placed).
	w := a.series[mLatency].index(c.clk.Now())
	if a.r.typ == Switchback {
		w = p.window / 2
	}
	if !o.Failed {
		a.series[mLatency].add(p.arm, w, o.Latency.Seconds())
	}
	a.series[mError].add(p.arm, w, indicator(o.Failed))
	if o.HasDeadline {
		a.series[mMiss].add(p.arm, w, indicator(o.MissedDeadline))
	}
	if o.Interactive && !o.Failed {
		a.series[mInteractive].add(p.arm, w, o.Latency.Seconds())
	}
}

func indicator(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Wake is signalled when an arm faults, so that a loop waiting for the
// next look can look at once.
func (c *Controller) Wake() <-chan struct{} { return c.wake }

// Tick looks at the running experiment when its next look is due or an
// arm has faulted since the last one. The live loop (Run) and the
// simulator call it; it returns the time of the next look (zero when no
// experiment runs).
func (c *Controller) Tick() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.run
	if a == nil {
		c.faulted.Store(false)
		return time.Time{}
	}
	now := c.clk.Now()
	if !c.faulted.Swap(false) && now.Before(a.nextLook) {
		return a.nextLook
	}
	a.nextLook = now.Add(c.cfg.Interval)
	c.evaluate(a, now)
	if c.run == nil {
		return time.Time{}
	}
	return a.nextLook
}

// Run looks at the running experiment every Config.Interval, and at once
// on a fault, until ctx ends. It first resumes what was running when kiln
// last stopped.
func (c *Controller) Run(ctx context.Context) {
	c.Resume(ctx)
	for {
		c.Tick()
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		case <-c.clk.After(c.cfg.Interval):
		}
	}
}

// Abort stops a running experiment; the baseline serves every decision
// again and nothing is promoted.
func (c *Controller) Abort(id, reason string) (Record, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var rec *Record
	for _, r := range c.recs {
		if r.ID == id {
			rec = r
		}
	}
	if rec == nil {
		return Record{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if c.run == nil || c.run.rec != rec {
		return Record{}, fmt.Errorf("%w: %s is %s", ErrNotRunning, id, rec.State)
	}
	if reason == "" {
		reason = "aborted by an operator"
	}
	now := c.clk.Now()
	rep := c.look(c.run, now)
	c.end(c.run, now, Aborted, "aborted", reason, evidenceOf(rep))
	return rec.clone(), nil
}

// decide appends a decision; consecutive holds with the same reason are
// coalesced into one.
func (c *Controller) decide(a *active, now time.Time, action, reason string, ev *Evidence) {
	rec := a.rec
	d := Decision{Time: now, AtS: now.Sub(rec.StartedAt).Seconds(), Step: rec.Step, Share: sharePct(rec.Spec, rec.Step),
		Action: action, Reason: reason, Evidence: ev, Looks: 1}
	if n := len(rec.Decisions); action == "hold" && n > 0 {
		last := &rec.Decisions[n-1]
		if last.Action == "hold" && last.Reason == reason && last.Step == d.Step {
			d.Looks = last.Looks + 1
			*last = d
			return
		}
	}
	if len(rec.Decisions) >= 1000 {
		// Keep the start and the most recent decisions.
		rec.Decisions = append(rec.Decisions[:1], rec.Decisions[len(rec.Decisions)-900:]...)
	}
	rec.Decisions = append(rec.Decisions, d)
	lg := c.log.Info()
	if action == "hold" {
		lg = c.log.Debug()
	}
	lg.Str("experiment", rec.ID).Str("action", action).Int("step", rec.Step).Str("reason", reason).Msg("experiment decision")
}

// end finishes the running experiment: the router goes back to the active
// policies, a promotion activates the candidate, and the record is saved.
func (c *Controller) end(a *active, now time.Time, st State, verdict, reason string, ev *Evidence) {
	rec := a.rec
	c.router.set(nil)
	c.run = nil
	c.last = a
	if a.replay != nil {
		if err := a.replay.r.Close(); err != nil {
			c.log.Warn().Err(err).Str("experiment", rec.ID).Msg("close the cache replay")
		}
	}
	action := map[State]string{Promoted: "promote", RolledBack: "rollback", Completed: "conclude", Inconclusive: "conclude", Aborted: "abort"}[st]
	if st == Promoted {
		why := fmt.Sprintf("experiment %s promoted the candidate", rec.ID)
		if _, err := c.host.Activate(context.Background(), a.kind, a.arms[Candidate].Name(), a.arms[Candidate].Number(), why); err != nil {
			st, verdict, action = RolledBack, "rolled_back", "rollback"
			reason = fmt.Sprintf("promotion failed, the baseline keeps serving: %v", err)
		} else {
			// A tuned candidate's values go with it (sorted: the order of
			// the log and of a failure must not depend on map order).
			for _, name := range slices.Sorted(maps.Keys(rec.Spec.Params)) {
				if err := c.host.SetParam(a.kind, name, rec.Spec.Params[name]); err != nil {
					reason += fmt.Sprintf("; but param %s could not be set: %v", name, err)
				}
			}
		}
	}
	// Every verdict says what it could have seen: a promotion (or an A/B
	// test's "no difference") is "no regression larger than X".
	rec.Power = power(rec.Report)
	if st == Promoted || st == Completed || st == Inconclusive {
		if t := powerText(rec.Power, rec.Spec.Confidence); t != "" {
			reason += "; " + t
		}
	}
	c.decide(a, now, action, reason, ev)
	rec.State, rec.Verdict, rec.Reason, rec.EndedAt = st, verdict, reason, now
	if err := c.persist(); err != nil {
		c.log.Error().Err(err).Str("experiment", rec.ID).Msg("save experiment record")
	}
}

// persist saves every record; c.mu is held.
func (c *Controller) persist() error {
	if c.store == nil {
		return nil
	}
	recs := make([]Record, len(c.recs))
	for i, r := range c.recs {
		recs[i] = *r
	}
	return c.store.save(recs)
}

// trim forgets the oldest finished experiments beyond Config.History.
func (c *Controller) trim() {
	for len(c.recs) > c.cfg.History {
		i := slices.IndexFunc(c.recs, func(r *Record) bool { return r.State != Running })
		if i < 0 {
			return
		}
		c.recs = slices.Delete(c.recs, i, i+1)
	}
}

// Resume restarts what was running when kiln stopped. The samples were in
// memory and are gone, so the current step starts again with fresh ones;
// the progress deadline still counts from the original start, so restarts
// cannot keep a canary alive forever. An experiment whose arms cannot be
// pinned again (an uploaded candidate the policy host did not restore), or
// whose deadline has passed, is rolled back instead: the candidate was
// never the active policy unless it had been promoted, so rolling back
// needs no policy change and is always safe. Call it once the policy host
// is ready (Host.WaitReady).
func (c *Controller) Resume(ctx context.Context) {
	c.mu.Lock()
	var todo []*Record
	for _, r := range c.recs {
		if r.State == Running && (c.run == nil || c.run.rec != r) {
			todo = append(todo, r)
		}
	}
	c.mu.Unlock()
	for _, rec := range todo {
		k := rec.Spec.kind()
		cand, base, err := c.pin(ctx, k, rec.Candidate, rec.Baseline, rec.Spec.Params)
		var replay Replay
		if err == nil {
			replay = c.startReplay(k, [2]*policy.Arm{base, cand})
		}
		c.mu.Lock()
		now := c.clk.Now()
		a := &active{rec: rec, kind: k, arms: [2]*policy.Arm{base, cand}, alpha: gatingAlpha(rec.Spec, replay != nil),
			rng: rand.New(rand.NewPCG(rec.Spec.Seed, 7))}
		c.newTests(a)
		c.attachReplay(a, replay, now)
		workers := c.workers()
		switch {
		case err != nil:
			c.end(a, now, RolledBack, "rolled_back", fmt.Sprintf("kiln restarted and the arms could not be pinned again (%v); the baseline keeps serving", err), nil)
		case now.Sub(rec.StartedAt) >= time.Duration(rec.Spec.Deadline):
			c.end(a, now, Inconclusive, "inconclusive", "kiln restarted after the experiment's deadline; the baseline keeps serving", nil)
		case c.run != nil:
			c.end(a, now, RolledBack, "rolled_back", "kiln restarted while another experiment runs", nil)
		case rec.Spec.Unit == Workers && len(workers) < 2:
			c.end(a, now, RolledBack, "rolled_back", "kiln restarted with fewer than two workers; a worker-group split is impossible", nil)
		default:
			a.faults0 = [2]int64{base.Faults(), cand.Faults()}
			c.startStep(a, now, rec.Step, workers)
			c.run = a
			c.decide(a, now, "resume", "kiln restarted: the step starts again with fresh samples (the earlier ones were in memory); the deadline still counts from the start", nil)
			if err := c.persist(); err != nil {
				c.log.Error().Err(err).Msg("save experiment record")
			}
		}
		c.mu.Unlock()
	}
}

// tierNow reads this step's placement counts, which the router writes
// under its lock.
func (a *active) tierNow() [2]tierCounts {
	if a.r == nil {
		return a.tier
	}
	a.r.mu.Lock()
	defer a.r.mu.Unlock()
	return a.tier
}

// The gating metrics, in the order of active.series and active.tests.
// Interactive latency gates apart from the overall latency: a scheduler
// that starves the interactive class (batch-first, a FIFO against
// deadlines) can leave the mean of all jobs nearly unchanged.
const (
	mLatency = iota
	mError
	mMiss
	mInteractive
	nGating
)

// newTests makes the experiment's paired series and tests; after a
// restart they start again empty (the samples lived in memory), from now.
// Each test's look plan ends at the deadline: alpha is spent only on
// looks that can come.
func (c *Controller) newTests(a *active) {
	spec := a.rec.Spec
	now := c.clk.Now()
	origin, width, lag := now, c.cfg.PairWindow, time.Duration(0)
	if spec.Type == Switchback {
		// A pair of windows is the unit; its jobs finish after it ends,
		// so a pair closes one window late.
		origin, width, lag = a.rec.StartedAt, 2*time.Duration(spec.Window), time.Duration(spec.Window)
	}
	left := time.Duration(spec.Deadline) - now.Sub(a.rec.StartedAt) - lag
	if spec.Type == Switchback {
		left = time.Duration(spec.Deadline) - lag // pairs count from the start
	}
	horizon := int(max(left, 0) / width)
	// A canary acts on one side of each test: it rolls back when the
	// candidate is worse and promotes when a regression is ruled out, so
	// each is a one-sided test at alpha, a two-sided one at 2·alpha. A/B
	// tests and switchbacks conclude either way: two-sided at alpha.
	testAlpha := a.alpha
	if spec.Type == Canary {
		testAlpha = 2 * a.alpha
	}
	for m := range nGating {
		a.series[m] = newPairedSeries(origin, width, lag)
		// Latencies are compared as ratios (RATIONALE.md, "ratios"): a
		// burst multiplies both arms' waits, and a difference in seconds
		// then swings with the burst while a ratio does not.
		a.series[m].relative = m == mLatency || m == mInteractive
		a.tests[m] = newAutoSeq(testAlpha, horizon)
	}
}
