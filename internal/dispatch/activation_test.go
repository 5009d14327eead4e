package dispatch

import (
	"os"
	"testing"

	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// TestActivationsRefinePlans: the Flux plan's activations follow what
// runs measure (RunResult.activation_bytes): a first run that took half
// the estimate halves the next plans' reservations, later runs move it
// smoothly, a report far off moves it at most 4×, and other families keep
// the table's figure.
func TestActivationsRefinePlans(t *testing.T) {
	data, err := os.ReadFile("../../examples/workflows/worker-comfyui__workflow_flux1_dev.api.json")
	if err != nil {
		t.Fatal(err)
	}
	g, err := workflow.Parse(data, workflow.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	p := PlanGraph(g, fluxCatalog, cost.Default())
	fam, est := p.family(), p.MaxActivation()
	if fam != "flux" || est == 0 {
		t.Fatalf("plan family %q, activations %d", fam, est)
	}
	d := &Dispatcher{}
	if got := d.fitPlan(p).MaxActivation(); got != est {
		t.Fatalf("no run measured: %d, want the table's %d", got, est)
	}
	d.activations.observe(fam, est, est/2)
	refined := d.fitPlan(p)
	if got := refined.MaxActivation(); got < est/2-1 || got > est/2+1 {
		t.Errorf("after a run that took half: %d, want %d", got, est/2)
	}
	if refined.Stages[0].ActivationBytes != p.Stages[0].ActivationBytes {
		t.Errorf("the text encoders' stage changed: %d → %d", p.Stages[0].ActivationBytes, refined.Stages[0].ActivationBytes)
	}
	// A later run reporting the table's figure moves the factor by
	// activationAlpha of the way: 0.5 → 0.5 + 0.3·(1 − 0.5) = 0.65.
	d.activations.observe(fam, refined.MaxActivation(), est)
	if got, want := float64(d.fitPlan(p).MaxActivation()), 0.65*float64(est); got < want*0.999 || got > want*1.001 {
		t.Errorf("after a second run: %.0f, want %.0f", got, want)
	}
	for range 20 {
		d.activations.observe(fam, d.fitPlan(p).MaxActivation(), est*100)
	}
	if got := d.fitPlan(p).MaxActivation(); got > est*maxActivationFactor+1 {
		t.Errorf("a worker reporting 100× moved the estimate to %d (> 4× %d)", got, est)
	}
	if got := d.activations.scale("sdxl", 1000); got != 1000 {
		t.Errorf("sdxl, never measured: %d", got)
	}
	d.activations.observe("sdxl", 0, 10) // nothing estimated: ignored
	d.activations.observe("sdxl", 10, 0) // nothing measured: ignored
	if got := d.activations.scale("sdxl", 1000); got != 1000 {
		t.Errorf("sdxl after empty reports: %d", got)
	}
}
