package experiment

import (
	"fmt"
	"time"

	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/stats"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Replay replays the node's model accesses, as jobs start, under the
// baseline's and the candidate's eviction policies, each deciding a whole
// hierarchy of ghost caches at the node's capacities (every device's VRAM,
// the RAM and disk tiers; internal/shadow). Both see the same accesses in
// the same order, so the difference between what the two would have
// loaded is the policies' alone: no burst, no queue and no split of the
// node stands between them. Options.Replay makes one per eviction
// experiment.
type Replay interface {
	// LoadTimes are the load times the baseline's and the candidate's
	// ghosts have charged since the replay began.
	LoadTimes() (baseline, candidate time.Duration)
	Close() error
}

// replayMetric names the replay's comparison.
const replayMetric = "replay_load_s"

// replayState is a running eviction experiment's replay and its paired
// series: the load time each arm's ghosts charged per pair window.
type replayState struct {
	r      Replay
	series *pairedSeries
	test   *autoSeq
	last   [2]float64 // cumulative seconds at the last sample
	win    int        // window the current sums belong to
	sums   [2]float64 // seconds charged in window win so far
}

// startReplay begins the replay of an eviction experiment's arms, when
// the node can replay (Options.Replay). A replay that cannot start leaves
// the experiment to its four live metrics, with a warning: it adds power,
// it is not needed for a valid verdict.
func (c *Controller) startReplay(k abi.Kind, arms [2]*policy.Arm) Replay {
	if k == abi.KindBalancing {
		// The router prices the arms' placements itself (place_replay.go).
		return newPlacementReplay()
	}
	if c.replay == nil || k != abi.KindEviction {
		return nil
	}
	r, err := c.replay(arms)
	if err != nil {
		c.log.Warn().Err(err).Msg("eviction experiment: the cache replay could not start; judging on the live metrics alone")
		return nil
	}
	return r
}

// attachReplay gives a its replay's series and test, from now to the
// experiment's deadline, in pair windows.
func (c *Controller) attachReplay(a *active, r Replay, now time.Time) {
	if r == nil {
		return
	}
	left := time.Duration(a.rec.Spec.Deadline) - now.Sub(a.rec.StartedAt)
	width := c.cfg.PairWindow
	rs := &replayState{r: r, series: newPairedSeries(now, width, 0)}
	testAlpha := a.alpha
	if a.rec.Spec.Type == Canary {
		testAlpha = 2 * a.alpha // one-sided, as the live tests (newTests)
	}
	rs.test = newAutoSeq(testAlpha, int(max(left, 0)/width))
	b, cd := r.LoadTimes()
	rs.last = [2]float64{b.Seconds(), cd.Seconds()}
	a.replay = rs
}

// sample moves what each arm's ghosts charged since the last sample into
// the current window; when the window changes, the finished window's sums
// become one observation per arm, so that each window's difference is the
// two policies' load time over the same accesses.
func (rs *replayState) sample(now time.Time) {
	b, cd := rs.r.LoadTimes()
	cur := [2]float64{b.Seconds(), cd.Seconds()}
	w := rs.series.index(now)
	if w != rs.win {
		for arm := range 2 {
			rs.series.add(arm, rs.win, rs.sums[arm])
		}
		rs.win, rs.sums = w, [2]float64{}
	}
	for arm := range 2 {
		rs.sums[arm] += cur[arm] - rs.last[arm]
	}
	rs.last = cur
}

// replayFloor is the least variance of the mean difference the replay's
// test assumes: two ghosts of one deterministic policy charge exactly the
// same load time in every window, and a series of zeros then bounds the
// effect at zero instead of saying nothing.
const replayFloor = 1e-12

// replayComparison judges the replay: worse when the candidate's ghosts
// charge more load time per window than the baseline's, beyond the
// practical threshold (MinEffect of the baseline's mean) and the
// group-sequential test's interval, as the live metrics are judged.
func (c *Controller) replayComparison(a *active, now time.Time) Comparison {
	rs := a.replay
	rs.sample(now)
	s := rs.series
	s.close(now)
	r := rs.test.look(s.diffs, replayFloor)
	base := s.baseMean()
	testMin := c.cfg.MinEffect * base
	p := r.P
	if a.rec.Spec.Type == Canary {
		p /= 2
	}
	metric, what := replayMetric, "both policies' ghost caches replaying the node's accesses"
	if _, ok := rs.r.(*placementReplay); ok {
		metric, what = placeReplayMetric, "the price of both policies' answers to every placement (wait, loads, what the loads push out), in the node's state"
	}
	cmp := Comparison{Metric: metric, NA: len(s.diffs), NB: len(s.diffs), Windows: r.N, BaselineMean: base,
		Effect: r.Mean, Low: r.Low, High: r.High, P: p, Alpha: a.alpha, MinEffect: testMin, Gating: true,
		Test: fmt.Sprintf("group-sequential batch-means t on paired %s windows of %s", s.width, what)}
	if !r.Bounded {
		cmp.Verdict = stats.InsufficientData
		cmp.Low, cmp.High = 0, 0
		return cmp
	}
	settle(&cmp, r, testMin, max(r.Half, testMin))
	return cmp
}
