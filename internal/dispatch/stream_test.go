package dispatch

import (
	"os"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// TestStreamPlanFlux plans the Flux dev workflow (fp8 diffusion model,
// 28 steps) on a device that holds 8 GiB for one job: its diffusion
// stage (11 GiB of weights and its activations) does not fit, so the
// diffusion model keeps 8 GiB less the activations resident and streams
// the rest each step; stages that fit are left alone. On a device whose
// room is under the model's minimum resident share, nothing streams and
// the plan stays refused.
func TestStreamPlanFlux(t *testing.T) {
	data, err := os.ReadFile("../../examples/workflows/worker-comfyui__workflow_flux1_dev.api.json")
	if err != nil {
		t.Fatal(err)
	}
	g, err := workflow.Parse(data, workflow.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	c := cost.Default()
	p := PlanGraph(g, fluxCatalog, c)
	const room = 8 << 30
	s := streamPlan(p, room)
	if s.Peak() > room {
		t.Fatalf("streamed plan peaks at %d > room %d", s.Peak(), room)
	}
	diff := s.Stages[1]
	if diff.Models[0] != "diffusion_models/flux1-dev.safetensors" || diff.Steps <= 0 {
		t.Fatalf("diffusion stage %+v", diff)
	}
	whole := p.Stages[1].ModelBytes[0]
	if got := diff.ModelBytes[0] + diff.StreamedBytes[0]; got != whole {
		t.Errorf("resident %d + streamed %d = %d, want the model's %d", diff.ModelBytes[0], diff.StreamedBytes[0], got, whole)
	}
	if diff.ModelBytes[0] < whole/minResidentShare {
		t.Errorf("resident part %d under 1/%d of %d", diff.ModelBytes[0], minResidentShare, whole)
	}
	if diff.Bytes() != room {
		t.Errorf("the stage streams more than it must: %d resident of room %d", diff.Bytes(), room)
	}
	for _, k := range []int{0, 2} {
		if s.Stages[k].StreamedBytes != nil {
			t.Errorf("stage %d fits and streams %v", k, s.Stages[k].StreamedBytes)
		}
	}
	if s.Streamed() != diff.StreamedBytes[0] || p.Streamed() != 0 {
		t.Errorf("Streamed() = %d, unstreamed %d", s.Streamed(), p.Streamed())
	}
	// Priced per step, at the PCIe rate: a costlier placement.
	want := c.StreamTime(int64(diff.StreamedBytes[0]), diff.Steps, cost.Device{})
	if got := s.StreamTime(c, cost.Device{}); got != want || got < time.Second {
		t.Errorf("StreamTime = %v, want %v (%d bytes × %d steps)", got, want, diff.StreamedBytes[0], diff.Steps)
	}
	if p.StreamTime(c, cost.Device{}) != 0 {
		t.Error("an unstreamed plan costs stream time")
	}
	ls := s.loadSpec("diffusion_models/flux1-dev.safetensors")
	if ls.VRAMBudget != int64(diff.ModelBytes[0]) || ls.WeightDType != "fp8_e4m3fn" {
		t.Errorf("loadSpec = %+v", ls)
	}
	if ls := s.loadSpec("vae/ae.safetensors"); ls.VRAMBudget != 0 {
		t.Errorf("the VAE is streamed: %+v", ls)
	}

	// Too small even streamed: left as it was.
	tiny := uint64(whole/minResidentShare) / 2
	if got := streamPlan(p, tiny); got.Streamed() != 0 || got.Peak() != p.Peak() {
		t.Errorf("room %d: streamed %d, peak %d", tiny, got.Streamed(), got.Peak())
	}
	// Room enough: nothing changes.
	if got := streamPlan(p, p.Peak()); got.Streamed() != 0 {
		t.Errorf("a plan that fits streams %d bytes", got.Streamed())
	}
}
