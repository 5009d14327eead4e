package experiment

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
)

// watchStream drives a watcher with a synthetic node: Poisson arrivals at
// rate jobs/s, each job's latency a persistent (AR(1) in time, ρ per
// second) backlog term plus noise, scaled by factor after the change.
type watchStream struct {
	rng      *rand.Rand
	clk      *clock.Fake
	w        *Watcher
	rate     float64
	backlog  float64
	rho      float64
	latency  float64 // mean, seconds
	factor   float64 // latency multiplier once changed
	errRate  float64
	changed  bool
	loadRate float64 // arrival-rate multiplier once changed
	// latOnly: factor scales the latency only, not load time or misses
	// (the queueing part of a regression).
	latOnly bool
}

// run advances d, observing jobs as they finish.
func (s *watchStream) run(d time.Duration) {
	end := s.clk.Now().Add(d)
	for {
		r := s.rate
		if s.changed && s.loadRate > 0 {
			r *= s.loadRate
		}
		gap := time.Duration(s.rng.ExpFloat64() / r * float64(time.Second))
		if s.clk.Now().Add(gap).After(end) {
			s.clk.Advance(end.Sub(s.clk.Now()))
			s.w.Tick()
			return
		}
		s.clk.Advance(gap)
		// The backlog decays per second of gap and takes a shock per job:
		// neighbouring jobs' latencies are strongly correlated, as on a
		// queue after a burst.
		s.backlog = s.backlog*math.Pow(s.rho, gap.Seconds()) + s.rng.NormFloat64()*0.08*s.latency
		base := math.Max(s.latency+s.backlog+s.rng.NormFloat64()*0.2*s.latency, 0.05)
		lat, other := base, base
		if s.changed {
			lat *= s.factor
			if !s.latOnly {
				other = lat
			}
		}
		fail := s.rng.Float64() < s.errRate
		s.w.Observe(Observation{Latency: time.Duration(lat * float64(time.Second)), Failed: fail,
			HasDeadline: true, MissedDeadline: other > 3*s.latency, Load: time.Duration(other / 4 * float64(time.Second))})
		s.w.Tick()
	}
}

