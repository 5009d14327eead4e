package dispatch

import (
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/job"
)

// TestLookaheadPaced submits jobs in a stream, as durable submits under load
// do (a dispatch round after every commit): the rounds within
// lookaheadPace of a lookahead skip it, and the round that the pace
// allows looks ahead once more, so that the last jobs of a burst are not
// left without one. The dispatcher's clock is fake and stands still until
// the test moves it.
func TestLookaheadPaced(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r := newRigWith(t, rigConfig{deviceMemory: 8 << 30, perDevice: 1, models: map[string]int64{"m": 1 << 30},
		policies: Options{Clock: clk}})
	r.waitRounds(1)
	first := r.d.lookaheads.Load()
	for range 5 {
		r.submit(job.Batch, `{}`, "m")
		r.waitRounds(1)
	}
	if got := r.d.lookaheads.Load(); got != first {
		t.Fatalf("%d lookaheads in the rounds of 5 submits at one instant, want none after the first %d", got-first, first)
	}
	clk.Advance(lookaheadPace)
	deadline := time.Now().Add(30 * time.Second)
	for r.d.lookaheads.Load() == first {
		if time.Now().After(deadline) {
			t.Fatal("no lookahead once the pace allowed one")
		}
		time.Sleep(time.Millisecond)
	}
}
