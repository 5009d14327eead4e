package tests

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image/png"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The tests in this file check kiln against what ComfyUI's own code sends
// (server.py, execution.py, comfy_execution/progress.py, nodes.py and
// custom_nodes/websocket_image_save.py), one behaviour of issue 17 at a time:
// SaveImageWebsocket's binary frames, /history's order and window, SaveImage's
// file counter, progress_state messages and the PNG metadata.

// wsNode is the node id that ComfyUI's
// script_examples/websockets_api_example_ws_images.py gives its
// SaveImageWebsocket node and watches for.
const wsNode = "save_image_websocket_node"

// followPrompt reads ws up to the prompt's closing executing {node: null},
// as ComfyUI's websocket script examples do: it keeps the binary frames that
// arrive while the prompt's current node (its last "executing") is watch,
// every text message of the prompt and every binary frame.
func followPrompt(t *testing.T, ws *rawWS, id, watch string) (watched [][]byte, texts []map[string]any, binaries int) {
	t.Helper()
	current := ""
	for {
		f := ws.next(t)
		if f.binary {
			binaries++
			if current == watch {
				watched = append(watched, f.data)
			}
			continue
		}
		typ, d, _ := f.text()
		if d["prompt_id"] != id {
			continue
		}
		texts = append(texts, map[string]any{"type": typ, "data": d})
		switch typ {
		case "execution_error":
			t.Fatalf("execution_error: %v", d)
		case "executing":
			if d["node"] == nil {
				return watched, texts, binaries
			}
			current, _ = d["node"].(string)
		}
	}
}

