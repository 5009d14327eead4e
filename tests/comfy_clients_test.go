package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestComfyClientsEveryWorkflow drives one kiln with two real npm clients,
// unchanged, over every shared workflow kiln can run (examples/workflows,
// a copy of the shared ones; the two whose ImageRequestParameter node is
// part of ComfyUI's test harness are refused, as TestComfyWorkflows checks):
// @saintno/comfyui-sdk (every.mjs: PromptBuilder, CallWrapper, getImage) and
// @stable-canvas/comfyui-client (stablecanvas.mjs: Client.enqueue). The
// third client, the equivalent of ComfyUI's own script examples, is
// TestComfyWorkflows' and TestComfyFidelity's. For every prompt it checks
// what ComfyUI's code would give each client: the WebSocket messages of the
// prompt in ComfyUI's order and of ComfyUI's types only, the images (PNGs,
// the same files /history lists), their names (get_save_image_path's,
// the counter continuing across prompts), and /history in the order the
// prompts finished.
func TestComfyClientsEveryWorkflow(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH; install Node.js ≥ 18 to run the ComfyUI client tests")
	}
	for _, pkg := range []string{"@saintno/comfyui-sdk", "@stable-canvas/comfyui-client"} {
		if _, err := os.Stat("comfyclient/node_modules/" + pkg + "/package.json"); err != nil {
			t.Skipf("tests/comfyclient/node_modules/%s is absent; run `npm ci --prefix tests/comfyclient`", pkg)
		}
	}
	k := startComfyKiln(t)
	files, _ := filepath.Glob("../examples/workflows/*.json")
	dir := t.TempDir()
	graphs := map[string]map[string]any{} // written file → graph
	// write gives each client its own seeds, so that no prompt is a result
	// cache hit of the other client's.
	write := func(client string, base int) []string {
		var out []string
		for i, f := range files {
			raw, _ := os.ReadFile(f)
			if bytes.Contains(raw, []byte(`"ImageRequestParameter"`)) {
				continue
			}
			g := loadWorkflow(t, filepath.Base(f), 2, base+i)
			for _, n := range g {
				in, _ := n.(map[string]any)["inputs"].(map[string]any)
				for _, key := range []string{"seed", "noise_seed"} {
					if _, ok := in[key].(float64); ok {
						in[key] = base + i
					}
				}
			}
			b, _ := json.Marshal(g)
			p := filepath.Join(dir, client+"-"+filepath.Base(f))
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			graphs[p] = g
			out = append(out, p)
		}
		return out
	}
	sdkFiles, canvasFiles := write("sdk", 1000), write("canvas", 2000)
	if len(sdkFiles) < 10 {
		t.Fatalf("only %d runnable workflows in ../examples/workflows", len(sdkFiles))
	}
	run := func(args ...string) []map[string]any {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, args...)
		cmd.Dir = "comfyclient"
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var lines []map[string]any
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				t.Fatalf("%s: not a JSON line: %s", args[0], sc.Text())
			}
			if m["error"] != nil {
				t.Fatalf("%s: %v\nstderr: %s\nkiln: %s", args[0], m, stderr.String(), k.logTail())
			}
			lines = append(lines, m)
		}
		if err != nil {
			t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", args[0], err, out, stderr.String())
		}
		return lines
	}
	// history returns a finished prompt's /history entry's saved images,
	// node → "subfolder/filename" in order, checking their names.
	history := func(t *testing.T, id string, graph map[string]any) map[string][]string {
		entry, _ := k.getJSON("/history/" + id)[id].(map[string]any)
		if entry == nil {
			t.Fatalf("no /history entry for %s", id)
		}
		if st := entry["status"].(map[string]any); st["status_str"] != "success" {
			t.Fatalf("history status %v", st)
		}
		outputs := entry["outputs"].(map[string]any)
		checkFileNames(t, graph, outputs)
		files := map[string][]string{}
		for node, o := range outputs {
			for _, img := range o.(map[string]any)["images"].([]any) {
				im := img.(map[string]any)
				files[node] = append(files[node], im["subfolder"].(string)+"/"+im["filename"].(string))
			}
		}
		return files
	}
	var finished []string // prompt ids in the order the clients saw them end

	t.Run("@saintno/comfyui-sdk", func(t *testing.T) {
		lines := run(append([]string{"every.mjs", k.base}, sdkFiles...)...)
		if len(lines) != len(sdkFiles) {
			t.Fatalf("%d results for %d workflows", len(lines), len(sdkFiles))
		}
		for _, r := range lines {
			file, id := r["file"].(string), r["prompt_id"].(string)
			name := strings.TrimPrefix(filepath.Base(file), "sdk-")
			finished = append(finished, id)
			var msgs []map[string]any
			for _, m := range r["messages"].([]any) {
				msgs = append(msgs, m.(map[string]any))
			}
			checkClientSequence(t, name, msgs)
			want := history(t, id, graphs[file])
			got := map[string][]string{}
			for _, im := range r["images"].([]any) {
				im := im.(map[string]any)
				if im["png"] != true || im["bytes"].(float64) == 0 {
					t.Errorf("%s: image %v is not a PNG", name, im)
				}
				got[im["node"].(string)] = append(got[im["node"].(string)], im["subfolder"].(string)+"/"+im["filename"].(string))
			}
			if len(got) == 0 || !mapsEqual(got, want) {
				t.Errorf("%s: the client got images %v, /history lists %v", name, got, want)
			}
		}
	})

	t.Run("@stable-canvas/comfyui-client", func(t *testing.T) {
		lines := run(append([]string{"stablecanvas.mjs", strings.TrimPrefix(k.base, "http://"), "every-canvas"}, canvasFiles...)...)
		if len(lines) != len(canvasFiles) {
			t.Fatalf("%d results for %d workflows", len(lines), len(canvasFiles))
		}
		for _, r := range lines {
			file, id := r["file"].(string), r["prompt_id"].(string)
			name := strings.TrimPrefix(filepath.Base(file), "canvas-")
			finished = append(finished, id)
			saved := history(t, id, graphs[file])
			// Client.enqueue resolves on the prompt's first executed, with
			// that node's images (in ComfyUI too): one output node's. Previews
			// are off, so every image it gathered is a saved one, by URL: no
			// binary frames.
			var got []string
			for _, im := range r["images"].([]any) {
				im := im.(map[string]any)
				if im["type"] != "url" || im["status"] != 200.0 || im["png"] != true {
					t.Errorf("%s: image %v, want a saved PNG by URL", name, im)
					continue
				}
				u, err := url.Parse(im["url"].(string))
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, u.Query().Get("subfolder")+"/"+u.Query().Get("filename"))
			}
			match := false
			for _, files := range saved {
				match = match || slices.Equal(got, files)
			}
			if len(got) == 0 || !match {
				t.Errorf("%s: the client got images %v, not those of one output node of /history's %v", name, got, saved)
			}
		}
	})

	// /history lists the prompts in the order they finished, oldest first;
	// the clients ran them one at a time, so that is the order they saw.
	if keys := historyKeys(t, k, ""); !slices.Equal(keys, finished) {
		t.Errorf("/history order %v, want the order the prompts finished %v", keys, finished)
	}
	if keys := historyKeys(t, k, "?max_items=3"); !slices.Equal(keys, finished[len(finished)-3:]) {
		t.Errorf("/history?max_items=3 = %v, want the newest three %v", keys, finished[len(finished)-3:])
	}
}

