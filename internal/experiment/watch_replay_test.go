package experiment

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
)

// TestWatchReplaysEvictionChanges checks the watch's replay of an eviction
// change: with the new policy's ghosts charging half again the old one's
// load time on the same accesses, the watch rolls the change back on
// replay_load_s although the node's own metrics (an unchanged stream)
// see nothing; with both charging the same it keeps the change; a
// scheduling change is not replayed; and the replay is closed with the
// watch.
func TestWatchReplaysEvictionChanges(t *testing.T) {
	run := func(t *testing.T, kind string, factor float64, same bool) (Watch, *fakeReplay, bool) {
		t.Helper()
		clk := clock.NewFake(epoch)
		f := &fakeReplay{clk: clk.Now, factor: factor, same: same}
		asked := false
		rolled := false
		w, err := NewWatcher(WatchOptions{Config: WatchConfig{Enabled: true, Window: 10 * time.Minute}, Clock: clk, Log: zerolog.Nop(),
			Rollback: func(Watch) error { rolled = true; return nil },
			Replay:   func(WatchedChange) Replay { asked = true; return f }})
		if err != nil {
			t.Fatal(err)
		}
		s := &watchStream{rng: rand.New(rand.NewPCG(3, 4)), clk: clk, w: w, rate: 1, rho: 0.97, latency: 4, factor: 1}
		s.run(15 * time.Minute)
		w.Changed(WatchedChange{Kind: kind, Action: "activate", From: "gdsf@1", To: "test-mru@1"})
		s.changed = true
		s.run(13 * time.Minute)
		ws := w.Watches()
		if len(ws) != 1 || ws[0].State == WatchOpen {
			t.Fatalf("watches %+v; want one, ended", ws)
		}
		if asked != (kind == "eviction") {
			t.Errorf("%s change: replay asked %v", kind, asked)
		}
		return ws[0], f, rolled
	}
	find := func(o Watch) (WatchComparison, bool) {
		for _, c := range o.Comparisons {
			if c.Metric == replayMetricWatch {
				return c, true
			}
		}
		return WatchComparison{}, false
	}

	o, f, rolled := run(t, "eviction", 1.5, false)
	c, ok := find(o)
	if !ok || c.Verdict != "worse" || o.State != WatchRolledBack || o.RolledBackBy != replayMetricWatch || !rolled {
		t.Errorf("new policy's ghosts load 50%% more: %s by %q (%s), replay %+v; want rolled back by %s", o.State, o.RolledBackBy, o.Reason, c, replayMetricWatch)
	}
	if !f.closed {
		t.Error("the replay was not closed with the watch")
	}

	o, _, rolled = run(t, "eviction", 1, true)
	if c, ok := find(o); !ok || c.Verdict != "no_regression" || rolled {
		t.Errorf("same load time: %s (%s), replay %+v; want kept, no regression", o.State, o.Reason, c)
	}

	o, _, _ = run(t, "scheduling", 1.5, false)
	if _, ok := find(o); ok {
		t.Errorf("a scheduling change was replayed: %+v", o.Comparisons)
	}
}
