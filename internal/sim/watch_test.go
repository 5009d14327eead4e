package sim

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/stats"
)

// The watch's error-rate check (issue 14, "every change is watched";
// internal/experiment/RATIONALE.md): on the experiments' bursty, drifting
// workloads, activating the policy that is already active (nothing
// changes) must be rolled back in at most 5% of runs, and activating a
// planted bad policy (badpolicies_test.go) must be rolled back in most.

// watchTrial runs one workload with a change between 60 and 96 min (by
// seed: not on the workload's 40 min popularity drift, nor always away
// from it; after an hour of history, as on a node that has been up a
// while), watched with the default config, and returns the outcome.
func watchTrial(t testing.TB, kind, active, policy string, load float64, seed uint64) *WatchReport {
	t.Helper()
	cfg, err := LoadBaseline("../../configs", BaselineKiln, "policies."+kind+"="+active)
	if err != nil {
		t.Fatal(err)
	}
	wcfg := experiment.DefaultWatchConfig()
	if v, err := time.ParseDuration(os.Getenv("KILN_WATCH_WINDOW")); err == nil {
		wcfg.Window = v // exploring: the window's effect on power
	}
	at := 60*time.Minute + time.Duration(seed*7%37)*time.Minute
	wl := ExperimentWorkload{Load: load, Span: at + wcfg.Window + 30*time.Minute, Seed: 5000 + seed}
	models, reqs, err := wl.Generate()
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), cfg, models, &Trace{Requests: reqs}, Options{Wall: clock.NewFake(time.Unix(0, 0)),
		Seed: int64(seed), Watch: &Watch{At: at, Kind: kind, Policy: policy, Config: wcfg}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Watch == nil {
		t.Fatal("no watch in the report")
	}
	return rep.Watch
}

type watchCase struct {
	kind, active, bad string
}

var watchCases = []watchCase{
	{kind: "scheduling", active: "priority", bad: "test-batch-first"},
	{kind: "balancing", active: "affinity", bad: "test-busiest"},
	{kind: "eviction", active: "gdsf", bad: "test-mru"},
}

// watchRates runs n seeds of policy (the active one: A/A) at load and
// counts rollbacks and inconclusive watches; reports are the watches, by
// seed.
func watchRates(t *testing.T, c watchCase, policy string, load float64, n int) (rolled, inconclusive int, reports []*WatchReport) {
	for seed := range uint64(n) {
		r := watchTrial(t, c.kind, c.active, policy, load, seed)
		reports = append(reports, r)
		switch r.State {
		case experiment.WatchRolledBack:
			rolled++
			if policy == c.active {
				t.Logf("%s A/A at load %.1f seed %d rolled back (arrivals ×%.2f): %s", c.kind, load, seed, r.Watch.ArrivalRatio, r.Reason)
			}
		case experiment.WatchInconclusive:
			inconclusive++
		case experiment.WatchKept:
		default:
			t.Errorf("%s %s seed %d: watch %s (%s); want a verdict", c.kind, policy, seed, r.State, r.Reason)
		}
	}
	return rolled, inconclusive, reports
}

// trueEffect is the median, over seeds, of what the bad policy did in the
// window after the change: its after-window value against the A/A run's
// on the same trace (relative for latency and load time, in points for
// the deadline-miss rate), per gated metric.
func trueEffect(aa, bad []*WatchReport) string {
	var parts []string
	for i, name := range []string{"latency_s", "deadline_miss_rate", "load_s"} {
		var d []float64
		for s := range aa {
			a, b := afterOf(aa[s], name), afterOf(bad[s], name)
			if math.IsNaN(a) || math.IsNaN(b) {
				continue
			}
			if i == 1 {
				d = append(d, b-a)
			} else if a > 0 {
				d = append(d, b/a-1)
			}
		}
		if len(d) == 0 {
			continue
		}
		m := stats.Median(d)
		if i == 1 {
			parts = append(parts, fmt.Sprintf("%s %+.3f", name, m))
		} else {
			parts = append(parts, fmt.Sprintf("%s %+.0f%%", name, 100*m))
		}
	}
	return strings.Join(parts, ", ")
}

