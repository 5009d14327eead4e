package experiment

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/stats"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// WatchConfig is the experiments.watch section: how a change made by hand
// (kiln policy activate, kiln policy set) is watched and rolled back when
// it hurts (RATIONALE.md, "Every change is watched").
type WatchConfig struct {
	// Enabled turns the watch on (the embedded default config does).
	Enabled bool `koanf:"enabled"`
	// Window is how long a change is watched, and how much of the time
	// before it is its baseline.
	Window time.Duration `koanf:"window"`
	// History is how long before a change the watcher looks back to learn
	// how much the metrics move between windows with nothing changed: a
	// regression must stand out from that too. A change made sooner after
	// a start has less history and needs a larger effect.
	History time.Duration `koanf:"history"`
	// MinEffect is the smallest regression of mean latency or mean load
	// time per job, as a fraction of the window before, that rolls back;
	// MinRateEffect the smallest rise of the error or deadline-miss rate.
	// The test asks whether the regression exceeds these, not zero, so
	// that drift smaller than them does not roll good changes back.
	MinEffect     float64 `koanf:"min_effect"`
	MinRateEffect float64 `koanf:"min_rate_effect"`
	// Confidence is 1 − alpha of the watch, shared by its four metrics.
	Confidence float64 `koanf:"confidence"`
	// MaxLoadChange is the largest rise of the arrival rate, after over
	// before, at which a regression is still blamed on the change; above
	// it the watch is inconclusive and the change stays.
	MaxLoadChange float64 `koanf:"max_load_change"`
}

// DefaultWatchConfig is the section's defaults, as configs/kiln.yaml has
// them.
func DefaultWatchConfig() WatchConfig {
	return WatchConfig{Enabled: true, Window: 15 * time.Minute, History: 2 * time.Hour, MinEffect: 0.2, MinRateEffect: 0.05,
		Confidence: 0.95, MaxLoadChange: 1.3}
}

// WithDefaults fills zero fields (but Enabled) from DefaultWatchConfig.
func (c WatchConfig) WithDefaults() WatchConfig {
	d := DefaultWatchConfig()
	if c.Window == 0 {
		c.Window = d.Window
	}
	if c.History == 0 {
		c.History = max(d.History, 8*c.Window)
	}
	if c.MinEffect == 0 {
		c.MinEffect = d.MinEffect
	}
	if c.MinRateEffect == 0 {
		c.MinRateEffect = d.MinRateEffect
	}
	if c.Confidence == 0 {
		c.Confidence = d.Confidence
	}
	if c.MaxLoadChange == 0 {
		c.MaxLoadChange = d.MaxLoadChange
	}
	return c
}

// Validate checks the section, defaults filled.
func (c WatchConfig) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.Window < time.Second {
		errs = append(errs, fmt.Errorf("experiments.watch.window %s: want at least 1s", c.Window))
	}
	if c.History < c.Window {
		errs = append(errs, fmt.Errorf("experiments.watch.history %s: want at least the window (%s)", c.History, c.Window))
	}
	if c.MinEffect < 0 || c.MinEffect > 10 || c.MinRateEffect < 0 || c.MinRateEffect > 1 {
		errs = append(errs, errors.New("experiments.watch.min_effect must be in [0, 10] and experiments.watch.min_rate_effect in [0, 1]"))
	}
	if !(c.Confidence > 0.5 && c.Confidence < 1) {
		errs = append(errs, fmt.Errorf("experiments.watch.confidence %v: want (0.5, 1)", c.Confidence))
	}
	if c.MaxLoadChange < 1 {
		errs = append(errs, fmt.Errorf("experiments.watch.max_load_change %v: want at least 1", c.MaxLoadChange))
	}
	return errors.Join(errs...)
}

