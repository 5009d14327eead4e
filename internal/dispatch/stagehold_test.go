package dispatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/job"
)

// heldGraph is an img2img graph whose VAE is needed from its first stage
// (VAEEncode) to its last (VAEDecode): a model a job holds across a stage
// boundary while it asks for the next stage's models. %[1]s names the
// job's own copies of the models.
const heldGraph = `{
 "1": {"class_type": "VAELoader", "inputs": {"vae_name": "%[1]s_vae.safetensors"}},
 "2": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
 "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 0]}},
 "4": {"class_type": "UNETLoader", "inputs": {"unet_name": "%[1]s_unet.safetensors", "weight_dtype": "default"}},
 "5": {"class_type": "CLIPLoader", "inputs": {"clip_name": "%[1]s_te.safetensors", "type": "sd3"}},
 "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a kiln", "clip": ["5", 0]}},
 "7": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["6", 0], "latent_image": ["3", 0],
   "seed": 1, "steps": 4, "cfg": 1, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.5}},
 "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 0]}},
 "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}}
}`

// TestStagedJobsOnOneDeviceDoNotDeadlock runs two staged jobs on the two
// workers of one device, lined up so that both have entered their first
// stage before either asks for its second. Each job's largest stage fits
// the device alone (VAE 6 + diffusion model 8 of 19.2 GiB usable), both
// first stages fit together (2 × (VAE 6 + text encoder 2)), but a job's
// second stage does not fit beside what the other holds across its own
// boundary (its VAE): a job that waited for the room while holding its
// VAE would wait for the other, which waits for it (issue 16's admission
// by stage; the hang `make run` showed). Both must finish well before
// dispatch.vram_wait.
func TestStagedJobsOnOneDeviceDoNotDeadlock(t *testing.T) {
	gate := filepath.Join(t.TempDir(), "stage-gate")
	models := map[string]int64{}
	for _, p := range []string{"a", "b"} {
		models["diffusion_models/"+p+"_unet.safetensors"] = 8 * gib
		models["text_encoders/"+p+"_te.safetensors"] = 2 * gib
		models["vae/"+p+"_vae.safetensors"] = 6 * gib
	}
	r := newRigWith(t, rigConfig{deviceMemory: 24 * gib, perDevice: 2, models: models,
		env:      []string{"KILN_TEST_STAGES", gate},
		policies: Options{VRAMWait: 5 * time.Minute}})
	var ids []string
	for _, p := range []string{"a", "b"} {
		wf := fmt.Sprintf(heldGraph, p)
		ids = append(ids, r.submit(job.Batch, wf, "diffusion_models/"+p+"_unet.safetensors",
			"text_encoders/"+p+"_te.safetensors", "vae/"+p+"_vae.safetensors"))
	}
	// The plan is what the test is about: check it rather than trust it.
	j, err := r.store.Get(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	plan := r.d.estimates.planOf(r.d, j)
	var stages []string
	for _, s := range plan.Stages {
		stages = append(stages, strings.Join(s.Models, "+"))
	}
	if len(plan.Stages) != 2 || !strings.Contains(stages[0], "vae") || !strings.Contains(stages[1], "vae") ||
		!strings.Contains(stages[1], "unet") || strings.Contains(stages[1], "_te") {
		t.Fatalf("stages %v; want [te+vae, unet+vae]", stages)
	}
	usable := r.set.Ledger(0).Usable()
	if held := 2 * plan.Stages[0].Bytes(); plan.Peak() > usable || held > usable ||
		plan.Stages[1].Bytes()+plan.Bytes("vae/a_vae.safetensors") <= usable {
		t.Fatalf("sizes do not set the trap: peak %.1f, both first stages %.1f, a second stage beside the other's VAE %.1f, usable %.1f GiB",
			float64(plan.Peak())/gib, float64(held)/gib, float64(plan.Stages[1].Bytes()+plan.Bytes("vae/a_vae.safetensors"))/gib, float64(usable)/gib)
	}
	// Both jobs run their first stage and stop at the boundary (the
	// workers wait for the gate before they ask for stage 1).
	deadline := time.Now().Add(30 * time.Second)
	for _, id := range ids {
		for {
			if p, ok := r.d.Progress(id); ok && p.Phase == "running" && p.Value >= 1 {
				break
			}
			if time.Now().After(deadline) {
				p, _ := r.d.Progress(id)
				t.Fatalf("job %s never reached its first stage boundary: %+v", id, p)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for _, id := range ids {
		for {
			j, err := r.store.Get(id)
			if err != nil {
				t.Fatal(err)
			}
			if j.State == job.Done {
				break
			}
			if j.State != job.Running && j.State != job.Queued || time.Now().After(deadline) {
				var stuck []string
				for _, id := range ids {
					p, _ := r.d.Progress(id)
					stuck = append(stuck, fmt.Sprintf("%s: %+v", id, p))
				}
				t.Fatalf("job %s is %s (%q) 20 s after the gate; progress %v, ledger %+v", id, j.State, j.Error, stuck, r.set.Ledger(0).Snapshot())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Nothing a job held outlives it: every reservation left is a
	// model's, unpinned, and no activations.
	if held := HeldBytes(r.set.Ledger(0)); held != 0 {
		t.Errorf("%d bytes of activations left on the ledger", held)
	}
}

// TestJobWaitingForRoomIsNotStarved runs, on three workers of one device,
// a job that needs the whole device behind two small ones that hold part
// of it, with more small jobs queued behind it. A small job that started
// while the big one waited would take the room back each time one ended,
// and the big job would wait for as long as small jobs keep coming; the
// device's jobs enter in turn (admit.go), so the small jobs queued after it
// wait for it instead.
func TestJobWaitingForRoomIsNotStarved(t *testing.T) {
	dir := t.TempDir()
	gate := func(name string) string { return filepath.Join(dir, name) }
	models := map[string]int64{"checkpoints/big.safetensors": 35 * gib / 2}
	for i := range 5 {
		models[fmt.Sprintf("checkpoints/small%d.safetensors", i)] = 2 * gib
	}
	ids := map[string]string{}
	submit := func(r *rig, name, model string) {
		ids[name] = r.submit(job.Batch, fmt.Sprintf(`{"gate": %q}`, gate(name)), model)
	}
	r := newRigWith(t, rigConfig{deviceMemory: 24 * gib, perDevice: 3, models: models,
		policies: Options{VRAMWait: 5 * time.Minute},
		before: func(r *rig) {
			submit(r, "s0", "checkpoints/small0.safetensors")
			submit(r, "s1", "checkpoints/small1.safetensors")
			submit(r, "big", "checkpoints/big.safetensors")
			for i := 2; i < 5; i++ {
				submit(r, fmt.Sprintf("s%d", i), fmt.Sprintf("checkpoints/small%d.safetensors", i))
			}
		}})
	open := func(name string) {
		t.Helper()
		if err := os.WriteFile(gate(name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The big job waits for the two small ones that hold part of the device.
	deadline := time.Now().Add(30 * time.Second)
	for len(r.d.Waiting(0)) == 0 || r.d.Waiting(0)[0] != ids["big"] {
		if time.Now().After(deadline) {
			t.Fatalf("the big job never waited for room: waiting %v", r.d.Waiting(0))
		}
		time.Sleep(5 * time.Millisecond)
	}
	open("big")
	open("s0")
	r.waitState(ids["s0"], job.Done)
	open("s1")
	r.waitState(ids["s1"], job.Done)
	// Small jobs s2.. never end until the big one has: if one had taken
	// the room while it waited, it would wait for good.
	r.waitState(ids["big"], job.Done)
	for i := 2; i < 5; i++ {
		open(fmt.Sprintf("s%d", i))
	}
	for i := 2; i < 5; i++ {
		r.waitState(ids[fmt.Sprintf("s%d", i)], job.Done)
	}
}

// TestStageEntryIsAllOrNothing tries a stage whose model fits the device
// now but whose model and activations together do not, while another
// job's activations hold part of it: the try must hold nothing after (a
// model pinned while the job waits for its activations is the hold that
// deadlocked two jobs on one device) and must evict nothing (another
// worker's warm model stays). Once that job lets go the same try succeeds;
// a stage that cannot fit even on an otherwise empty device fails with
// both figures instead of waiting.
func TestStageEntryIsAllOrNothing(t *testing.T) {
	const model, warm = "checkpoints/m.safetensors", "checkpoints/warm.safetensors"
	r := newRig(t, 24*gib, 2, map[string]int64{model: 8 * gib, warm: 4 * gib})
	// A finished job leaves its model resident and unpinned on its worker.
	r.waitState(r.submit(job.Batch, `{}`, warm), job.Done)
	led := r.set.Ledger(0)
	other, err := led.Reserve("w0.1", fmt.Sprintf(activationsKey, "other"), 9*gib)
	if err != nil {
		t.Fatal(err)
	}
	w := r.pool.Get("w0.0")
	plan := Plan{Stages: []PlanStage{{Models: []string{model}, ModelBytes: []uint64{8 * gib}, ActivationBytes: 4 * gib}}}
	before := led.Snapshot()
	ctx := context.Background()
	_, wait, err := r.d.tryStage(ctx, w, "j", []string{model}, plan, 4*gib, true)
	if !errors.Is(err, ErrVRAMHeld) || wait == nil {
		t.Fatalf("try beside the other job's activations: %v (wait %v); want ErrVRAMHeld and a wait", err, wait != nil)
	}
	if after := led.Snapshot(); !reflect.DeepEqual(after, before) {
		t.Fatalf("a try that must wait changed the ledger:\n before %+v\n after  %+v", before, after)
	}
	r.d.mu.Lock()
	_, pinned := r.d.resident[w.ID()][model]
	r.d.mu.Unlock()
	if pinned {
		t.Fatal("a try that must wait left its model resident")
	}

	led.Release(other)
	got, _, err := r.d.tryStage(ctx, w, "j", []string{model}, plan, 4*gib, true)
	if err != nil || !reflect.DeepEqual(got.pinned, []string{model}) || got.act == nil || got.act.Bytes() != 4*gib {
		t.Fatalf("try on a free device: %+v, %v; want the model pinned and 4 GiB of activations", got, err)
	}
	r.d.unpin(w.ID(), got.pinned)
	led.Release(got.act)

	big := Plan{Stages: []PlanStage{{Models: []string{model}, ModelBytes: []uint64{8 * gib}, ActivationBytes: 12 * gib}}}
	_, wait, err = r.d.tryStage(ctx, w, "j", []string{model}, big, 12*gib, true)
	var noRoom *NoRoomError
	if !errors.As(err, &noRoom) || wait != nil {
		t.Fatalf("a stage larger than the empty device: %v; want a NoRoomError and no wait", err)
	}
}
