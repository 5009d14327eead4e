package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// comfyClientSummary is what tests/comfyclient/run.mjs prints.
type comfyClientSummary struct {
	ClientID       string           `json:"client_id"`
	PromptID       string           `json:"prompt_id"`
	Pending        bool             `json:"pending"`
	Started        bool             `json:"started"`
	Progress       []comfyProgress  `json:"progress"`
	SocketProgress []comfyProgress  `json:"socket_progress"`
	Events         []string         `json:"events"`
	Outputs        *json.RawMessage `json:"outputs"`
	Image          *struct {
		Filename    string `json:"filename"`
		Type        string `json:"type"`
		Status      int    `json:"status"`
		ContentType string `json:"content_type"`
		Bytes       int    `json:"bytes"`
	} `json:"image"`
	Error *string `json:"error"`
}

type comfyProgress struct {
	Value int    `json:"value"`
	Max   int    `json:"max"`
	Node  string `json:"node"`
}

// TestComfyClientSDK runs the real npm client, @saintno/comfyui-sdk 0.3.1,
// unchanged against kiln: ComfyApi connects, a CallWrapper queues a txt2img
// workflow and follows it over the WebSocket, and the image comes back
// through /view as a PNG. .ci/run installs the client with
// `npm ci --prefix tests/comfyclient`; without node or the package the test
// skips, saying so.
func TestComfyClientSDK(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH; install Node.js ≥ 18 to run the ComfyUI client test")
	}
	if _, err := os.Stat("comfyclient/node_modules/@saintno/comfyui-sdk/package.json"); err != nil {
		t.Skip("tests/comfyclient/node_modules/@saintno/comfyui-sdk is absent; run `npm ci --prefix tests/comfyclient`")
	}
	// Slow enough that the sampler's steps reach the client as separate
	// progress frames, fast enough for a short test.
	k := startKiln(t, t.TempDir(), "cost.time_scale=0.02", "workers.per_device=1",
		"devices.simulated=[{name: sim-80g, memory_bytes: 85899345920, h2d_bytes_per_s: 25e9, compute_factor: 1}]")
	const steps = 6
	out := filepath.Join(t.TempDir(), "out.png")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "comfyclient/run.mjs", "--host", k.base,
		"--workflow", "../examples/workflows/salad-comfyui-api__sd1.5-txt2img.api.json",
		"--steps", "6", "--seed", "4242", "--out", out, "--timeout", "60000")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var sum comfyClientSummary
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &sum); err != nil {
		t.Fatalf("run.mjs: %v; no JSON summary (%v)\nstdout: %s\nstderr: %s\nkiln: %s", runErr, err, stdout.String(), stderr.String(), k.logTail())
	}
	if runErr != nil || sum.Error != nil {
		t.Fatalf("run.mjs: %v: %s\nstderr: %s", runErr, stdout.String(), stderr.String())
	}
	t.Logf("client summary: %s", stdout.String())

	if !sum.Pending || sum.PromptID == "" || sum.ClientID == "" {
		t.Errorf("the client was not told of its prompt: pending=%v prompt_id=%q client_id=%q", sum.Pending, sum.PromptID, sum.ClientID)
	}
	// Every sampler step reaches the socket, in order, with the sampler's
	// node id; the CallWrapper saw at least some of them.
	if len(sum.SocketProgress) != steps {
		t.Errorf("socket progress events = %d, want %d: %+v", len(sum.SocketProgress), steps, sum.SocketProgress)
	}
	for i, p := range sum.SocketProgress {
		if p.Value != i+1 || p.Max != steps || p.Node != "3" {
			t.Errorf("progress[%d] = %+v, want {%d %d 3}", i, p, i+1, steps)
		}
	}
	if len(sum.Progress) == 0 || !sum.Started {
		t.Errorf("the CallWrapper reported no progress (started=%v): %+v", sum.Started, sum.Progress)
	}
	for _, want := range []string{"execution_start", "execution_cached", "executing", "progress", "executed", "execution_success"} {
		if !contains(sum.Events, want) {
			t.Errorf("the client got no %s event: %v", want, sum.Events)
		}
	}

	// The image came back through the SDK's /view call and decodes as PNG.
	if sum.Image == nil || sum.Image.Status != 200 || sum.Image.ContentType != "image/png" || sum.Image.Type != "output" {
		t.Fatalf("image answer %+v, want 200 image/png of type output", sum.Image)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != sum.Image.Bytes {
		t.Errorf("image on disk is %d bytes, the client read %d", len(data), sum.Image.Bytes)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("the image is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() == 0 || b.Dy() == 0 {
		t.Errorf("empty image %v", b)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
