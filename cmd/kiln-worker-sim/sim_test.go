package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image/png"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/modelfile"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

const gib = 1 << 30

// harness is a sim on a virtual clock with its hello done.
type harness struct {
	t     *testing.T
	sim   *sim
	clk   *clock.Fake
	out   string
	store string
}

// virtualClock is a fake clock on which sleeping advances time at once, as
// in the simulator: the time a run takes is exactly what it charged.
type virtualClock struct{ *clock.Fake }

func (v virtualClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	v.Advance(max(d, 0))
	return nil
}

func newHarness(t *testing.T, memBytes uint64) *harness {
	t.Helper()
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := newSim(zerolog.Nop(), virtualClock{clk})
	t.Cleanup(s.close)
	h := &harness{t: t, sim: s, clk: clk, out: t.TempDir(), store: t.TempDir()}
	_, err := s.Hello(context.Background(), wire.HelloRequest{
		Protocol:  wire.ProtocolVersion,
		WorkerID:  "w0",
		Device:    wire.DeviceInfo{Name: "sim-a100", MemoryBytes: memBytes, H2DBandwidth: 25.13e9, ComputeFactor: 1, Simulated: true},
		OutputDir: h.out,
	})
	if err != nil {
		t.Fatalf("Hello: %v", err)
	}
	return h
}

// synth writes a synthetic safetensors model and returns its path and size.
func (h *harness) synth(id, family string, nominal int64) (string, int64) {
	h.t.Helper()
	p := filepath.Join(h.store, filepath.FromSlash(id))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	scale := min(1, float64(256<<10)/float64(nominal)) // about 256 KiB on disk
	if err := modelfile.SynthFile(p, modelfile.Spec{ID: id, Family: family, NominalBytes: nominal, Scale: scale}); err != nil {
		h.t.Fatalf("SynthFile(%s): %v", id, err)
	}
	st, err := os.Stat(p)
	if err != nil {
		h.t.Fatal(err)
	}
	return p, st.Size()
}

// load loads a model.
func (h *harness) load(req wire.LoadRequest) (wire.LoadReply, error) {
	return h.sim.Load(context.Background(), req)
}

// loadSynth synthesises and loads a model.
func (h *harness) loadSynth(id, family string, nominal int64) wire.LoadReply {
	h.t.Helper()
	p, size := h.synth(id, family, nominal)
	rep, err := h.load(wire.LoadRequest{Model: id, Path: p, Bytes: size, Family: family})
	if err != nil {
		h.t.Fatalf("Load(%s): %v", id, err)
	}
	return rep
}

// run runs a workflow and collects its step progress (node-start frames,
// Max 0, are left out; see runAll).
func (h *harness) run(ctx context.Context, jobID string, wf map[string]any) (wire.RunResult, []wire.Progress, error) {
	res, all, err := h.runAll(ctx, jobID, wf)
	var prog []wire.Progress
	for _, p := range all {
		if p.Max > 0 {
			prog = append(prog, p)
		}
	}
	return res, prog, err
}

// runAll runs a workflow and collects every progress frame.
func (h *harness) runAll(ctx context.Context, jobID string, wf map[string]any) (wire.RunResult, []wire.Progress, error) {
	var prog []wire.Progress
	res, err := h.sim.Run(ctx, wire.RunRequest{JobID: jobID, Workflow: wf}, func(p wire.Progress) {
		prog = append(prog, p)
	})
	return res, prog, err
}

