package experiment

import (
	"context"
	"errors"
	"testing"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
)

// fixedRouter answers every question with one node.
type fixedRouter string

func (f fixedRouter) Route(decision.RouteRequest) (string, bool) { return string(f), true }

// TestRouteSplit: outside a routing experiment RouteSplit asks the base
// router; during one, each job is routed by its arm (the candidate's
// router or the baseline's) and the node's own decisions are not split.
func TestRouteSplit(t *testing.T) {
	d := newDriver(t, defaultWorkload(), 7, "priority", testConfig(), "")
	split := d.router.RouteSplit(fixedRouter("base"))
	req := func(id string) decision.RouteRequest {
		return decision.RouteRequest{Job: decision.JobView{ID: id, Class: job.Batch, EstimatedCost: 1}, Nodes: []decision.NodeView{
			{ID: "n1", Healthy: true, Workers: 1}, {ID: "n2", Healthy: true, Workers: 1}}}
	}
	if node, ok := split.Route(req("before")); !ok || node != "base" {
		t.Fatalf("no experiment: routed to %q, %v; want the base router's", node, ok)
	}
	if err := (Spec{Kind: "routing", Policy: "random"}).CheckLive(false); !errors.Is(err, ErrInvalid) {
		t.Errorf("CheckLive on a single node = %v, want ErrInvalid", err)
	}
	if err := (Spec{Kind: "routing", Policy: "random"}).CheckLive(true); err != nil {
		t.Errorf("CheckLive in a cluster = %v", err)
	}
	rec, err := d.ctl.Start(context.Background(), Spec{Kind: "routing", Policy: "random", Type: AB})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Spec.Unit != Traffic {
		t.Errorf("a routing experiment's unit defaulted to %q, want traffic", rec.Spec.Unit)
	}
	if d.router.nodeSplit() != nil {
		t.Error("a routing experiment splits the node's own decisions")
	}
	for i := range 40 {
		if node, ok := split.Route(req(string(rune('a'+i%26)) + string(rune('0'+i/26)))); !ok || node == "base" {
			t.Fatalf("job %d routed to %q, %v: not by an arm's routing policy", i, node, ok)
		}
	}
	r := d.router.cur.Load()
	r.mu.Lock()
	var per [3]int
	for _, g := range r.assign {
		per[g]++
	}
	r.mu.Unlock()
	if per[Baseline] != 20 || per[Candidate] != 20 {
		t.Errorf("40 jobs assigned %v (baseline, candidate, production); want 20 and 20", per)
	}
}
