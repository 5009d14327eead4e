package main

import (
	"strings"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/policy"
)

// TestRecentChanges: kiln policy list shows each kind's latest changes with
// their reasons (a watch-rollback's names the metric), not the start-up
// entries, at most recentChanges per kind.
func TestRecentChanges(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	kinds := []policy.KindInfo{{Kind: "scheduling", Changes: []policy.Change{
		{Time: at, Kind: "scheduling", To: "priority@1", Action: "start", Reason: "configured"},
		{Time: at, Kind: "scheduling", From: "priority@1", To: "fifo@1", Action: "activate", Reason: "a"},
		{Time: at, Kind: "scheduling", From: "fifo@1", To: "edf@1", Action: "activate", Reason: "b"},
		{Time: at, Kind: "scheduling", From: "edf@1", To: "fifo@1", Action: "rollback", Reason: "c"},
		{Time: at, Kind: "scheduling", From: "fifo@1", To: "priority@1", Action: "watch-rollback", Reason: "watch: latency_s 1 → 3"},
	}}, {Kind: "eviction", Changes: []policy.Change{{Time: at, Kind: "eviction", To: "lru@1", Action: "start"}}}}
	var b strings.Builder
	if err := writeRecentChanges(&b, kinds); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"watch-rollback", "watch: latency_s 1 → 3", "edf@1"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "configured") || strings.Contains(out, " a\n") || strings.Count(out, "\n") != 5 {
		t.Errorf("want the header and the last 3 changes after start-up:\n%s", out)
	}
	b.Reset()
	if err := writeRecentChanges(&b, kinds[1:]); err != nil || b.Len() != 0 {
		t.Errorf("no changes since start: %q, %v; want nothing", b.String(), err)
	}
}