func afterOf(r *WatchReport, metric string) float64 {
	for _, c := range r.Watch.Comparisons {
		if c.Metric == metric && c.Jobs[1] > 0 {
			return c.After
		}
	}
	return math.NaN()
}

func watchRuns(quick int) int {
	if v, err := strconv.Atoi(os.Getenv("KILN_WATCH_RUNS")); err == nil && v > 0 {
		return v
	}
	return quick
}

// TestWatchErrorRates is the watch's A/A and planted-bad check. A/A
// (re-activating the active policy) must roll back at most 5% of runs:
// with KILN_WATCH_RUNS ≥ 40 runs per load the rate itself is held to
// that, with fewer (the quick version in make test: 8 at 0.9 of
// capacity) the lower end of its Wilson interval. Each planted bad
// policy's rollback rate is reported, and together they must be rolled
// back more often than the A/A changes. KILN_WATCH_LOADS=full runs 0.3,
// 0.6 and 0.9; KILN_WATCH_WINDOW overrides the window.
func TestWatchErrorRates(t *testing.T) {
	n := watchRuns(8)
	loads := []float64{0.9}
	if os.Getenv("KILN_WATCH_LOADS") == "full" {
		loads = []float64{0.3, 0.6, 0.9}
	}
	for _, load := range loads {
		aa, inc, aaReps := watchRates(t, watchCases[0], watchCases[0].active, load, n)
		t.Logf("load %.1f A/A: rolled back %s (Wilson 95%%), %d inconclusive", load, wilson(aa, n), inc)
		p := float64(aa) / float64(n)
		if lo, _ := wilsonBounds(aa, n); n >= 40 && p > 0.05 || lo > 0.05 {
			t.Errorf("load %.1f: A/A watches rolled back %d of %d; want at most 5%%", load, aa, n)
		}
		bad := 0
		for _, c := range watchCases {
			// Every A/A run is the same whichever kind re-activates its
			// policy (the node's defaults), so one set serves all.
			b, inc, reps := watchRates(t, c, c.bad, load, n)
			bad += b
			t.Logf("load %.1f %s %s: rolled back %s (Wilson 95%%), %d inconclusive; median effect in the window: %s",
				load, c.kind, c.bad, wilson(b, n), inc, trueEffect(aaReps, reps))
		}
		if float64(bad)/float64(n*len(watchCases)) <= p {
			t.Errorf("load %.1f: planted bad policies rolled back %d of %d, no more often than A/A changes (%d of %d)", load, bad, n*len(watchCases), aa, n)
		}
	}
}

// wilsonBounds is the Wilson 95% interval of x of n.
func wilsonBounds(x, n int) (lo, hi float64) {
	const z = 1.959964
	p, nn := float64(x)/float64(n), float64(n)
	d := 1 + z*z/nn
	c := (p + z*z/(2*nn)) / d
	h := z * math.Sqrt(p*(1-p)/nn+z*z/(4*nn*nn)) / d
	return max(c-h, 0), min(c+h, 1)
}

func TestParseWatch(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Watch
		wantErr bool
	}{
		{in: "scheduling=fifo@90m", want: Watch{At: 90 * time.Minute, Kind: "scheduling", Policy: "fifo"}},
		{in: "eviction=mine@2@1h", want: Watch{At: time.Hour, Kind: "eviction", Policy: "mine@2"}},
		{in: "scheduling=fifo", wantErr: true},
		{in: "fifo@90m", wantErr: true},
		{in: "scheduling=fifo@soon", wantErr: true},
		{in: "scheduling=@5m", wantErr: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseWatch(tc.in)
			if (err != nil) != tc.wantErr || err == nil && (got.At != tc.want.At || got.Kind != tc.want.Kind || got.Policy != tc.want.Policy) {
				t.Errorf("ParseWatch(%q) = %+v, %v; want %+v, err=%v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}