func newWatchStream(t testing.TB, seed uint64, rollback func(Watch) error) *watchStream {
	t.Helper()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	w, err := NewWatcher(WatchOptions{Config: WatchConfig{Enabled: true, Window: 10 * time.Minute}, Clock: clk,
		Rollback: rollback, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	return &watchStream{rng: rand.New(rand.NewPCG(seed, seed^0xabc)), clk: clk, w: w, rate: 1, rho: 0.97, latency: 4, factor: 1}
}

// watchOnce runs 15 min before a change and the watch window after it and
// returns the watch.
func watchOnce(t testing.TB, seed uint64, factor, loadRate float64) (Watch, int) {
	rolled := 0
	s := newWatchStream(t, seed, func(Watch) error { rolled++; return nil })
	s.factor, s.loadRate, s.latOnly = factor, loadRate, loadRate > 0
	s.run(15 * time.Minute)
	s.w.Changed(WatchedChange{Kind: "scheduling", Action: "activate", From: "priority@1", To: "fifo@1"})
	s.changed = true
	s.run(13 * time.Minute) // the window and its grace
	ws := s.w.Watches()
	if len(ws) != 1 || ws[0].State == WatchOpen {
		t.Fatalf("seed %d: watches %+v; want one, ended", seed, ws)
	}
	return ws[0], rolled
}

// TestWatchAAHoldsAlpha: an unchanged policy "changed" at a random moment
// of a persistent, bursty latency series is rolled back in at most the
// watch's alpha of runs (in fact far fewer: the test asks for a
// regression beyond min_effect).
func TestWatchAAHoldsAlpha(t *testing.T) {
	runs := 200
	if testing.Short() {
		runs = 60
	}
	false_ := 0
	for seed := range uint64(runs) {
		w, rolled := watchOnce(t, seed+1, 1, 0)
		if w.State == WatchRolledBack || rolled > 0 {
			false_++
			t.Logf("seed %d: false rollback: %s", seed+1, w.Reason)
		}
	}
	if rate := float64(false_) / float64(runs); rate > 0.05 {
		t.Errorf("A/A watches rolled back %d of %d (%.3f); want at most 0.05", false_, runs, rate)
	}
}

// TestWatchCatchesRegression: a change that triples latency (a 10 min window of this persistent series resolves about +100% half the time: its window means vary by ~25%) is
// rolled back with a reason naming the metric, and the metric counts it.
func TestWatchCatchesRegression(t *testing.T) {
	runs, caught := 40, 0
	for seed := range uint64(runs) {
		w, rolled := watchOnce(t, 100+seed, 3, 0)
		if w.State == WatchRolledBack {
			caught++
			if rolled != 1 || w.RolledBackBy == "" || !strings.Contains(w.Reason, w.RolledBackBy) || !strings.Contains(w.Reason, "fifo@1") {
				t.Errorf("seed %d: rolled %d times, by %q, reason %q", seed, rolled, w.RolledBackBy, w.Reason)
			}
		}
	}
	if caught < runs*8/10 {
		t.Errorf("a tripled latency was rolled back in %d of %d runs; want at least 80%%", caught, runs)
	}
}

// TestWatchLoadRise: a latency regression that comes with a much higher
// arrival rate is not blamed on the change.
func TestWatchLoadRise(t *testing.T) {
	w, rolled := watchOnce(t, 7, 1.6, 2)
	if w.State != WatchInconclusive || rolled != 0 || !strings.Contains(w.Reason, "arrival rate rose") {
		t.Errorf("state %s, %d rollbacks, reason %q; want inconclusive for the load", w.State, rolled, w.Reason)
	}
}

// TestWatchLifecycle: a second change supersedes the first; a failed
// rollback keeps the change and says so; a disabled watcher ignores
// everything; the metrics count rollbacks and open watches.
func TestWatchLifecycle(t *testing.T) {
	t.Run("superseded", func(t *testing.T) {
		s := newWatchStream(t, 1, func(Watch) error { return nil })
		s.run(10 * time.Minute)
		s.w.Changed(WatchedChange{Kind: "scheduling", Action: "activate", From: "a@1", To: "b@1"})
		s.run(time.Minute)
		s.w.Changed(WatchedChange{Kind: "balancing", Action: "set", From: "c@1", To: "c@1"})
		ws := s.w.Watches()
		if len(ws) != 2 || ws[0].State != WatchOpen || ws[1].State != WatchSuperseded || !strings.Contains(ws[1].Reason, "balancing") {
			t.Fatalf("watches %+v", ws)
		}
		s.w.Ended("rolled back by hand")
		if ws := s.w.Watches(); ws[0].State != WatchSuperseded {
			t.Errorf("after Ended: %+v", ws[0])
		}
	})
	t.Run("rollback fails", func(t *testing.T) {
		s := newWatchStream(t, 3, func(Watch) error { return errors.New("superseded") })
		s.factor = 3
		s.run(15 * time.Minute)
		s.w.Changed(WatchedChange{Kind: "scheduling", Action: "activate", From: "a@1", To: "b@1"})
		s.changed = true
		s.run(13 * time.Minute)
		ws := s.w.Watches()
		if len(ws) != 1 || ws[0].State != WatchKept || !strings.Contains(ws[0].Reason, "rollback failed") {
			t.Errorf("watches %+v; want kept, the rollback failed", ws)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		w, err := NewWatcher(WatchOptions{Config: WatchConfig{Window: time.Minute}})
		if err != nil {
			t.Fatal(err)
		}
		w.Changed(WatchedChange{Kind: "scheduling"})
		if len(w.Watches()) != 0 {
			t.Error("a disabled watcher opened a watch")
		}
	})
	t.Run("metrics", func(t *testing.T) {
		s := newWatchStream(t, 5, func(Watch) error { return nil })
		s.factor = 3
		s.run(15 * time.Minute)
		s.w.Changed(WatchedChange{Kind: "scheduling", Action: "activate", From: "a@1", To: "b@1"})
		if got := collectText(t, s.w); !strings.Contains(got, "kiln_policy_watches_open 1") {
			t.Errorf("while open:\n%s", got)
		}
		s.changed = true
		s.run(13 * time.Minute)
		got := collectText(t, s.w)
		if !strings.Contains(got, "kiln_policy_watches_open 0") || !strings.Contains(got, `kiln_policy_watch_rollbacks_total{kind="scheduling",reason="latency_s"} 1`) {
			t.Errorf("after the rollback:\n%s", got)
		}
	})
}

func TestWatchConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  WatchConfig
		ok   bool
	}{
		{name: "defaults", ok: true},
		{name: "short window", cfg: WatchConfig{Window: time.Millisecond}},
		{name: "confidence", cfg: WatchConfig{Confidence: 1}},
		{name: "load change", cfg: WatchConfig{MaxLoadChange: 0.5}},
		{name: "rate effect", cfg: WatchConfig{MinRateEffect: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate(%+v) = %v; want ok=%v", tc.cfg, err, tc.ok)
			}
		})
	}
}

// collectText gathers c's metrics as `name{k="v",…} value` lines.
func collectText(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			name := f.GetName()
			if len(ls) > 0 {
				name += "{" + strings.Join(ls, ",") + "}"
			}
			fmt.Fprintf(&b, "%s %g\n", name, v)
		}
	}
	return b.String()
}

// TestWatchConcurrent: the node calls Observe from the dispatcher, Changed
// from the policy host and Tick from its own loop, and the rollback calls
// back into Changed's caller; under -race none of it may race or deadlock.
func TestWatchConcurrent(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	var w *Watcher
	w, err := NewWatcher(WatchOptions{Config: WatchConfig{Enabled: true, Window: 10 * time.Second}, Clock: clk,
		Rollback: func(Watch) error { w.Ended("rolled back"); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2000 {
			w.Observe(Observation{Latency: time.Duration(1+i%7) * time.Second})
		}
	}()
	for i := range 200 {
		if i%50 == 0 {
			w.Changed(WatchedChange{Kind: "scheduling", Action: "activate", From: "a@1", To: "b@1"})
		}
		clk.Advance(100 * time.Millisecond)
		w.Tick()
		_ = w.Watches()
		_ = collectText(t, w)
	}
	<-done
	if len(w.Watches()) != 4 {
		t.Errorf("%d watches; want 4", len(w.Watches()))
	}
}