// WatchedChange is a change the watcher is told about.
type WatchedChange struct {
	Kind string `json:"kind"`
	// Action is activate or set.
	Action string `json:"action"`
	From   string `json:"from"`
	To     string `json:"to"`
	Reason string `json:"reason,omitempty"`
	// Before and After are a set's parameter values.
	Before map[string]float64 `json:"before,omitempty"`
	After  map[string]float64 `json:"after,omitempty"`
	// FromArm is pinned to the version an activation moved away from,
	// when the caller has it (policy.ChangeEvent.FromArm): the balancing
	// replay asks it.
	FromArm *policy.Arm `json:"-"`
}

// Watch states.
const (
	WatchOpen       = "watching"
	WatchKept       = "kept"
	WatchRolledBack = "rolled_back"
	// WatchInconclusive: the data cannot tell (too few windows, or the
	// load rose too much to blame the change); the change stays.
	WatchInconclusive = "inconclusive"
	// WatchSuperseded: another change came before the window ended; it is
	// watched instead (against a window that includes this one).
	WatchSuperseded = "superseded"
)

// WatchComparison is one metric's before/after test.
type WatchComparison struct {
	Metric string `json:"metric"`
	// Before and After are the means over each window's sub-windows;
	// Windows the sub-windows with data, Jobs the jobs counted.
	Before  float64 `json:"before"`
	After   float64 `json:"after"`
	Windows [2]int  `json:"windows"`
	Jobs    [2]int  `json:"jobs"`
	// Effect is After − Before; Low the lower end of its one-sided
	// confidence interval; Threshold the practical threshold (MinEffect ×
	// Before, or MinRateEffect) that Low must exceed.
	Effect    float64 `json:"effect"`
	Low       float64 `json:"low"`
	Threshold float64 `json:"threshold"`
	Alpha     float64 `json:"alpha"`
	// Verdict is worse, no_regression or insufficient_data.
	Verdict string `json:"verdict"`
}

// Watch is one watched change and its outcome.
type Watch struct {
	ID       int           `json:"id"`
	Change   WatchedChange `json:"change"`
	OpenedAt time.Time     `json:"opened_at"`
	// EndsAt is when the watch is judged: the window's end and a grace
	// for the window's last jobs to finish (ended early when superseded).
	EndsAt time.Time `json:"ends_at"`
	State  string    `json:"state"`
	Reason string    `json:"reason,omitempty"`
	// ArrivalRatio is the arrival rate after over before.
	ArrivalRatio float64           `json:"arrival_ratio,omitempty"`
	Comparisons  []WatchComparison `json:"comparisons,omitempty"`
	// RolledBackBy names the metric that rolled the change back.
	RolledBackBy string `json:"rolled_back_by,omitempty"`
}

// WatchOptions are a Watcher's collaborators.
type WatchOptions struct {
	Config WatchConfig
	Clock  clock.Clock
	// Rollback undoes w.Change (the policy host's watch-rollback) with
	// w.Reason. It is called without the watcher's lock held.
	Rollback func(w Watch) error
	Log      zerolog.Logger
	// Replay, when set, gives the load time two warm ghost hierarchies
	// charge under the policies a change moved from and to (the node's
	// shadow, internal/shadow) for an eviction change, the price of both
	// policies' placements (Router.ReplayPlacements) for a balancing
	// change, or nil when it has none for them. Only those two kinds are
	// asked. It is called with the watcher's lock
	// held and must not block: the replay is first read at the next Tick.
	Replay func(c WatchedChange) Replay
	// Pending, when set, lists the jobs submitted and not finished yet
	// (queued or running). At judgement each counts, in the window it was
	// submitted in, with its age as its latency — a lower bound — so that
	// a change that stops jobs from finishing is seen, not left out as
	// "too few jobs". It is called without the watcher's lock held.
	Pending func() []PendingJob
}

// PendingJob is a job submitted and not finished when a watch is judged.
type PendingJob struct {
	Created time.Time
	// Deadline is the job's deadline after Created; 0 means none.
	Deadline time.Duration
}