// loadWorkflow reads an example workflow as the kernel would hand it over
// (JSON numbers as float64).
func loadWorkflow(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "workflows", name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// errCode returns the wire error code of err, or "" if it has none.
func errCode(err error) string {
	var we *wire.Error
	if errors.As(err, &we) {
		return we.Code
	}
	return ""
}

func TestHello(t *testing.T) {
	s := newSim(zerolog.Nop(), clock.NewFake(time.Time{}))
	for _, tc := range []struct {
		name     string
		req      wire.HelloRequest
		wantCode string
		check    func(t *testing.T)
	}{
		{name: "defaults", req: wire.HelloRequest{Protocol: 1, OutputDir: "/tmp/x"}, check: func(t *testing.T) {
			if s.cost.TimeScale != 1 {
				t.Errorf("time scale = %v", s.cost.TimeScale)
			}
		}},
		{name: "cost options", req: wire.HelloRequest{Protocol: 1, OutputDir: "/tmp/x", Device: wire.DeviceInfo{ComputeFactor: 2.2},
			Options: map[string]any{"cost": map[string]any{"time_scale": 0.01, "families": map[string]any{"sdxl": map[string]any{"step_seconds": 0.2}}}}},
			check: func(t *testing.T) {
				if s.cost.TimeScale != 0.01 || s.cost.Families["sdxl"].StepSeconds != 0.2 || s.dev.ComputeFactor != 2.2 {
					t.Errorf("cost = %+v dev = %+v", s.cost, s.dev)
				}
			}},
		{name: "bad cost key", req: wire.HelloRequest{Protocol: 1, OutputDir: "/tmp/x",
			Options: map[string]any{"cost": map[string]any{"time_scael": 1}}}, wantCode: wire.ErrCodeBadRequest},
		{name: "bad cost value", req: wire.HelloRequest{Protocol: 1, OutputDir: "/tmp/x",
			Options: map[string]any{"cost": map[string]any{"time_scale": -1}}}, wantCode: wire.ErrCodeBadRequest},
		{name: "cost not a map", req: wire.HelloRequest{Protocol: 1, OutputDir: "/tmp/x",
			Options: map[string]any{"cost": "fast"}}, wantCode: wire.ErrCodeBadRequest},
		{name: "no output dir", req: wire.HelloRequest{Protocol: 1}, wantCode: wire.ErrCodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := s.Hello(context.Background(), tc.req)
			if got := errCode(err); got != tc.wantCode {
				t.Fatalf("Hello() error = %v, want code %q", err, tc.wantCode)
			}
			if tc.wantCode != "" {
				return
			}
			if rep.Name != Name || rep.Protocol != wire.ProtocolVersion || rep.PID != os.Getpid() {
				t.Errorf("reply = %+v", rep)
			}
			for _, c := range []string{"cancel", "progress", "node:KSampler", "node:SaveImage", "node:VAEDecode"} {
				if !slices.Contains(rep.Capabilities, c) {
					t.Errorf("capabilities lack %q: %v", c, rep.Capabilities)
				}
			}
			if tc.check != nil {
				tc.check(t)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	h := newHarness(t, 8*gib)
	const nominal = 2_130_000_000 // SD1.5 fp16
	sdPath, sdSize := h.synth("checkpoints/sd15.safetensors", "sd15", nominal)
	bigPath, bigSize := h.synth("checkpoints/flux1-dev.safetensors", "flux", 23_800_000_000)
	rawPath := filepath.Join(h.store, "RealESRGAN_x4plus.pth")
	if err := os.WriteFile(rawPath, bytes.Repeat([]byte{1, 2, 3, 4}, 300_000), 0o644); err != nil {
		t.Fatal(err)
	}
	wantLoad := cost.Default().LoadTime("sd15", nominal, cost.Device{H2DBytesPerS: 25.13e9, ComputeFactor: 1})

	for _, tc := range []struct {
		name     string
		req      wire.LoadRequest
		wantCode string
		check    func(t *testing.T, rep wire.LoadReply)
	}{
		{name: "synthetic file charges its nominal size",
			req: wire.LoadRequest{Model: "checkpoints/sd15.safetensors", Path: sdPath, Bytes: sdSize, Family: "sd15"},
			check: func(t *testing.T, rep wire.LoadReply) {
				if rep.VRAMBytes != nominal {
					t.Errorf("VRAMBytes = %d, want %d", rep.VRAMBytes, nominal)
				}
				if time.Duration(rep.LoadNanos) != wantLoad {
					t.Errorf("LoadNanos = %v, want %v", time.Duration(rep.LoadNanos), wantLoad)
				}
				if len(rep.Checksum) != 64 {
					t.Errorf("Checksum = %q", rep.Checksum)
				}
			}},
		{name: "already loaded is a no-op",
			req: wire.LoadRequest{Model: "checkpoints/sd15.safetensors", Path: sdPath, Bytes: sdSize, Family: "sd15"},
			check: func(t *testing.T, rep wire.LoadReply) {
				if rep.LoadNanos != 0 || rep.VRAMBytes != nominal {
					t.Errorf("reply = %+v", rep)
				}
			}},
		{name: "non-safetensors file charges its size",
			req: wire.LoadRequest{Model: "upscale_models/RealESRGAN_x4plus.pth", Path: rawPath, Bytes: 1_200_000, Family: "upscaler"},
			check: func(t *testing.T, rep wire.LoadReply) {
				if rep.VRAMBytes != 1_200_000 {
					t.Errorf("VRAMBytes = %d", rep.VRAMBytes)
				}
			}},
		{name: "size mismatch", req: wire.LoadRequest{Model: "m", Path: sdPath, Bytes: sdSize + 1}, wantCode: wire.ErrCodeBadRequest},
		{name: "missing file", req: wire.LoadRequest{Model: "m", Path: filepath.Join(h.store, "nope"), Bytes: 1}, wantCode: wire.ErrCodeFailed},
		{name: "no path", req: wire.LoadRequest{Model: "m"}, wantCode: wire.ErrCodeBadRequest},
		{name: "out of memory", req: wire.LoadRequest{Model: "checkpoints/flux1-dev.safetensors", Path: bigPath, Bytes: bigSize},
			wantCode: wire.ErrCodeOutOfMemory},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := h.load(tc.req)
			if got := errCode(err); got != tc.wantCode {
				t.Fatalf("Load() error = %v, want code %q", err, tc.wantCode)
			}
			if tc.check != nil {
				tc.check(t, rep)
			}
		})
	}

	st, err := h.sim.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.VRAMUsed != nominal+1_200_000 || len(st.Models) != 2 || st.RSSBytes <= 0 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestChecksumSample(t *testing.T) {
	small := bytes.Repeat([]byte("a"), 1000)
	big := make([]byte, SampleChunks*SampleChunkBytes*3)
	for i := range big {
		big[i] = byte(i * 7)
	}
	changed := slices.Clone(big)
	changed[len(changed)-1] ^= 1 // the last chunk is always sampled
	for _, tc := range []struct {
		name string
		a, b []byte
		same bool
	}{
		{"small file hashed whole", small, slices.Clone(small), true},
		{"deterministic", big, slices.Clone(big), true},
		{"last byte sampled", big, changed, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := checksumSample(tc.a) == checksumSample(tc.b); got != tc.same {
				t.Errorf("same checksum = %v, want %v", got, tc.same)
			}
		})
	}
}

func TestUnload(t *testing.T) {
	h := newHarness(t, 80*gib)
	h.loadSynth("loras/a.safetensors", "lora", 135_000_000)
	for _, tc := range []struct {
		name      string
		model     string
		wantCode  string
		wantFreed int64
	}{
		{"loaded", "loras/a.safetensors", "", 135_000_000},
		{"again", "loras/a.safetensors", wire.ErrCodeNotLoaded, 0},
		{"unknown", "loras/b.safetensors", wire.ErrCodeNotLoaded, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := h.sim.Unload(context.Background(), wire.UnloadRequest{Model: tc.model})
			if got := errCode(err); got != tc.wantCode {
				t.Fatalf("Unload() error = %v, want code %q", err, tc.wantCode)
			}
			if rep.FreedBytes != tc.wantFreed {
				t.Errorf("FreedBytes = %d, want %d", rep.FreedBytes, tc.wantFreed)
			}
		})
	}
	if st, _ := h.sim.Stats(context.Background()); st.VRAMUsed != 0 || len(st.Models) != 0 {
		t.Errorf("Stats after unload = %+v", st)
	}
}

// loadSD15LoRA loads the models of the sd-1.5-lora example workflow.
func (h *harness) loadSD15LoRA() map[string]any {
	h.loadSynth("checkpoints/v1-5-pruned-emaonly.safetensors", "sd15", 2_130_000_000)
	h.loadSynth("loras/epi_noiseoffset2.safetensors", "lora", 135_000_000)
	return loadWorkflow(h.t, "comfyui__tests_inference_workflows_sd-1.5-lora-0.api.json")
}

func decodePNG(t *testing.T, path string) (w, h int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	return img.Bounds().Dx(), img.Bounds().Dy()
}

func TestRunSD15LoRA(t *testing.T) {
	h := newHarness(t, 80*gib)
	wf := h.loadSD15LoRA()

	res, prog, err := h.run(context.Background(), "job-1", wf)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(prog) != 20 {
		t.Fatalf("progress count = %d, want 20 (steps)", len(prog))
	}
	for i, p := range prog {
		if p.JobID != "job-1" || p.Node != "3" || p.Value != i+1 || p.Max != 20 {
			t.Fatalf("progress[%d] = %+v", i, p)
		}
	}
	// The fake clock advanced by exactly what the cost model charged.
	c, dev := cost.Default(), cost.Device{H2DBytesPerS: 25.13e9, ComputeFactor: 1}
	want := 2*c.TextEncodeTime("sd15", dev) + c.LoRAApplyTime("sd15", dev) +
		20*c.StepTime("sd15", 512, 512, 1, dev) + c.DecodeTime("sd15", 512, 512, 1, dev)
	if time.Duration(res.RunNanos) != want {
		t.Errorf("RunNanos = %v, want %v", time.Duration(res.RunNanos), want)
	}
	wantOut := []wire.Output{{Node: "9", Filename: "ComfyUI_00001_.png", Subfolder: "job-1", Type: "output", Width: 512, Height: 512}}
	if res.JobID != "job-1" || !slices.Equal(res.Outputs, wantOut) {
		t.Fatalf("result = %+v, want outputs %+v", res, wantOut)
	}
	file := filepath.Join(h.out, "job-1", "ComfyUI_00001_.png")
	if w, ht := decodePNG(t, file); w != 512 || ht != 512 {
		t.Errorf("PNG is %d×%d, want 512×512", w, ht)
	}
	first, _ := os.ReadFile(file)

	// Same seed, other job: same bytes. Same job again: overwritten, not
	// duplicated.
	for _, job := range []string{"job-2", "job-1"} {
		if _, _, err := h.run(context.Background(), job, wf); err != nil {
			t.Fatalf("Run(%s): %v", job, err)
		}
		got, _ := os.ReadFile(filepath.Join(h.out, job, "ComfyUI_00001_.png"))
		if !bytes.Equal(got, first) {
			t.Errorf("%s: PNG differs for the same seed", job)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(h.out, "job-1"))
	if len(entries) != 1 {
		t.Errorf("job-1 holds %d files after a re-run, want 1", len(entries))
	}
	// Another seed gives another picture.
	wf["3"].(map[string]any)["inputs"].(map[string]any)["seed"] = 7.0
	if _, _, err := h.run(context.Background(), "job-3", wf); err != nil {
		t.Fatal(err)
	}
	other, _ := os.ReadFile(filepath.Join(h.out, "job-3", "ComfyUI_00001_.png"))
	if bytes.Equal(other, first) {
		t.Error("PNG is the same for another seed")
	}
	if st, _ := h.sim.Stats(context.Background()); st.JobsDone != 4 || st.Running != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestRunExamples(t *testing.T) {
	type model struct {
		id, family string
		nominal    int64
	}
	for _, tc := range []struct {
		file      string
		models    []model
		wantSteps map[string]int // node → progress max
		wantOut   []wire.Output
	}{
		{
			file: "salad-comfyui-api__sdxl_txt2img-with-refiner.api.json",
			models: []model{
				{"checkpoints/sd_xl_base_1.0.safetensors", "sdxl", 6_940_000_000},
				{"checkpoints/sd_xl_refiner_1.0.safetensors", "sdxl", 6_080_000_000},
			},
			wantSteps: map[string]int{"10": 20, "11": 5},
			wantOut:   []wire.Output{{Node: "19", Filename: "ComfyUI_00001_.png", Subfolder: "j", Type: "output", Width: 1024, Height: 1024}},
		},
		{
			file: "saintno-comfyui-sdk__example-txt2img-workflow.api.json",
			models: []model{
				{"checkpoints/SDXL/dreamshaperXL_v2TurboDpmppSDE.safetensors", "sdxl", 6_940_000_000},
				{"upscale_models/4x-ClearRealityV1.pth", "upscaler", 67_000_000},
			},
			wantSteps: map[string]int{"3": 8},
			wantOut: []wire.Output{
				{Node: "9", Filename: "ComfyUI_00001_.png", Subfolder: "j", Type: "output", Width: 512, Height: 512},
				{Node: "12", Filename: "ComfyUI_00002_.png", Subfolder: "j", Type: "output", Width: 2048, Height: 2048},
			},
		},
		{
			file:      "worker-comfyui__workflow_sd3.api.json",
			models:    []model{{"checkpoints/sd3_medium_incl_clips_t5xxlfp8.safetensors", "sd3", 10_900_000_000}},
			wantSteps: map[string]int{"271": 28},
			wantOut:   []wire.Output{{Node: "273", Filename: "sd3_00001_.png", Subfolder: "j/sd3", Type: "output", Width: 1152, Height: 768}},
		},
		{
			file: "worker-comfyui__workflow_flux1_dev.api.json",
			models: []model{
				{"vae/ae.safetensors", "vae", 335_000_000},
				{"text_encoders/t5xxl_fp8_e4m3fn.safetensors", "text_encoder", 4_890_000_000},
				{"text_encoders/clip_l.safetensors", "text_encoder", 246_000_000},
				{"diffusion_models/flux1-dev.safetensors", "flux", 11_900_000_000},
			},
			wantSteps: map[string]int{"13": 4},
			wantOut:   []wire.Output{{Node: "9", Filename: "ComfyUI_00001_.png", Subfolder: "j", Type: "output", Width: 1024, Height: 1024}},
		},
		{
			file:      "worker-comfyui__test_input.api.json",
			models:    []model{{"checkpoints/flux1-dev-fp8.safetensors", "flux", 17_200_000_000}},
			wantSteps: map[string]int{"31": 10},
			wantOut: []wire.Output{ // two SaveImage nodes share the prefix and its counter
				{Node: "9", Filename: "ComfyUI_00001_.png", Subfolder: "j", Type: "output", Width: 512, Height: 512},
				{Node: "38", Filename: "ComfyUI_temp_?????_00001_.png", Subfolder: "j", Type: "temp", Width: 512, Height: 512},
				{Node: "40", Filename: "ComfyUI_00002_.png", Subfolder: "j", Type: "output", Width: 512, Height: 512},
			},
		},
	} {
		t.Run(tc.file, func(t *testing.T) {
			h := newHarness(t, 80*gib)
			for _, m := range tc.models {
				h.loadSynth(m.id, m.family, m.nominal)
			}
			res, prog, err := h.run(context.Background(), "j", loadWorkflow(t, tc.file))
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			steps := map[string]int{}
			for _, p := range prog {
				steps[p.Node]++
				if p.Max != tc.wantSteps[p.Node] {
					t.Errorf("progress %+v: max want %d", p, tc.wantSteps[p.Node])
				}
			}
			for node, n := range tc.wantSteps {
				if steps[node] != n {
					t.Errorf("node %s: %d progress messages, want %d", node, steps[node], n)
				}
			}
			// PreviewImage's five letters, as in ComfyUI.
			got := slices.Clone(res.Outputs)
			for i := range got {
				if f, ok := strings.CutPrefix(got[i].Filename, "ComfyUI_temp_"); ok && len(f) > 5 {
					got[i].Filename = "ComfyUI_temp_?????" + f[5:]
				}
			}
			if !slices.Equal(got, tc.wantOut) {
				t.Fatalf("outputs = %+v\nwant %+v", res.Outputs, tc.wantOut)
			}
			for _, o := range res.Outputs {
				w, ht := decodePNG(t, filepath.Join(h.out, filepath.FromSlash(o.Subfolder), o.Filename))
				if w != o.Width || ht != o.Height {
					t.Errorf("%s is %d×%d, want %d×%d", o.Filename, w, ht, o.Width, o.Height)
				}
			}
		})
	}
}

func TestRunBatch(t *testing.T) {
	h := newHarness(t, 80*gib)
	wf := h.loadSD15LoRA()
	wf["5"].(map[string]any)["inputs"].(map[string]any)["batch_size"] = 3.0
	res, _, err := h.run(context.Background(), "b", wf)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range res.Outputs {
		names = append(names, o.Filename)
	}
	want := []string{"ComfyUI_00001_.png", "ComfyUI_00002_.png", "ComfyUI_00003_.png"}
	if !slices.Equal(names, want) {
		t.Fatalf("files = %v, want %v", names, want)
	}
	a, _ := os.ReadFile(filepath.Join(h.out, "b", want[0]))
	b, _ := os.ReadFile(filepath.Join(h.out, "b", want[1]))
	if bytes.Equal(a, b) {
		t.Error("images of one batch are identical")
	}
}

func TestRunErrors(t *testing.T) {
	h := newHarness(t, 80*gib)
	wf := h.loadSD15LoRA()
	withNode := func(id, class string, inputs map[string]any) map[string]any {
		m := map[string]any{}
		for k, v := range wf {
			m[k] = v
		}
		m[id] = map[string]any{"class_type": class, "inputs": inputs}
		return m
	}
	for _, tc := range []struct {
		name     string
		jobID    string
		wf       map[string]any
		wantCode string
		wantMsg  string
	}{
		{"model not loaded", "e1", withNode("20", "CheckpointLoaderSimple", map[string]any{"ckpt_name": "other.safetensors"}),
			wire.ErrCodeNotLoaded, "checkpoints/other.safetensors"},
		{"unknown node class", "e2", withNode("20", "FancyNode", map[string]any{"x": 1.0}),
			wire.ErrCodeFailed, "unknown node class FancyNode"},
		{"bad graph", "e3", map[string]any{"1": map[string]any{"class_type": "SaveImage", "inputs": map[string]any{"images": []any{"9", 0.0}}}},
			wire.ErrCodeFailed, ""},
		{"unsafe job id", "../x", wf, wire.ErrCodeBadRequest, "job_id"},
		{"prefix escapes", "e4", withNode("9", "SaveImage", map[string]any{"filename_prefix": "../../etc/x", "images": []any{"8", 0.0}}),
			wire.ErrCodeFailed, "leaves the output directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := h.run(context.Background(), tc.jobID, tc.wf)
			if got := errCode(err); got != tc.wantCode || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("Run() error = %v, want code %q containing %q", err, tc.wantCode, tc.wantMsg)
			}
		})
	}
}

func TestRunCancel(t *testing.T) {
	h := newHarness(t, 80*gib)
	wf := h.loadSD15LoRA()
	// A plain fake clock: sleeps block until the test advances it, so the
	// cancel arrives while a step is sleeping.
	h.sim.clock = h.clk
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	var (
		err   error
		mu    sync.Mutex
		steps int
	)
	go func() {
		defer close(done)
		_, err = h.sim.Run(ctx, wire.RunRequest{JobID: "c", Workflow: wf}, func(p wire.Progress) {
			mu.Lock()
			defer mu.Unlock()
			if steps++; steps == 5 {
				cancel()
			}
		})
	}()
	// Advance the clock only while the run has not been cancelled; once it
	// has, Run must return without the clock moving again.
	deadline := time.Now().Add(20 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if h.clk.Waiters() > 0 {
			h.clk.Advance(time.Hour)
		} else {
			runtime.Gosched()
		}
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run() error = %v, want context.Canceled", err)
	}
	if steps != 5 {
		t.Errorf("%d steps reported, want 5", steps)
	}
	if _, err := os.Stat(filepath.Join(h.out, "c")); !os.IsNotExist(err) {
		t.Errorf("a cancelled run wrote outputs: %v", err)
	}
	if st, _ := h.sim.Stats(context.Background()); st.Running != 0 || st.JobsDone != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestCrashAfterJobs(t *testing.T) {
	h := newHarness(t, 80*gib)
	if err := h.sim.configureFromEnv(func(k string) string {
		if k == EnvCrashAfterJobs {
			return "2"
		}
		return ""
	}); err != nil {
		t.Fatal(err)
	}
	var exitCode []int
	h.sim.exit = func(code int) { exitCode = append(exitCode, code) }
	wf := h.loadSD15LoRA()
	if _, _, err := h.run(context.Background(), "ok", wf); err != nil || len(exitCode) != 0 {
		t.Fatalf("first run: %v, exits %v", err, exitCode)
	}
	_, prog, err := h.run(context.Background(), "crash", wf)
	if !errors.Is(err, errCrashed) || !slices.Equal(exitCode, []int{CrashExitCode}) {
		t.Fatalf("second run: %v, exits %v", err, exitCode)
	}
	if len(prog) != 1 {
		t.Errorf("%d progress messages before the crash, want 1", len(prog))
	}

	for _, bad := range []string{"0", "x", "-1"} {
		err := newSim(zerolog.Nop(), h.clk).configureFromEnv(func(string) string { return bad })
		if err == nil {
			t.Errorf("%s=%q accepted", EnvCrashAfterJobs, bad)
		}
	}
}

func TestRenderImage(t *testing.T) {
	for _, tc := range []struct{ w, h int }{{1, 1}, {7, 3}, {512, 512}, {1152, 768}} {
		a, b := renderImage(tc.w, tc.h, 42), renderImage(tc.w, tc.h, 42)
		if !bytes.Equal(a.Pix, b.Pix) || a.Bounds().Dx() != tc.w || a.Bounds().Dy() != tc.h {
			t.Errorf("%d×%d: not deterministic or wrong size", tc.w, tc.h)
		}
	}
	if bytes.Equal(renderImage(64, 64, 1).Pix, renderImage(64, 64, 2).Pix) {
		t.Error("seeds 1 and 2 draw the same image")
	}
}

// The PNG writer's speed is a benchmark, not a timed test: the machine is
// shared and a wall-clock assertion would fail at random.
func BenchmarkWritePNG1024(b *testing.B) {
	dir := b.TempDir()
	for i := 0; b.Loop(); i++ {
		if err := writePNG(filepath.Join(dir, "x.png"), 1024, 1024, uint64(i)); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRunSaveImageWebsocket(t *testing.T) {
	h := newHarness(t, 80*gib)
	wf := h.loadSD15LoRA()
	wf["5"].(map[string]any)["inputs"].(map[string]any)["batch_size"] = 2.0
	wf["9"] = map[string]any{"class_type": "SaveImageWebsocket", "inputs": map[string]any{"images": []any{"8", 0.0}}}
	res, _, err := h.run(context.Background(), "ws-job", wf)
	if err != nil {
		t.Fatal(err)
	}
	want := []wire.Output{
		{Node: "9", Filename: "9_00000.png", Subfolder: "ws-job/.websocket", Type: OutputWebsocket, Width: 512, Height: 512},
		{Node: "9", Filename: "9_00001.png", Subfolder: "ws-job/.websocket", Type: OutputWebsocket, Width: 512, Height: 512},
	}
	if !slices.Equal(res.Outputs, want) {
		t.Fatalf("outputs = %+v, want %+v", res.Outputs, want)
	}
	for _, o := range res.Outputs {
		if w, ht := decodePNG(t, filepath.Join(h.out, filepath.FromSlash(o.Subfolder), o.Filename)); w != 512 || ht != 512 {
			t.Errorf("%s is %d×%d", o.Filename, w, ht)
		}
	}
	// Nothing is saved as an output: the job's folder holds the websocket
	// folder only.
	if entries, _ := os.ReadDir(filepath.Join(h.out, "ws-job")); len(entries) != 1 || entries[0].Name() != ".websocket" {
		t.Errorf("job folder holds %v", entries)
	}
}

func TestPreviewPrefixIsStablePerJob(t *testing.T) {
	a, b, c := previewLettersFor("j1", "38"), previewLettersFor("j1", "38"), previewLettersFor("j2", "38")
	if a != b || len(a) != 5 || a == c {
		t.Errorf("preview letters %q, %q (same job and node), %q (another job)", a, b, c)
	}
	for _, r := range a {
		if !strings.ContainsRune(previewLetters, r) {
			t.Errorf("letter %q is not one of ComfyUI's", r)
		}
	}
}
