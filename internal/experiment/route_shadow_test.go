package experiment

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
)

// TestRoutingShadow: every routed job is put to the candidates with the
// same views, and each answer is priced. The live router here sends every
// job to the node without its model; affinity would have sent it to the
// node that holds it, so its row shows no loads and a lower price than
// the live decisions', and it never agreed with them. A candidate that
// cannot be pinned is left out, and the live decision is the inner
// router's whatever the shadow does.
func TestRoutingShadow(t *testing.T) {
	host := newHost(t, "priority")
	s := NewRoutingShadow(context.Background(), host, []string{"affinity", "least-loaded", "no-such-policy"}, zerolog.Nop())
	router := s.Wrap(fixedRouter("n2"))
	const jobs = 20
	for i := range jobs {
		req := decision.RouteRequest{
			Job: decision.JobView{ID: fmt.Sprintf("j%d", i), Class: job.Batch, EstimatedCost: time.Second,
				Models: []string{"ckpt"}, ModelBytes: []uint64{4 << 30}, EstimatedVRAM: 4 << 30},
			Nodes: []decision.NodeView{
				{ID: "n1", Healthy: true, Workers: 2, IdleWorkers: 2, VRAM: []string{"ckpt"}},
				{ID: "n2", Healthy: true, Workers: 2, IdleWorkers: 2},
			},
			Random: uint64(i) * 0x9e3779b97f4a7c15,
		}
		if node, ok := router.Route(req); !ok || node != "n2" {
			t.Fatalf("the shadow changed the live decision: %q, %v", node, ok)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for s.Report().Decisions < jobs && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	rep := s.Report()
	if rep.Decisions != jobs || rep.Dropped != 0 {
		t.Fatalf("judged %d decisions, dropped %d; want %d and 0", rep.Decisions, rep.Dropped, jobs)
	}
	if len(rep.Candidates) != 2 {
		t.Fatalf("candidates %+v; want affinity and least-loaded (the unknown one left out)", rep.Candidates)
	}
	if rep.Live.ModelLoads != jobs || rep.Live.MeanPriceS <= 0 {
		t.Errorf("live row %+v: want %d model loads and a positive price (each job loads 4 GiB on n2)", rep.Live, jobs)
	}
	aff := rep.Candidates[0]
	if aff.Policy != "affinity@1" || aff.ModelLoads != 0 || aff.Agreed != 0 || aff.VsLive >= 1 {
		t.Errorf("affinity's row %+v: want no loads, never the live node, a price below the live one's", aff)
	}

	// /metrics has the same figures.
	reg := prometheus.NewRegistry()
	reg.MustRegister(s)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	loads := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "kiln_routing_shadow_model_loads_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			loads[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if loads["live"] != jobs || loads["affinity@1"] != 0 || len(loads) != 3 {
		t.Errorf("kiln_routing_shadow_model_loads_total = %v; want live %d, affinity@1 0, and least-loaded@1", loads, jobs)
	}
}