// Watcher watches changes made by hand: every change opens a watch of
// Config.Window; at its end each gated metric's window after the change is
// compared with the window before it, and a significant regression larger
// than the practical threshold rolls the change back (Rollback).
//
// It reads time only from its clock and is driven by Observe, Changed and
// Tick, so the simulator replays it in virtual time as the node runs it
// live. One watch is open at a time: the metrics are the node's, so a
// second change (of any kind) confounds the first one's comparison, and
// the first is closed as superseded. It is safe for concurrent use.
type Watcher struct {
	cfg      WatchConfig
	clk      clock.Clock
	rollback func(Watch) error
	pending  func() []PendingJob
	replayOf func(WatchedChange) Replay
	log      zerolog.Logger
	sub      time.Duration

	mu     sync.Mutex
	obs    []watchObs // finish order
	open   *Watch
	done   []Watch
	nextID int
	rolled map[[2]string]int // kind, metric → rollbacks
	// replay and samples are the open watch's replay of the old and the
	// new eviction or balancing policy, read at Ticks (watchReplay).
	replay  Replay
	samples []replaySample
}

// replaySample is the replay's cumulative load times at a moment:
// [0] under the policy the change moved from, [1] the one it moved to.
type replaySample struct {
	at    time.Time
	loads [2]float64
}

// maxWatches bounds the finished watches kept.
const maxWatches = 100

type watchObs struct {
	at, created time.Time
	failed      bool
	hasDeadline bool
	missed      bool
	latency     float64
	load        float64
}

// NewWatcher returns a watcher; a disabled config gives one that ignores
// every change.
func NewWatcher(opts WatchOptions) (*Watcher, error) {
	cfg := opts.Config.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real()
	}
	return &Watcher{cfg: cfg, clk: opts.Clock, rollback: opts.Rollback, pending: opts.Pending, replayOf: opts.Replay, log: opts.Log, sub: watchSubWindow(cfg.Window),
		rolled: map[[2]string]int{}}, nil
}

// watchGrace is how long after the window's end the watch waits before it
// judges: jobs belong to the window they were submitted in, and the last
// ones submitted need time to finish. Those still unfinished then count
// with their age so far (WatchOptions.Pending): a lower bound of their
// latency, which can hide part of a regression but never invent one.
func watchGrace(window time.Duration) time.Duration { return window / 4 }

// watchSubWindow is the width of the sub-windows whose means are the
// test's observations: a sixtieth of the window (15 s of the default
// 15 min), at most a minute (the controller's paired window) and at least
// half a second (a test's 20 s window has 40). Finer sub-windows add little information on a persistent
// series (its effective length is about the window over twice the
// queue's memory) but let the lag-1 correlation be estimated from more
// terms, which tightens its upper bound.
func watchSubWindow(w time.Duration) time.Duration {
	return min(max(w/60, 500*time.Millisecond), time.Minute)
}

// Config is the watcher's config, defaults filled.
func (w *Watcher) Config() WatchConfig { return w.cfg }

// JudgeAfter is how long after a change its watch is judged: the window
// and the grace for its last jobs.
func (w *Watcher) JudgeAfter() time.Duration { return w.cfg.Window + watchGrace(w.cfg.Window) }

// Observe counts one finished job at the clock's now.
func (w *Watcher) Observe(o Observation) {
	if !w.cfg.Enabled {
		return
	}
	now := w.clk.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.obs = append(w.obs, watchObs{at: now, created: now.Add(-o.Latency), failed: o.Failed, hasDeadline: o.HasDeadline,
		missed: o.MissedDeadline, latency: o.Latency.Seconds(), load: o.Load.Seconds()})
	w.prune(now)
}

// prune forgets observations no watch can need: older than the history
// before the open watch's change, or than the history before now.
func (w *Watcher) prune(now time.Time) {
	keep := now.Add(-w.cfg.History)
	if w.open != nil {
		keep = w.open.OpenedAt.Add(-w.cfg.History)
	}
	i, _ := slices.BinarySearchFunc(w.obs, keep, func(o watchObs, t time.Time) int { return o.at.Compare(t) })
	if i > len(w.obs)/2 || i > 4096 {
		w.obs = slices.Delete(w.obs, 0, i)
	}
}

