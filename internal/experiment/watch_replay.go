package experiment

import (
	"math"
	"time"
)

// The watch's replay of an eviction change: the node's shadow (internal/
// shadow) keeps a warm ghost hierarchy per eviction policy, each decided
// by its policy alone on the node's job starts, so the load time the new
// policy's ghosts charge in the window after a change, against the old
// one's over the same accesses, is the change's effect on loading with no
// traffic in between. It gates beside the before/after metrics, which
// see an eviction change only through a node's noisy latencies (the watch
// caught test-mru in 8–25% of runs without it).
//
// A balancing change is replayed the same way by the router
// (Router.ReplayPlacements): each placement the new policy makes is also
// asked of the old one, and both answers are priced in the node's state
// (placementPrice), so the comparison is "replay_place_s".

// replayMetricWatch names the watch's replay comparison.
const replayMetricWatch = "replay_load_s"

// maxReplaySamples bounds an open watch's samples (four per sub-window
// of the default window are kept; see sampleReplay).
const maxReplaySamples = 4096

// sampleReplay records the replay's load times at now, at most four times
// per sub-window; w.mu is held.
func (w *Watcher) sampleReplay(now time.Time) {
	if w.replay == nil || w.open == nil {
		return
	}
	if n := len(w.samples); n > 0 && (now.Sub(w.samples[n-1].at) < w.sub/4 || n >= maxReplaySamples) {
		return
	}
	from, to := w.replay.LoadTimes()
	w.samples = append(w.samples, replaySample{at: now, loads: [2]float64{from.Seconds(), to.Seconds()}})
}

// endReplay releases the open watch's replay; w.mu is held.
func (w *Watcher) endReplay() {
	if w.replay != nil {
		if err := w.replay.Close(); err != nil {
			w.log.Warn().Err(err).Msg("watch: close the replay")
		}
	}
	w.replay, w.samples = nil, nil
}

// compareReplay tests whether the new policy's ghosts charged more load
// time than the old one's over the window after the change: per
// sub-window, the difference of what each charged (each sample's increase
// goes to the sub-window it was taken in); a one-sided batch-means test at
// alpha on those differences, worse when its lower bound exceeds the
// practical threshold (MinEffect of the old policy's load per sub-window).
func (w *Watcher) compareReplay(at time.Time, alpha float64) WatchComparison {
	c := WatchComparison{Metric: replayMetricWatch, Alpha: alpha, Verdict: "insufficient_data"}
	if _, ok := w.replay.(*placementReplay); ok {
		c.Metric = placeReplayMetric
	}
	w.sampleReplay(w.clk.Now())
	n := int(w.cfg.Window / w.sub)
	if n < 2 || len(w.samples) < 2 {
		return c
	}
	var per [2][]float64
	for side := range 2 {
		per[side] = make([]float64, n)
	}
	seen := make([]bool, n)
	for i := 1; i < len(w.samples); i++ {
		s, prev := w.samples[i], w.samples[i-1]
		k := int(s.at.Sub(at) / w.sub)
		if s.at.Before(at) || k >= n {
			continue
		}
		for side := range 2 {
			per[side][k] += s.loads[side] - prev.loads[side]
		}
		seen[k] = true
	}
	var d []float64
	var sum [2]float64
	for k := range n {
		if !seen[k] {
			continue
		}
		d = append(d, per[1][k]-per[0][k])
		sum[0] += per[0][k]
		sum[1] += per[1][k]
	}
	c.Windows = [2]int{len(d), len(d)}
	if len(d) < minWatchWindows {
		return c
	}
	c.Before, c.After = sum[0]/float64(len(d)), sum[1]/float64(len(d))
	c.Effect = c.After - c.Before
	c.Threshold = w.cfg.MinEffect * c.Before
	// Two-sided at 2·alpha is one-sided at alpha; the floor lets a series
	// of zeros (the same policy's ghosts) bound the effect at zero.
	r, ok := batchLook(d, 2*alpha, replayFloor)
	if !ok || math.IsNaN(r.Low) {
		return c
	}
	c.Low = r.Low
	c.Verdict = "no_regression"
	if c.Low > c.Threshold && c.Effect > 0 {
		c.Verdict = "worse"
	}
	return c
}
