package sim

import (
	"context"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

const gib = 1 << 30

// fluxModels are the Flux-dev workflow's models at their file sizes
// (shared/workflows/worker-comfyui__workflow_flux1_dev.api.json): the
// fp8 diffusion model, T5-XXL in fp16, CLIP-L and the autoencoder — 22.3 GB
// together, 26 GB with the diffusion stage's activations at 1024².
func fluxModels() []Model {
	return []Model{
		{ID: "clip_l.safetensors", Bytes: 246_144_152, Family: workflow.FamilyTextEncoder},
		{ID: "t5xxl_fp16.safetensors", Bytes: 9_787_841_024, Family: workflow.FamilyTextEncoder},
		{ID: "flux1-dev-fp8.safetensors", Bytes: 11_901_517_952, Family: workflow.FamilyFlux},
		{ID: "ae.safetensors", Bytes: 335_304_388, Family: workflow.FamilyVAE},
	}
}

func fluxTrace(n int, every time.Duration) []Request {
	var reqs []Request
	for i := range n {
		reqs = append(reqs, Request{Time: time.Duration(i) * every, Class: job.Batch,
			Models: []string{"clip_l.safetensors", "t5xxl_fp16.safetensors", "flux1-dev-fp8.safetensors", "ae.safetensors"}})
	}
	return reqs
}

// TestFluxRunsInStagesOn24GiB: on one 24 GiB GPU at 20% headroom (19.2
// GiB usable), the Flux-dev job runs stage by stage — the text encoders
// (10 GB), then the diffusion model with its activations (15.6 GB), then
// the VAE — and every job completes; with sim.whole_job_admission, the
// node before stages, the same jobs need 26 GB at once and none runs.
func TestFluxRunsInStagesOn24GiB(t *testing.T) {
	reqs := fluxTrace(6, 30*time.Second)
	for _, whole := range []bool{false, true} {
		cfg := node(1, 1, 24*gib, "lru")
		cfg.Headroom = 0.2
		cfg.WholeJobAdmission = whole
		s, err := newSimulator(context.Background(), cfg.withDefaults(), fluxModels(), &Trace{Requests: reqs}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		usable := s.devices[0].ledger.Usable()
		j := s.jobs[0]
		if whole {
			if len(j.plan.Stages) != 1 || j.vram <= usable {
				t.Errorf("whole-job plan: %d stages, peak %d B; want 1 stage above the %d B usable", len(j.plan.Stages), j.vram, usable)
			}
		} else if len(j.plan.Stages) != 3 || j.vram > usable {
			t.Errorf("staged plan: %d stages, peak %d B; want 3 stages within the %d B usable", len(j.plan.Stages), j.vram, usable)
		}
		if err := s.run(context.Background()); err != nil {
			t.Fatal(err)
		}
		rep := s.report(time.Second, 1)
		s.host.Close()
		if whole {
			if rep.Completed != 0 || rep.Failed != len(reqs) {
				t.Errorf("whole-job admission: completed %d, failed %d of %d; want every Flux job refused", rep.Completed, rep.Failed, len(reqs))
			}
			continue
		}
		if rep.Completed != len(reqs) || rep.Failed != 0 {
			t.Fatalf("in stages: completed %d, failed %d of %d; want all done", rep.Completed, rep.Failed, len(reqs))
		}
		// The text encoders (10 GB) and the diffusion stage (15.6 GB) do
		// not fit together: each job's diffusion stage evicts the text
		// encoders its first stage loaded, as ComfyUI's model manager
		// unloads what the next stage does not need.
		if v := rep.Tiers["vram"]; v.Evictions < int64(len(reqs)) {
			t.Errorf("vram evictions %d over %d jobs: the stages did not unload the text encoders", v.Evictions, len(reqs))
		}
	}
}

// TestStageReservationsAreReleased runs a busy mixed workload with
// batching and preemption on and checks, after the run, that no job's
// activations are still held on any ledger and that each device holds
// exactly its workers' contexts and the resident models: a stage that
// forgot to give back what it reserved would shrink the node job by job.
func TestStageReservationsAreReleased(t *testing.T) {
	models, reqs, err := Generate(GenConfig{Kind: KindBursty, Jobs: 500, Rate: 1, Checkpoints: 8, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	// 48 GiB: the workload's Flux in bf16 (24 GB) fits too.
	cfg := node(2, 2, 48*gib, "lru")
	cfg.Headroom = 0.2
	cfg.WorkerContextBytes = 512 << 20
	cfg.Policies.Batching = "same-model"
	cfg.Preemption = true
	s, err := newSimulator(context.Background(), cfg.withDefaults(), models, &Trace{Requests: reqs}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.host.Close()
	if err := s.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	rep := s.report(time.Second, 1)
	t.Logf("completed %d, failed %d, preemptions %d", rep.Completed, rep.Failed, rep.Preemptions)
	if rep.Completed != len(reqs) {
		t.Errorf("completed %d of %d", rep.Completed, len(reqs))
	}
	for _, d := range s.devices {
		want := uint64(len(d.workers)) * cfg.WorkerContextBytes
		for _, w := range d.workers {
			for _, r := range w.resident {
				want += r.bytes
			}
		}
		for _, r := range d.ledger.Snapshot() {
			if len(r.Key) > 12 && r.Key[:12] == "(activations" {
				t.Errorf("device %d still holds %s (%d B) after the run", d.index, r.Key, r.Bytes)
			}
		}
		if got := d.ledger.Used(); got != want {
			t.Errorf("device %d: ledger holds %d B, want %d B (contexts and resident models)", d.index, got, want)
		}
	}
}