// Changed opens a watch of c at the clock's now. A watch still open is
// closed as superseded.
func (w *Watcher) Changed(c WatchedChange) {
	if !w.cfg.Enabled {
		return
	}
	now := w.clk.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.supersede(now, fmt.Sprintf("%s %s → %s (%s) came before the window ended", c.Kind, c.From, c.To, c.Action))
	w.nextID++
	w.open = &Watch{ID: w.nextID, Change: c, OpenedAt: now, EndsAt: now.Add(w.JudgeAfter()), State: WatchOpen}
	if w.replayOf != nil && (c.Kind == abi.KindEviction.String() || c.Kind == abi.KindBalancing.String()) && c.Action == "activate" && c.From != c.To {
		w.replay = w.replayOf(c)
	}
	w.log.Info().Int("watch", w.open.ID).Str("kind", c.Kind).Str("from", c.From).Str("to", c.To).Str("action", c.Action).
		Dur("window", w.cfg.Window).Msg("policy change watched")
}

// Ended closes the open watch, if any, as superseded: something other than
// a watched change (a rollback by hand, a fault's auto-rollback) changed a
// policy, so the comparison no longer isolates the watched change.
func (w *Watcher) Ended(why string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.supersede(w.clk.Now(), why)
}

func (w *Watcher) supersede(now time.Time, why string) {
	if w.open == nil {
		return
	}
	o := *w.open
	o.State, o.Reason, o.EndsAt = WatchSuperseded, why, now
	w.finish(o)
}

func (w *Watcher) finish(o Watch) {
	w.open = nil
	w.endReplay()
	w.done = append(w.done, o)
	if len(w.done) > maxWatches {
		w.done = slices.Delete(w.done, 0, len(w.done)-maxWatches)
	}
}

