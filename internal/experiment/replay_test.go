package experiment

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/policy"
)

// fakeReplay charges load time as the clock runs: the baseline's ghosts a
// burst-like amount per minute (a deterministic draw per minute), the
// candidate's factor times that plus, unless it is the same policy, noise
// of its own. It stands in for internal/shadow's Pair, whose replay of the
// accesses is tested there; here the controller's use of it is.
type fakeReplay struct {
	clk    func() time.Time
	factor float64
	same   bool
	closed bool
}

func (f *fakeReplay) perMinute(k int) (b, c float64) {
	b = 20 + 40*hashUnit(1, "b"+itoa(k))
	c = f.factor * b
	if !f.same {
		c += 10 * (hashUnit(2, "c"+itoa(k)) - 0.5)
	}
	return b, c
}

func (f *fakeReplay) LoadTimes() (time.Duration, time.Duration) {
	el := f.clk().Sub(epoch)
	whole := int(el / time.Minute)
	frac := float64(el%time.Minute) / float64(time.Minute)
	var b, c float64
	for k := range whole {
		x, y := f.perMinute(k)
		b, c = b+x, c+y
	}
	x, y := f.perMinute(whole)
	b, c = b+frac*x, c+frac*y
	return time.Duration(b * float64(time.Second)), time.Duration(c * float64(time.Second))
}

func (f *fakeReplay) Close() error { f.closed = true; return nil }

// replayDriver is the test node with a controller that replays through
// make (nil: no replay).
func replayDriver(t *testing.T, make func() (Replay, error)) *driver {
	t.Helper()
	d := newDriver(t, defaultWorkload(), 10, "priority", testConfig(), "")
	var err error
	opts := Options{Config: testConfig(), Host: d.host, Router: d.router, Clock: d.clk, Seed: 10,
		Workers: func() []string {
			var ids []string
			for _, w := range d.workers {
				ids = append(ids, w.id)
			}
			return ids
		}}
	if make != nil {
		opts.Replay = func([2]*policy.Arm) (Replay, error) { return make() }
	}
	if d.ctl, err = New(opts); err != nil {
		t.Fatal(err)
	}
	return d
}

func replayCmp(rec Record) (Comparison, bool) {
	if rec.Report == nil {
		return Comparison{}, false
	}
	for _, c := range rec.Report.Comparisons {
		if c.Metric == replayMetric {
			return c, true
		}
	}
	return Comparison{}, false
}

// TestReplayGatesEvictionExperiments checks that an eviction experiment's
// cache replay is one of its gating tests: a candidate whose ghosts load
// 50% more is judged worse on it although the live metrics (this test
// node has no caches) see nothing, the same policy in both arms is never
// judged worse and bounds the regression at zero, the replay is closed
// when the experiment ends, and a replay that cannot start leaves the
// experiment to its live metrics.
func TestReplayGatesEvictionExperiments(t *testing.T) {
	spec := Spec{Kind: "eviction", Policy: "gdsf", Type: Switchback, Window: Duration(5 * time.Minute), BurnIn: Duration(time.Minute),
		Deadline: Duration(3 * time.Hour)}
	for _, tc := range []struct {
		name   string
		factor float64
		same   bool
		want   string
	}{
		{"candidate loads 50% more", 1.5, false, "worse"},
		{"same policy", 1, true, "no_difference"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeReplay{factor: tc.factor, same: tc.same}
			d := replayDriver(t, func() (Replay, error) { return f, nil })
			f.clk = d.clk.Now
			rec := d.start(spec)
			rec = d.run(rec.ID)
			c, ok := replayCmp(rec)
			if !ok {
				t.Fatalf("no %s comparison in %s (%s)", replayMetric, rec.Verdict, rec.Reason)
			}
			t.Logf("%s: %s; replay %+.3g [%.3g, %.3g] p=%.2g", rec.Verdict, rec.Reason, c.Effect, c.Low, c.High, c.P)
			if c.Verdict.String() != tc.want || !c.Gating {
				t.Errorf("replay comparison %s (gating %v), want %s", c.Verdict, c.Gating, tc.want)
			}
			if tc.want == "worse" && (rec.Verdict != "worse" || !strings.Contains(rec.Reason, replayMetric)) {
				t.Errorf("verdict %s (%s), want worse on %s", rec.Verdict, rec.Reason, replayMetric)
			}
			if tc.same && (c.NoWorseThan > 1e-3 || rec.Verdict == "worse") {
				t.Errorf("same policy: verdict %s, replay bound %.3g, want no regression and a bound of zero", rec.Verdict, c.NoWorseThan)
			}
			if !f.closed {
				t.Error("the replay was not closed when the experiment ended")
			}
		})
	}
	t.Run("replay cannot start", func(t *testing.T) {
		d := replayDriver(t, func() (Replay, error) { return nil, errors.New("no topology") })
		rec := d.start(spec)
		rec = d.run(rec.ID)
		if _, ok := replayCmp(rec); ok {
			t.Errorf("a replay that failed to start is judged: %s", rec.Reason)
		}
		if rec.State == Running {
			t.Errorf("experiment still running at the horizon")
		}
	})
	t.Run("not eviction", func(t *testing.T) {
		started := false
		d := replayDriver(t, func() (Replay, error) { started = true; return &fakeReplay{clk: time.Now}, nil })
		rec := d.start(Spec{Kind: "scheduling", Policy: "fifo", Type: AB, Deadline: Duration(time.Hour)})
		if _, err := d.ctl.Abort(rec.ID, "test"); err != nil {
			t.Fatal(err)
		}
		if started {
			t.Error("a scheduling experiment started a cache replay")
		}
	})
}