// historyKeys returns /history's prompt ids in the order of the JSON object.
func historyKeys(t *testing.T, k *kilnProc, query string) []string {
	t.Helper()
	code, body := k.do("GET", "/history"+query, nil)
	if code != 200 {
		t.Fatalf("GET /history%s: %d %s", query, code, body)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("/history%s is not an object: %s", query, body)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// pngText returns a PNG's tEXt chunks, keyword → text, checking each CRC.
func pngText(t *testing.T, data []byte) map[string]string {
	t.Helper()
	if !bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatal("not a PNG")
	}
	out := map[string]string{}
	for p := 8; p+12 <= len(data); {
		n := int(binary.BigEndian.Uint32(data[p:]))
		typ := string(data[p+4 : p+8])
		if p+12+n > len(data) {
			t.Fatalf("chunk %s runs past the end", typ)
		}
		body := data[p+8 : p+8+n]
		if crc32.ChecksumIEEE(data[p+4:p+8+n]) != binary.BigEndian.Uint32(data[p+8+n:]) {
			t.Fatalf("chunk %s: bad CRC", typ)
		}
		if typ == "tEXt" {
			key, text, _ := bytes.Cut(body, []byte{0})
			out[string(key)] = string(text)
		}
		p += 12 + n
	}
	return out
}

func TestComfyFidelity(t *testing.T) {
	k := startComfyKiln(t)
	ws := dialRawWS(t, k, "fidelity")
	if typ, _, _ := ws.next(t).text(); typ != "status" {
		t.Fatalf("first frame %s, want status", typ)
	}
	queue := func(t *testing.T, req map[string]any) string {
		t.Helper()
		req["client_id"] = "fidelity"
		code, ans := k.postJSON("/prompt", req)
		if code != 200 {
			t.Fatalf("/prompt: %d %v", code, ans)
		}
		return ans["prompt_id"].(string)
	}

	t.Run("SaveImageWebsocket sends each image as a binary frame", func(t *testing.T) {
		info := k.getJSON("/object_info/SaveImageWebsocket")["SaveImageWebsocket"].(map[string]any)
		if info["output_node"] != true {
			t.Errorf("object_info: %v", info)
		}
		// websockets_api_example_ws_images.py: the example graph with its
		// SaveImage replaced by a SaveImageWebsocket node.
		g := loadWorkflow(t, "comfyui__script_examples_websockets_api_example.api.json", 2, 11)
		delete(g, "9")
		g[wsNode] = map[string]any{"class_type": "SaveImageWebsocket", "inputs": map[string]any{"images": []any{"8", 0}}}
		g["5"].(map[string]any)["inputs"].(map[string]any)["batch_size"] = 2
		for run := range 2 { // the same graph again runs again: no result-cache hit, frames again
			id := queue(t, map[string]any{"prompt": g})
			frames, texts, binaries := followPrompt(t, ws, id, wsNode)
			if len(frames) != 2 || binaries != 2 {
				t.Fatalf("run %d: %d frames while %s executed, %d binary frames in all; want 2 and 2 (previews are off)", run, len(frames), wsNode, binaries)
			}
			for i, f := range frames {
				p := parsePreview(t, f)
				if p.typ != 1 || p.format != 2 {
					t.Errorf("frame %d: type %d format %d, want 1 and 2 (PNG)", i, p.typ, p.format)
				}
				img, err := png.Decode(bytes.NewReader(p.image))
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if b := img.Bounds(); b.Dx() != 512 || b.Dy() != 512 {
					t.Errorf("frame %d: %v, want the full 512×512 image", i, b)
				}
			}
			for _, m := range texts {
				if m["type"] == "executed" && m["data"].(map[string]any)["node"] == wsNode {
					t.Errorf("executed for %s; its node returns no ui", wsNode)
				}
			}
			entry := k.getJSON("/history/" + id)[id].(map[string]any)
			if outs := entry["outputs"].(map[string]any); len(outs) != 0 {
				t.Errorf("history outputs %v, want none", outs)
			}
			if _, err := os.Stat(filepath.Join(k.dataDir, "output", id, ".websocket")); !os.IsNotExist(err) {
				t.Errorf("the websocket images of %s are still on disk: %v", id, err)
			}
		}
		var bad map[string]any
		code, body := k.do("POST", "/prompt", []byte(`{"prompt": {"1": {"class_type": "SaveImageWebsocket", "inputs": {}}}}`))
		if json.Unmarshal(body, &bad); code != 400 || !strings.Contains(string(body), "required_input_missing") {
			t.Errorf("SaveImageWebsocket without images: %d %s", code, body)
		}
	})

	t.Run("progress_state", func(t *testing.T) {
		// A second client: ComfyUI's WebUIProgressHandler sends
		// progress_state with the server's client_id, to the prompt's
		// client only.
		other := dialWS(t, k, "bystander")
		id := queue(t, map[string]any{"prompt": loadWorkflow(t, txt2img, 2, 21)})
		_, texts, _ := followPrompt(t, ws, id, "")
		// The bystander's status after the prompt ends (queue empty again,
		// after one that counted it) comes after anything sent for it.
		busy, deadline := false, time.After(30*time.Second)
	bystander:
		for {
			select {
			case m, ok := <-other.msgs:
				if !ok {
					t.Fatal("the bystander's socket closed")
				}
				d, _ := m["data"].(map[string]any)
				switch m["type"] {
				case "status":
					n := d["status"].(map[string]any)["exec_info"].(map[string]any)["queue_remaining"].(float64)
					if n > 0 {
						busy = true
					} else if busy {
						break bystander
					}
				case "progress_state":
					if d["prompt_id"] == id {
						t.Fatalf("progress_state of %s reached another client", id)
					}
				}
			case <-deadline:
				t.Fatal("the bystander saw no status after the prompt")
			}
		}
		// Per node: progress_state with it running (value 0, max 1) before
		// its executing; running with value/max at each step; finished
		// (value = max) once the next node starts and at the end.
		started := map[string]bool{}
		finished := map[string]bool{}
		steps := 0
		var final map[string]any
		for i, m := range texts {
			d := m["data"].(map[string]any)
			switch m["type"] {
			case "progress_state":
				final = d["nodes"].(map[string]any)
				for nid, v := range final {
					n := v.(map[string]any)
					for _, key := range []string{"node_id", "display_node_id", "real_node_id"} {
						if n[key] != nid {
							t.Fatalf("progress_state node %s: %s = %v", nid, key, n[key])
						}
					}
					if n["prompt_id"] != id || n["parent_node_id"] != nil {
						t.Fatalf("progress_state node %s: %v", nid, n)
					}
					if n["state"] == "finished" {
						finished[nid] = true
						if n["value"] != n["max"] {
							t.Errorf("finished node %s: value %v max %v", nid, n["value"], n["max"])
						}
					}
				}
			case "executing":
				node := d["node"]
				if node == nil {
					continue
				}
				prev := texts[i-1]
				pn, _ := prev["data"].(map[string]any)["nodes"].(map[string]any)[node.(string)].(map[string]any)
				if prev["type"] != "progress_state" || pn["state"] != "running" || pn["value"] != 0.0 || pn["max"] != 1.0 {
					t.Errorf("executing %v after %v; want progress_state with the node running at 0/1", node, prev)
				}
				started[node.(string)] = true
			case "progress":
				steps++
				prev := texts[i-1]
				pn, _ := prev["data"].(map[string]any)["nodes"].(map[string]any)[d["node"].(string)].(map[string]any)
				if prev["type"] != "progress_state" || pn["value"] != d["value"] || pn["max"] != d["max"] {
					t.Errorf("progress %v after %v; want progress_state with the same value", d, prev)
				}
			}
		}
		if steps != 2 || len(started) == 0 || !reflect.DeepEqual(started, finished) || len(final) != len(started) {
			t.Errorf("%d steps, started %v, finished %v, last progress_state %v", steps, started, finished, final)
		}
	})

	var runs []string // prompts of the history subtest, in the order they finished
	t.Run("SaveImage counter continues across prompts", func(t *testing.T) {
		seen := map[string]bool{}
		last := 0
		// Ids chosen so that their order is not the order they run in.
		for i, id := range []string{"c-first", "b-second", "a-third"} {
			queue(t, map[string]any{"prompt": loadWorkflow(t, txt2img, 2, 31+i), "prompt_id": id})
			followPrompt(t, ws, id, "")
			runs = append(runs, id)
			images := k.getJSON("/history/" + id)[id].(map[string]any)["outputs"].(map[string]any)["9"].(map[string]any)["images"].([]any)
			for _, im := range images {
				img := im.(map[string]any)
				name := img["filename"].(string)
				var n int
				if _, err := fmt.Sscanf(name, "ComfyUI_%05d_.png", &n); err != nil || img["subfolder"] != "" || seen[name] {
					t.Fatalf("%s: image %v; want ComfyUI_NNNNN_.png in the output folder itself, a new name", id, img)
				}
				if n <= last {
					t.Errorf("%s: counter %d after %d", id, n, last)
				}
				seen[name], last = true, n
			}
		}
	})

	t.Run("history in the order prompts finished", func(t *testing.T) {
		// A result-cache hit of the first prompt finishes last and gets a
		// number of its own.
		hit := queue(t, map[string]any{"prompt": loadWorkflow(t, txt2img, 2, 31), "prompt_id": "0-hit"})
		followPrompt(t, ws, hit, "")
		order := append(append([]string{}, runs...), hit)
		all := historyKeys(t, k, "")
		if n := len(all); n < 4 || !reflect.DeepEqual(all[n-4:], order) {
			t.Fatalf("/history order %v, want it to end with %v", all, order)
		}
		n := len(all)
		for _, tc := range []struct {
			query string
			want  []string
		}{
			{"?max_items=3", all[n-3:]},
			{"?max_items=1", all[n-1:]},
			{fmt.Sprintf("?offset=%d", n-2), all[n-2:]},
			{"?offset=1&max_items=2", all[1:3]},
			{"?max_items=0", nil},
			{fmt.Sprintf("?offset=%d", n+5), nil},
		} {
			if got := historyKeys(t, k, tc.query); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("/history%s = %v, want %v", tc.query, got, tc.want)
			}
		}
		for _, q := range []string{"?max_items=x", "?offset=1.5", "?max_items=-1"} {
			code, body := k.do("GET", "/history"+q, nil)
			checkJSONError(t, "application/json", body)
			if code != 400 {
				t.Errorf("/history%s: %d, want 400", q, code)
			}
		}
		numbers := map[float64]string{}
		for id, e := range k.getJSON("/history") {
			num := e.(map[string]any)["prompt"].([]any)[0].(float64)
			if other, dup := numbers[num]; dup {
				t.Errorf("%s and %s share number %v", id, other, num)
			}
			numbers[num] = id
		}
	})

	t.Run("outpaint with core nodes", func(t *testing.T) {
		info := k.getJSON("/object_info/VAEEncodeForInpaint")["VAEEncodeForInpaint"].(map[string]any)
		if info["display_name"] != "VAE Encode (for Inpainting)" {
			t.Errorf("VAEEncodeForInpaint display_name %v", info["display_name"])
		}
		g := loadWorkflow(t, "comfyui__tests_inference_workflows_sd-1.5-lora-0.api.json", 2, 51)
		g["20"] = map[string]any{"class_type": "EmptyImage", "inputs": map[string]any{"width": 512, "height": 512, "batch_size": 1, "color": 0}}
		g["21"] = map[string]any{"class_type": "ImagePadForOutpaint", "inputs": map[string]any{"image": []any{"20", 0},
			"left": 64, "top": 0, "right": 64, "bottom": 128, "feathering": 40}}
		g["22"] = map[string]any{"class_type": "VAEEncodeForInpaint", "inputs": map[string]any{"pixels": []any{"21", 0},
			"vae": []any{"4", 2}, "mask": []any{"21", 1}, "grow_mask_by": 6}}
		g["3"].(map[string]any)["inputs"].(map[string]any)["latent_image"] = []any{"22", 0}
		id := queue(t, map[string]any{"prompt": g})
		followPrompt(t, ws, id, "")
		img := k.getJSON("/history/" + id)[id].(map[string]any)["outputs"].(map[string]any)["9"].(map[string]any)["images"].([]any)[0].(map[string]any)
		_, _, data := view(t, k, url.Values{"filename": {img["filename"].(string)}, "type": {"output"}})
		cfg, err := png.DecodeConfig(bytes.NewReader(data))
		if err != nil || cfg.Width != 640 || cfg.Height != 640 {
			t.Errorf("outpainted image %d×%d (%v), want 640×640", cfg.Width, cfg.Height, err)
		}
	})

	t.Run("SaveLatent", func(t *testing.T) {
		g := loadWorkflow(t, "comfyui__tests_inference_workflows_sd-1.5-lora-0.api.json", 2, 71)
		g["9"] = map[string]any{"class_type": "SaveLatent", "inputs": map[string]any{"samples": []any{"3", 0}, "filename_prefix": "latents/ComfyUI"}}
		delete(g, "8")
		for range 2 {
			id := queue(t, map[string]any{"prompt": g})
			_, texts, _ := followPrompt(t, ws, id, "")
			out := k.getJSON("/history/" + id)[id].(map[string]any)["outputs"].(map[string]any)["9"].(map[string]any)
			latents, _ := out["latents"].([]any)
			if len(latents) != 1 || out["images"] != nil {
				t.Fatalf("SaveLatent output %v, want one entry under latents, as ComfyUI's ui", out)
			}
			f := latents[0].(map[string]any)
			if f["subfolder"] != "latents" || !strings.HasPrefix(f["filename"].(string), "ComfyUI_") || !strings.HasSuffix(f["filename"].(string), "_.latent") {
				t.Errorf("latent file %v", f)
			}
			// ComfyUI's SaveLatent puts the prompt in the safetensors
			// header's __metadata__.
			data, err := os.ReadFile(filepath.Join(k.dataDir, "output", "latents", f["filename"].(string)))
			if err != nil || len(data) < 8 {
				t.Fatalf("latent file: %v", err)
			}
			n := binary.LittleEndian.Uint64(data[:8])
			var header struct {
				Meta map[string]string `json:"__metadata__"`
			}
			var prompt map[string]any
			if n > uint64(len(data)-8) || json.Unmarshal(data[8:8+n], &header) != nil || json.Unmarshal([]byte(header.Meta["prompt"]), &prompt) != nil || prompt["9"] == nil {
				t.Errorf("latent header has no prompt metadata: %q", data[8:min(8+n, uint64(len(data)))])
			}
			for _, m := range texts {
				if m["type"] == "executed" {
					if _, ok := m["data"].(map[string]any)["output"].(map[string]any)["latents"]; !ok {
						t.Errorf("executed %v has no latents", m["data"])
					}
				}
			}
			g["3"].(map[string]any)["inputs"].(map[string]any)["seed"] = 72 // the second run is not a cache hit
		}
		entries, _ := os.ReadDir(filepath.Join(k.dataDir, "output", "latents"))
		if len(entries) != 2 {
			t.Errorf("latents folder holds %d files after two prompts, want 2 (the counter continues)", len(entries))
		}
	})

	t.Run("PNG metadata", func(t *testing.T) {
		g := loadWorkflow(t, txt2img, 2, 41)
		workflow := map[string]any{"last_node_id": 9, "nodes": []any{map[string]any{"id": 9, "type": "SaveImage"}}}
		id := queue(t, map[string]any{"prompt": g, "extra_data": map[string]any{"extra_pnginfo": map[string]any{"workflow": workflow}}})
		followPrompt(t, ws, id, "")
		img := k.getJSON("/history/" + id)[id].(map[string]any)["outputs"].(map[string]any)["9"].(map[string]any)["images"].([]any)[0].(map[string]any)
		code, _, data := view(t, k, url.Values{"filename": {img["filename"].(string)}, "subfolder": {img["subfolder"].(string)}, "type": {"output"}})
		if code != 200 {
			t.Fatalf("/view: %d", code)
		}
		text := pngText(t, data)
		var gotPrompt, gotWorkflow any
		if err := json.Unmarshal([]byte(text["prompt"]), &gotPrompt); err != nil {
			t.Fatalf("prompt chunk %q: %v", text["prompt"], err)
		}
		if err := json.Unmarshal([]byte(text["workflow"]), &gotWorkflow); err != nil {
			t.Fatalf("workflow chunk %q: %v", text["workflow"], err)
		}
		wantPrompt, wantWorkflow := roundTrip(t, g), roundTrip(t, workflow)
		if !reflect.DeepEqual(gotPrompt, wantPrompt) || !reflect.DeepEqual(gotWorkflow, wantWorkflow) {
			t.Errorf("tEXt prompt %v workflow %v; want %v and %v", gotPrompt, gotWorkflow, wantPrompt, wantWorkflow)
		}
		if _, err := png.Decode(bytes.NewReader(data)); err != nil {
			t.Errorf("the PNG with metadata does not decode: %v", err)
		}
		// A prompt without extra_pnginfo gets the prompt chunk only.
		id = queue(t, map[string]any{"prompt": loadWorkflow(t, txt2img, 2, 42)})
		followPrompt(t, ws, id, "")
		img = k.getJSON("/history/" + id)[id].(map[string]any)["outputs"].(map[string]any)["9"].(map[string]any)["images"].([]any)[0].(map[string]any)
		_, _, data = view(t, k, url.Values{"filename": {img["filename"].(string)}, "type": {"output"}})
		if text := pngText(t, data); text["prompt"] == "" || len(text) != 1 {
			t.Errorf("tEXt chunks %v, want prompt only", keysOf(text))
		}
	})
}

func roundTrip(t *testing.T, v any) any {
	t.Helper()
	b, _ := json.Marshal(v)
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