// checkClientSequence checks the messages a client saw for one prompt
// against ComfyUI's order: execution_start, execution_cached, then per node
// its executing before its progress, executed after every executing,
// execution_success, and the closing executing with no node; only
// ComfyUI's message types.
func checkClientSequence(t *testing.T, name string, msgs []map[string]any) {
	t.Helper()
	var ts []string
	for _, m := range msgs {
		ts = append(ts, m["type"].(string))
	}
	known := map[string]bool{"execution_start": true, "execution_cached": true, "executing": true, "progress": true,
		"progress_state": true, "executed": true, "execution_success": true}
	if len(ts) < 5 || ts[0] != "execution_start" || ts[1] != "execution_cached" ||
		ts[len(ts)-2] != "execution_success" || ts[len(ts)-1] != "executing" || msgs[len(msgs)-1]["node"] != nil {
		t.Errorf("%s: sequence %v", name, ts)
		return
	}
	current, executed := "", false
	for _, m := range msgs[2 : len(msgs)-1] {
		typ := m["type"].(string)
		if !known[typ] {
			t.Errorf("%s: message type %q is not one ComfyUI sends for a run: %v", name, typ, ts)
		}
		switch typ {
		case "executing":
			if executed {
				t.Errorf("%s: executing after executed: %v", name, ts)
			}
			current, _ = m["node"].(string)
		case "progress":
			if m["node"] != current {
				t.Errorf("%s: progress of node %v while %q executes", name, m["node"], current)
			}
		case "executed":
			executed = true
		}
	}
	if !executed || !slices.Contains(ts, "progress") {
		t.Errorf("%s: no executed or no progress in %v", name, ts)
	}
}

func mapsEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}
