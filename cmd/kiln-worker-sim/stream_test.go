package main

import (
	"context"
	"testing"

	"github.com/kiln-gpu/kiln/internal/cost"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// TestLoadUnderBudget: a load with vram_budget_bytes (protocol 1.2) holds
// the budget, reports the rest as streamed, and each sampler step of a run
// then costs cost.StreamTime of the streamed bytes more than the same run
// with the model resident.
func TestLoadUnderBudget(t *testing.T) {
	const ckpt, nominal = "checkpoints/v1-5-pruned-emaonly.safetensors", 2_130_000_000
	elapsed := func(budget int64) (wire.LoadReply, int64) {
		h := newHarness(t, 80*gib)
		p, size := h.synth(ckpt, "sd15", nominal)
		rep, err := h.load(wire.LoadRequest{Model: ckpt, Path: p, Bytes: size, Family: "sd15", VRAMBudgetBytes: budget})
		if err != nil {
			t.Fatal(err)
		}
		h.loadSynth("loras/epi_noiseoffset2.safetensors", "lora", 135_000_000)
		wf := loadWorkflow(t, "comfyui__tests_inference_workflows_sd-1.5-lora-0.api.json")
		start := h.clk.Now()
		if _, _, err := h.run(context.Background(), "j", wf); err != nil {
			t.Fatal(err)
		}
		return rep, int64(h.clk.Since(start))
	}
	whole, tWhole := elapsed(0)
	if whole.VRAMBytes != nominal || whole.StreamedBytes != 0 {
		t.Fatalf("no budget: %+v", whole)
	}
	const budget = 500_000_000
	streamed, tStreamed := elapsed(budget)
	if streamed.VRAMBytes != budget || streamed.StreamedBytes != nominal-budget {
		t.Fatalf("budget %d: %+v", budget, streamed)
	}
	// The workflow samples 20 steps.
	want := int64(20 * cost.Default().StreamTime(nominal-budget, 1, cost.Device{H2DBytesPerS: 25.13e9}))
	if got := tStreamed - tWhole; got < want*99/100 || got > want*101/100 {
		t.Errorf("streaming added %d ns, want %d (20 steps of %d bytes over PCIe)", got, want, nominal-budget)
	}
	// A budget above the footprint streams nothing.
	if more, _ := elapsed(nominal * 2); more.StreamedBytes != 0 || more.VRAMBytes != nominal {
		t.Errorf("budget above the model: %+v", more)
	}
}