// Tick judges the open watch once its window has ended, and rolls the
// change back (outside the lock) when it hurt.
func (w *Watcher) Tick() {
	if !w.cfg.Enabled {
		return
	}
	now := w.clk.Now()
	w.mu.Lock()
	w.sampleReplay(now)
	o := w.open
	if o == nil || now.Before(o.EndsAt) {
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	var pending []PendingJob
	if w.pending != nil {
		pending = w.pending()
	}
	w.mu.Lock()
	if o = w.open; o == nil {
		w.mu.Unlock()
		return
	}
	j := w.judge(*o, w.withPending(now, pending))
	if j.State != WatchRolledBack || w.rollback == nil {
		w.finish(j)
		w.mu.Unlock()
		w.logOutcome(j)
		return
	}
	// The watch stays open while Rollback runs (the lock is not held: the
	// host tells its subscribers about the watch-rollback, and the node
	// ignores that action rather than watching it).
	w.mu.Unlock()
	err := w.rollback(j)
	w.mu.Lock()
	if err != nil {
		j.State, j.Reason = WatchKept, fmt.Sprintf("%s; but the rollback failed: %v", j.Reason, err)
		j.RolledBackBy = ""
	} else {
		w.rolled[[2]string{j.Change.Kind, j.RolledBackBy}]++
	}
	if w.open != nil && w.open.ID == j.ID {
		w.finish(j)
	} else if i := slices.IndexFunc(w.done, func(d Watch) bool { return d.ID == j.ID }); i >= 0 {
		w.done[i] = j // superseded while rolling back: the outcome is the rollback's
	}
	w.mu.Unlock()
	w.logOutcome(j)
}

func (w *Watcher) logOutcome(j Watch) {
	ev := w.log.Info()
	if j.State == WatchRolledBack {
		ev = w.log.Warn()
	}
	ev.Int("watch", j.ID).Str("kind", j.Change.Kind).Str("to", j.Change.To).Str("state", j.State).Str("reason", j.Reason).Msg("policy watch ended")
}

// Watches returns the open watch (if any) and the finished ones, newest
// first.
func (w *Watcher) Watches() []Watch {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []Watch
	if w.open != nil {
		out = append(out, *w.open)
	}
	for i := len(w.done) - 1; i >= 0; i-- {
		out = append(out, w.done[i])
	}
	return out
}

// watchMetric is one gated metric of the watch.
type watchMetric struct {
	name     string
	relative bool // threshold is MinEffect × before (else MinRateEffect)
	rate     bool // 0/1 observations: binomial floor on the variance
	value    func(o watchObs) (float64, bool)
}

var watchMetrics = []watchMetric{
	{name: "latency_s", relative: true, value: func(o watchObs) (float64, bool) { return o.latency, !o.failed }},
	{name: "error_rate", rate: true, value: func(o watchObs) (float64, bool) { return b2f(o.failed), true }},
	{name: "deadline_miss_rate", rate: true, value: func(o watchObs) (float64, bool) { return b2f(o.missed), o.hasDeadline }},
	{name: "load_s", relative: true, value: func(o watchObs) (float64, bool) { return o.load, !o.failed }},
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// minWatchWindows is the fewest sub-windows with data per side, and
// minWatchEffective the fewest effective (independent-equivalent) ones,
// before a metric is judged.
const (
	minWatchWindows   = 20
	minWatchEffective = 3
)

// withPending returns the observations with the unfinished jobs added as
// censored ones: latency their age at now, a missed deadline if it has
// passed, no load time (unknown), not failed.
func (w *Watcher) withPending(now time.Time, pending []PendingJob) []watchObs {
	if len(pending) == 0 {
		return w.obs
	}
	obs := make([]watchObs, len(w.obs), len(w.obs)+len(pending))
	copy(obs, w.obs)
	for _, p := range pending {
		age := now.Sub(p.Created)
		if age < 0 {
			continue
		}
		obs = append(obs, watchObs{at: now, created: p.Created, latency: age.Seconds(), load: math.NaN(),
			hasDeadline: p.Deadline > 0, missed: p.Deadline > 0 && age > p.Deadline})
	}
	return obs
}

// judge compares the window after o's change with the one before it, over
// obs (the finished jobs, and the unfinished ones censored).
func (w *Watcher) judge(o Watch, obs []watchObs) Watch {
	start, end := o.OpenedAt.Add(-w.cfg.Window), o.OpenedAt.Add(w.cfg.Window)
	alpha := (1 - w.cfg.Confidence) / float64(len(watchMetrics))
	var arrivals [2]int
	for _, ob := range obs {
		if ob.created.Before(start) || !ob.created.Before(end) {
			continue
		}
		arrivals[b2i(!ob.created.Before(o.OpenedAt))]++
	}
	if arrivals[0] > 0 {
		o.ArrivalRatio = float64(arrivals[1]) / float64(arrivals[0])
	}
	var worse []WatchComparison
	judged := 0
	cmps := make([]WatchComparison, 0, len(watchMetrics)+1)
	if w.replay != nil {
		// One more test shares the alpha.
		alpha = (1 - w.cfg.Confidence) / float64(len(watchMetrics)+1)
		cmps = append(cmps, w.compareReplay(o.OpenedAt, alpha))
	}
	for _, m := range watchMetrics {
		cmps = append(cmps, w.compare(m, o.OpenedAt, alpha, obs))
	}
	for _, c := range cmps {
		o.Comparisons = append(o.Comparisons, c)
		switch c.Verdict {
		case "worse":
			worse = append(worse, c)
			judged++
		case "no_regression":
			judged++
		}
	}
	// Latency follows the arrival rate far more than the other metrics
	// (a queue's wait grows without bound as the load nears capacity), and
	// so do deadline misses, which are that wait crossing a deadline, so a
	// rise in load leaves their regressions unexplained (re-activating the
	// active policy at 0.9 of capacity rolled back 3 of 40 watches on
	// deadline misses, arrivals ×1.3–×3.5). Errors and load time are held
	// to the variation the history showed, and the replay compares two
	// policies on the same accesses, which a load change cannot explain.
	loadRose := arrivals[0] == 0 || o.ArrivalRatio > w.cfg.MaxLoadChange
	var blamed []WatchComparison
	for _, c := range worse {
		if !(loadRose && (c.Metric == "latency_s" || c.Metric == "deadline_miss_rate")) {
			blamed = append(blamed, c)
		}
	}
	switch {
	case len(blamed) > 0:
		worse = blamed
		o.State, o.RolledBackBy = WatchRolledBack, worse[0].Metric
		o.Reason = fmt.Sprintf("watch: %s in the %s after %s %s → %s against the %s before", watchText(worse[0]),
			w.cfg.Window, o.Change.Action, o.Change.From, o.Change.To, w.cfg.Window)
	case len(worse) > 0:
		o.State = WatchInconclusive
		o.Reason = fmt.Sprintf("%s, but the arrival rate rose ×%.2f (more than ×%.2f): the change is not to blame alone, so it stays",
			watchText(worse[0]), o.ArrivalRatio, w.cfg.MaxLoadChange)
	case judged == 0:
		o.State, o.Reason = WatchInconclusive, "too few jobs in the windows to judge; the change stays"
	default:
		o.State = WatchKept
		var parts []string
		for _, c := range o.Comparisons {
			if c.Verdict == "no_regression" {
				parts = append(parts, fmt.Sprintf("%s %+.3g", c.Metric, c.Effect))
			}
		}
		o.Reason = "no regression beyond the thresholds: " + strings.Join(parts, ", ")
	}
	return o
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// watchText says what regressed, e.g. "latency_s +2.1 (+43%), lower bound
// +1.2 > threshold 0.9 (alpha 0.0125)".
func watchText(c WatchComparison) string {
	rel := ""
	if c.Before > 0 {
		rel = fmt.Sprintf(" (%+.0f%%)", 100*c.Effect/c.Before)
	}
	return fmt.Sprintf("%s %.3g → %.3g, %+.3g%s, lower bound %+.3g > threshold %.3g (alpha %.3g)",
		c.Metric, c.Before, c.After, c.Effect, rel, c.Low, c.Threshold, c.Alpha)
}

// compare runs metric m's one-sided test: the difference of the means of
// the sub-window means after and before the change, with each side's
// long-run (Newey–West, AR(1)-bounded) variance, must exceed the practical
// threshold at level alpha: H0 is "the change made m worse by at most the
// threshold", so drift smaller than that rolls back at most alpha of the
// time.
func (w *Watcher) compare(m watchMetric, at time.Time, alpha float64, obs []watchObs) WatchComparison {
	c := WatchComparison{Metric: m.name, Alpha: alpha, Verdict: "insufficient_data"}
	// Per sub-window of submission time, from the history's start
	// (aligned on the change) to the window's end: the sum and count of
	// the metric over the jobs submitted then that have finished.
	n := int(w.cfg.Window / w.sub)
	hist := int(w.cfg.History / w.sub)
	if len(w.obs) > 0 {
		hist = min(hist, int(math.Ceil(float64(at.Sub(w.obs[0].at))/float64(w.sub))))
	}
	hist = max(hist, n)
	from := at.Add(-time.Duration(hist) * w.sub)
	sums, cnts := make([]float64, hist+n), make([]float64, hist+n)
	var tot [2]float64
	for _, ob := range obs {
		if ob.created.Before(from) || !ob.created.Before(at.Add(w.cfg.Window)) {
			continue
		}
		x, ok := m.value(ob)
		if !ok || math.IsNaN(x) || math.IsInf(x, 0) {
			continue
		}
		i := min(int(ob.created.Sub(from)/w.sub), hist+n-1)
		sums[i] += x
		cnts[i]++
		if i >= hist-n {
			side := b2i(i >= hist)
			c.Jobs[side]++
			tot[side] += x
		}
	}
	sub := make([]float64, hist+n)
	for i := range sub {
		sub[i] = math.NaN()
		if cnts[i] > 0 {
			sub[i] = sums[i] / cnts[i]
		}
	}
	var means [2][]float64
	for side := range 2 {
		means[side] = present(sub[hist-n+side*n : hist+side*n])
		c.Windows[side] = len(means[side])
	}
	if c.Windows[0] == 0 || c.Windows[1] == 0 {
		return c
	}
	// A window's value is the mean over its jobs (a lull's few jobs weigh
	// what they are); the sub-window means serve the variance only.
	c.Before, c.After = tot[0]/float64(c.Jobs[0]), tot[1]/float64(c.Jobs[1])
	c.Effect = c.After - c.Before
	c.Threshold = w.cfg.MinRateEffect
	if m.relative {
		c.Threshold = w.cfg.MinEffect * c.Before
	}
	if c.Windows[0] < minWatchWindows || c.Windows[1] < minWatchWindows {
		return c
	}
	// Under H0 (the change changed nothing) the window after is another
	// draw of the process of the window before, so the variance of the
	// difference is twice that of the before-window's mean. The after
	// window's own spread is not used: a change that hurts often makes a
	// backlog grow through the window, and that trend's variance would
	// hide the very effect it is.
	v0, df, ok := meanVarianceOf(sums[hist-n:hist], cnts[hist-n:hist])
	if !ok {
		return c
	}
	v := 2 * v0
	// Traffic moves a node's metrics between windows by more than a
	// window's own spread shows (a burst's backlog, a new favourite
	// model): how much they moved between consecutive windows before the
	// change, with nothing changed, is the null the difference is held
	// to when it is larger (RATIONALE.md).
	if vh, dfh, ok := historyVariance(sums[:hist], cnts[:hist], n); ok && vh > v {
		v, df = vh, max(df, dfh)
	}
	if m.rate {
		// Rates of few jobs: the binomial variance of the counts is the
		// least the difference can vary ("no errors before or after"
		// still bounds it).
		p := (tot[0] + tot[1] + 0.5) / float64(c.Jobs[0]+c.Jobs[1]+1)
		v = max(v, p*(1-p)*(1/float64(max(c.Jobs[0], 1))+1/float64(max(c.Jobs[1], 1))))
	}
	if !(v > 0) {
		return c
	}
	c.Low = c.Effect - stats.StudentTQuantile(1-alpha, df)*math.Sqrt(v)
	c.Verdict = "no_regression"
	if c.Low > c.Threshold && c.Effect > 0 {
		c.Verdict = "worse"
	}
	return c
}

// present returns xs without its NaNs.
func present(xs []float64) []float64 {
	var out []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			out = append(out, x)
		}
	}
	return out
}

// historyVariance is the typical square of the difference between the means
// of consecutive windows of n sub-windows, sliding by one sub-window over
// the history (per sub-window: the sum and count of the metric), and its
// degrees of freedom: the number of non-overlapping differences the
// history holds (its length over a window, less one). ok is false with
// less than two windows of history.
func historyVariance(sums, cnts []float64, n int) (v, df float64, ok bool) {
	window := func(from, to int) (float64, bool) {
		var s, c float64
		subs := 0
		for i := from; i < to; i++ {
			s += sums[i]
			c += cnts[i]
			if cnts[i] > 0 {
				subs++
			}
		}
		return s / c, subs >= minWatchWindows
	}
	var sq []float64
	for e := 2 * n; e <= len(sums); e++ {
		a, okA := window(e-2*n, e-n)
		b, okB := window(e-n, e)
		if !okA || !okB {
			continue
		}
		sq = append(sq, (b-a)*(b-a))
	}
	if len(sq) == 0 {
		return 0, 0, false
	}
	// The median of the squares over that of χ²₁ (0.455), not their
	// mean: one transient (a cold start's loads, a restart) must not make
	// every later change unjudgeable.
	return stats.Median(sq) / 0.4549, math.Max(1, float64(len(sums))/float64(n)-1), true
}

// meanVarianceOf is the variance of a window's job-weighted mean and its
// degrees of freedom, from its sub-windows' sums and counts, by the
// experiments' batch means (windowed.go): lookBatches batches of
// consecutive sub-windows, each batch's mean over its jobs, the
// batch-means variance inflated by what AR(1) with the sub-window means'
// ρ says short batches hide. ok is false for a window too sparse or too
// persistent to bound (fewer than minWatchEffective independent-equivalent
// sub-windows).
//
// # Notes
//
// ρ is the lag-1 estimate with its short-series bias added back, not the
// upper confidence bound the experiments use: a watch has one window of
// 60 sub-windows per side and one look, and on a queue's memory of a
// minute or two the upper bound leaves fewer than three effective terms,
// so it would never judge. The history's variance (historyVariance) and
// the practical threshold are the watch's margins against that optimism;
// the simulator's A/A check measures what they cost (RATIONALE.md).
func meanVarianceOf(sums, cnts []float64) (v, df float64, ok bool) {
	var subMeans []float64
	var S, C float64
	for i := range sums {
		if cnts[i] > 0 {
			subMeans = append(subMeans, sums[i]/cnts[i])
		}
		S += sums[i]
		C += cnts[i]
	}
	n := len(sums)
	b := min(lookBatches, len(subMeans)/2)
	if b < 2 || C == 0 {
		return 0, 0, false
	}
	rho := rhoBiasCorrected(subMeans)
	if float64(len(subMeans))*(1-rho)/(1+rho) < minWatchEffective {
		return 0, 0, false
	}
	m := n / b
	mu := S / C
	var ss float64
	used := 0
	for i := range b {
		var bs, bc float64
		for j := n - m*b + i*m; j < n-m*b+(i+1)*m; j++ {
			bs += sums[j]
			bc += cnts[j]
		}
		if bc == 0 {
			continue
		}
		// Weighted by the batch's share of the jobs, so that the spread
		// is that of the job-weighted mean.
		d := bs/bc - mu
		ss += d * d * bc / (C / float64(b))
		used++
	}
	if used < 2 {
		return 0, 0, false
	}
	v = batchInflation(rho, m, used) * ss / float64(used-1) / float64(used)
	return v, float64(used - 1), true
}

// rhoBiasCorrected is the series' lag-1 autocorrelation plus its
// short-series bias (≈ (1+3ρ)/n), in [0, 0.98].
func rhoBiasCorrected(d []float64) float64 {
	r, ok := lag1(d)
	if !ok {
		return 0
	}
	return min(max(r+(1+3*r)/float64(len(d)), 0), 0.98)
}

var (
	watchRollbacksDesc = prometheus.NewDesc("kiln_policy_watch_rollbacks_total",
		"Changes made by hand that the watch rolled back, by policy kind and the metric that regressed.", []string{"kind", "reason"}, nil)
	watchOpenDesc = prometheus.NewDesc("kiln_policy_watches_open",
		"Policy changes being watched now (0 or 1).", nil, nil)
)

// Describe implements prometheus.Collector.
func (w *Watcher) Describe(ch chan<- *prometheus.Desc) {
	ch <- watchRollbacksDesc
	ch <- watchOpenDesc
}

// Collect implements prometheus.Collector.
func (w *Watcher) Collect(ch chan<- prometheus.Metric) {
	w.mu.Lock()
	defer w.mu.Unlock()
	open := 0.0
	if w.open != nil {
		open = 1
	}
	ch <- prometheus.MustNewConstMetric(watchOpenDesc, prometheus.GaugeValue, open)
	for k, n := range w.rolled {
		ch <- prometheus.MustNewConstMetric(watchRollbacksDesc, prometheus.CounterValue, float64(n), k[0], k[1])
	}
}

var _ prometheus.Collector = (*Watcher)(nil)
