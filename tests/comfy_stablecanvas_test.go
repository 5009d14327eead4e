package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestComfyClientStableCanvas runs a second real npm client,
// @stable-canvas/comfyui-client 1.5.9, unchanged against kiln. Its
// Client.enqueue gathers every binary frame of a prompt as an image: with
// previews on by default, kiln gave it 21 images for one. Now a SaveImage
// prompt yields its one saved image (a /view URL that answers a PNG), and a
// SaveImageWebsocket prompt yields its images as binary PNG frames and
// nothing else besides the saved images of its SaveImage node.
func TestComfyClientStableCanvas(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH; install Node.js ≥ 18 to run the ComfyUI client test")
	}
	if _, err := os.Stat("comfyclient/node_modules/@stable-canvas/comfyui-client/package.json"); err != nil {
		t.Skip("tests/comfyclient/node_modules/@stable-canvas/comfyui-client is absent; run `npm ci --prefix tests/comfyclient`")
	}
	// The client hooks a prompt's events only once its POST /prompt has
	// answered: frames sent before that are not its prompt's. At
	// startComfyKiln's time scale a prompt runs in ~70 ms, and under a
	// loaded make test the answer reached the client after the first
	// SaveImageWebsocket frame (1 of 2 images). Ten times slower, the
	// images come ~0.7 s after the answer, as they would on a GPU.
	k := startKiln(t, t.TempDir(), "cost.time_scale=0.005", "workers.per_device=1", "comfyui.keepalive=500ms",
		"devices.simulated=[{name: sim-80g, memory_bytes: 85899345920, h2d_bytes_per_s: 25e9, compute_factor: 1}]")
	dir := t.TempDir()
	write := func(name string, g map[string]any) string {
		b, _ := json.Marshal(g)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const steps = 20 // 20 sampler steps: 20 previews if they were on
	saved := write("saved.json", loadWorkflow(t, txt2img, steps, 61))
	// The client's enqueue resolves on the prompt's first "executed": a
	// graph with only a SaveImageWebsocket node sends none (in ComfyUI
	// too), so this one saves as well.
	wsGraph := loadWorkflow(t, "comfyui__script_examples_websockets_api_example.api.json", steps, 62)
	wsGraph[wsNode] = map[string]any{"class_type": "SaveImageWebsocket", "inputs": map[string]any{"images": []any{"8", 0}}}
	wsGraph["5"].(map[string]any)["inputs"].(map[string]any)["batch_size"] = 2
	websocketFile := write("websocket.json", wsGraph)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "stablecanvas.mjs", strings.TrimPrefix(k.base, "http://"), "stable-canvas", saved, websocketFile)
	cmd.Dir = "comfyclient"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("stablecanvas.mjs: %v\nstdout: %s\nstderr: %s", err, out, stderr.String())
	}
	type image struct {
		Type   string `json:"type"`
		Mime   string `json:"mime"`
		URL    string `json:"url"`
		Status int    `json:"status"`
		Bytes  int    `json:"bytes"`
		PNG    bool   `json:"png"`
	}
	var results []struct {
		File     string  `json:"file"`
		PromptID string  `json:"prompt_id"`
		Images   []image `json:"images"`
		Error    string  `json:"error"`
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r struct {
			File     string  `json:"file"`
			PromptID string  `json:"prompt_id"`
			Images   []image `json:"images"`
			Error    string  `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("summary line %q: %v", sc.Text(), err)
		}
		if r.Error != "" {
			t.Fatalf("client error: %s", r.Error)
		}
		results = append(results, r)
	}
	if len(results) != 2 {
		t.Fatalf("%d summaries, want 2: %s", len(results), out)
	}
	if imgs := results[0].Images; len(imgs) != 1 || imgs[0].Type != "url" || imgs[0].Status != 200 || !imgs[0].PNG {
		t.Errorf("SaveImage prompt: images %+v, want its one saved PNG by URL", imgs)
	}
	var frames, urls int
	for _, im := range results[1].Images {
		switch {
		case im.Type == "buff" && im.PNG && im.Mime == "image/png":
			frames++
		case im.Type == "url" && im.Status == 200 && im.PNG:
			urls++
		default:
			t.Errorf("SaveImageWebsocket prompt: image %+v", im)
		}
	}
	if frames != 2 || urls != 2 {
		t.Errorf("SaveImageWebsocket prompt: %d binary images and %d saved, want 2 and 2 (its batch, each both ways)", frames, urls)
	}
}
