package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The tests in this file cover the ComfyUI routes one behaviour at a time
// against a real `kiln serve`: file routes (/view, /upload/image), the
// queue and history routes, /interrupt, /free, the result cache, the /api/
// aliases, the informational routes, and the error bodies.

const txt2img = "salad-comfyui-api__sd1.5-txt2img.api.json"

// startComfyRoutesKiln starts a kiln with one simulated GPU and one worker,
// so that a long prompt keeps the others pending.
func startComfyRoutesKiln(t *testing.T, timeScale string, sets ...string) (*kilnProc, string) {
	t.Helper()
	dataDir := filepath.Join(t.TempDir(), "data")
	sets = append([]string{"cost.time_scale=" + timeScale, "workers.per_device=1", "comfyui.keepalive=500ms",
		"devices.simulated=[{name: sim-80g, memory_bytes: 85899345920, h2d_bytes_per_s: 25e9, compute_factor: 1}]"}, sets...)
	return startKiln(t, dataDir, sets...), dataDir
}

// runPrompt submits a graph through /prompt and waits for its
// execution_success on ws; it returns the prompt id and its messages.
func runPrompt(t *testing.T, k *kilnProc, ws *wsClient, clientID string, graph map[string]any) (string, []map[string]any) {
	t.Helper()
	code, ans := k.postJSON("/prompt", map[string]any{"prompt": graph, "client_id": clientID})
	if code != 200 {
		t.Fatalf("/prompt: %d %v", code, ans)
	}
	id, _ := ans["prompt_id"].(string)
	msgs := ws.until(t, id, "execution_success")
	ws.until(t, id, "executing") // the closing executing {node: null}
	return id, msgs
}

// uploadImage posts a multipart form to path; fields go in as form values.
func uploadImage(t *testing.T, k *kilnProc, path, filename string, data []byte, fields map[string]string) (int, map[string]any) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for name, v := range fields {
		if err := mw.WriteField(name, v); err != nil {
			t.Fatal(err)
		}
	}
	fw, err := mw.CreateFormFile("image", filename)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(data)
	mw.Close()
	resp, err := http.Post(k.base+path, mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// view fetches /view with the given query.
func view(t *testing.T, k *kilnProc, q url.Values) (int, string, []byte) {
	t.Helper()
	resp, err := http.Get(k.base + "/view?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), buf.Bytes()
}

// workersJobsDone is how many jobs the workers ran, and their resident models.
func workersJobsDone(t *testing.T, k *kilnProc) (done int, resident int) {
	t.Helper()
	_, data := k.do("GET", "/v1/workers", nil)
	var out struct {
		Workers []struct {
			JobsDone int              `json:"jobs_done"`
			Resident map[string]int64 `json:"resident"`
		} `json:"workers"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("/v1/workers: %v: %s", err, data)
	}
	for _, w := range out.Workers {
		done += w.JobsDone
		resident += len(w.Resident)
	}
	return done, resident
}

// renumber gives every node of a graph a new id, links included.
func renumber(graph map[string]any, prefix string) map[string]any {
	out := map[string]any{}
	for id, n := range graph {
		node := n.(map[string]any)
		inputs := map[string]any{}
		for name, v := range node["inputs"].(map[string]any) {
			if arr, ok := v.([]any); ok && len(arr) == 2 {
				if src, ok := arr[0].(string); ok {
					v = []any{prefix + src, arr[1]}
				}
			}
			inputs[name] = v
		}
		out[prefix+id] = map[string]any{"class_type": node["class_type"], "inputs": inputs}
	}
	return out
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func toStrings(v any) []string {
	arr, _ := v.([]any)
	out := []string{}
	for _, x := range arr {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

// TestComfyRoutes runs one kiln through every ComfyUI route that needs no
// long-running prompt.
func TestComfyRoutes(t *testing.T) {
	k, dataDir := startComfyRoutesKiln(t, "0.001")
	ws := dialWS(t, k, "routes-client")
	firstID, _ := runPrompt(t, k, ws, "routes-client", loadWorkflow(t, txt2img, 2, 11))
	first := k.getJSON("/history/" + firstID)[firstID].(map[string]any)
	firstImage := first["outputs"].(map[string]any)["9"].(map[string]any)["images"].([]any)[0].(map[string]any)
	// The uploads below are this run's PNG.
	code, _, samplePNG := view(t, k, url.Values{"filename": {firstImage["filename"].(string)},
		"subfolder": {firstImage["subfolder"].(string)}, "type": {"output"}})
	if code != 200 {
		t.Fatalf("/view of the first output: %d", code)
	}

	t.Run("view", func(t *testing.T) {
		// Outputs are in the output folder itself (SaveImage's prefix has
		// no folder), so the directory case gets one of its own.
		if err := os.MkdirAll(filepath.Join(dataDir, "output", "a-folder"), 0o755); err != nil {
			t.Fatal(err)
		}
		out := url.Values{"filename": {firstImage["filename"].(string)}, "subfolder": {firstImage["subfolder"].(string)}, "type": {"output"}}
		for _, tc := range []struct {
			name  string
			query url.Values
			want  int
		}{
			{"output", out, 200},
			{"output without type", url.Values{"filename": out["filename"], "subfolder": out["subfolder"]}, 200},
			{"bad type", url.Values{"filename": out["filename"], "subfolder": out["subfolder"], "type": {"models"}}, 400},
			{"no filename", url.Values{"type": {"output"}}, 400},
			{"filename with a slash", url.Values{"filename": {"../" + firstImage["filename"].(string)}, "type": {"output"}}, 400},
			{"filename dot dot", url.Values{"filename": {".."}, "type": {"output"}}, 400},
			{"subfolder escapes", url.Values{"filename": {"passwd"}, "subfolder": {"../../../../etc"}, "type": {"output"}}, 403},
			{"subfolder escapes after a folder", url.Values{"filename": out["filename"], "subfolder": {firstImage["subfolder"].(string) + "/../../.."}, "type": {"output"}}, 403},
			{"input subfolder escapes", url.Values{"filename": {"x.png"}, "subfolder": {".."}, "type": {"input"}}, 403},
			// An absolute subfolder is taken below the output directory.
			{"absolute subfolder stays inside", url.Values{"filename": {"passwd"}, "subfolder": {"/etc"}, "type": {"output"}}, 404},
			{"missing file", url.Values{"filename": {"nope_00001_.png"}, "subfolder": out["subfolder"], "type": {"output"}}, 404},
			{"missing input", url.Values{"filename": {"nope.png"}, "type": {"input"}}, 404},
			{"a directory", url.Values{"filename": {"a-folder"}, "type": {"output"}}, 404},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, ct, data := view(t, k, tc.query)
				if code != tc.want {
					t.Fatalf("/view?%s = %d %s, want %d", tc.query.Encode(), code, data, tc.want)
				}
				if code == 200 {
					if ct != "image/png" {
						t.Errorf("Content-Type %q, want image/png", ct)
					}
					if _, err := png.Decode(bytes.NewReader(data)); err != nil {
						t.Errorf("not a PNG: %v", err)
					}
					return
				}
				checkJSONError(t, ct, data)
			})
		}
	})

	t.Run("upload", func(t *testing.T) {
		img := samplePNG
		other := append([]byte(nil), img...)
		other = append(other, 0) // a different file that still starts as a PNG
		// In order: each step sees the files the previous ones wrote.
		for _, tc := range []struct {
			name     string
			path     string
			filename string
			data     []byte
			fields   map[string]string
			want     int
			wantName string
			wantSub  string
			wantType string
		}{
			{name: "new", path: "/upload/image", filename: "cat.png", data: img, want: 200, wantName: "cat.png", wantType: "input"},
			{name: "same name is renamed", path: "/upload/image", filename: "cat.png", data: img, want: 200, wantName: "cat (1).png", wantType: "input"},
			{name: "renamed again", path: "/upload/image", filename: "cat.png", data: img, fields: map[string]string{"overwrite": "false"}, want: 200, wantName: "cat (2).png", wantType: "input"},
			{name: "overwrite", path: "/upload/image", filename: "cat.png", data: other, fields: map[string]string{"overwrite": "true"}, want: 200, wantName: "cat.png", wantType: "input"},
			{name: "subfolder", path: "/upload/image", filename: "cat.png", data: img, fields: map[string]string{"subfolder": "pets/2024"}, want: 200, wantName: "cat.png", wantSub: "pets/2024", wantType: "input"},
			{name: "temp", path: "/upload/image", filename: "dog.png", data: img, fields: map[string]string{"type": "temp"}, want: 200, wantName: "dog.png", wantType: "temp"},
			{name: "api alias", path: "/api/upload/image", filename: "api.png", data: img, want: 200, wantName: "api.png", wantType: "input"},
			// The multipart reader keeps the last path element of a
			// file name: the file lands inside the input directory.
			{name: "file name with a path", path: "/upload/image", filename: "../../evil.png", data: img, want: 200, wantName: "evil.png", wantType: "input"},
			{name: "subfolder escapes", path: "/upload/image", filename: "escape.png", data: img, fields: map[string]string{"subfolder": "../../escape"}, want: 403},
			{name: "file name dot dot", path: "/upload/image", filename: "..", data: img, want: 400},
			{name: "file name with a backslash", path: "/upload/image", filename: `..\evil.png`, data: img, want: 400},
			{name: "bad type", path: "/upload/image", filename: "cat.png", data: img, fields: map[string]string{"type": "models"}, want: 400},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, ans := uploadImage(t, k, tc.path, tc.filename, tc.data, tc.fields)
				if code != tc.want {
					t.Fatalf("upload %q %v = %d %v, want %d", tc.filename, tc.fields, code, ans, tc.want)
				}
				if code != 200 {
					if e, _ := ans["error"].(map[string]any); e["type"] == nil {
						t.Errorf("error body %v", ans)
					}
					return
				}
				want := map[string]any{"name": tc.wantName, "subfolder": tc.wantSub, "type": tc.wantType}
				if !reflect.DeepEqual(ans, want) {
					t.Fatalf("answer %v, want %v", ans, want)
				}
				// What /upload/image names, /view serves, byte for byte.
				code, _, data := view(t, k, url.Values{"filename": {tc.wantName}, "subfolder": {tc.wantSub}, "type": {tc.wantType}})
				if code != 200 || !bytes.Equal(data, tc.data) {
					t.Errorf("/view of the upload: %d, %d bytes (want %d)", code, len(data), len(tc.data))
				}
			})
		}
		// Nothing was written outside the data directory.
		for _, p := range []string{filepath.Join(dataDir, "..", "escape"), filepath.Join(dataDir, "..", "evil.png"), filepath.Join(dataDir, "evil.png")} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s exists: an upload left its directory", p)
			}
		}
		// Uploaded images are LoadImage's choices.
		info := k.getJSON("/object_info/LoadImage")
		if s := fmt.Sprint(info); !strings.Contains(s, "cat (1).png") || !strings.Contains(s, "pets/2024/cat.png") {
			t.Errorf("/object_info/LoadImage does not list the uploads: %s", s)
		}
		// LoadImageOutput and LoadImage name files by ComfyUI's annotation
		// ("[output]", "[input]", "[temp]", none: input): the temp upload
		// dog.png lies in the output folder, cat.png only in the input one.
		node := func(class, image string) map[string]any {
			return map[string]any{"class_type": class, "inputs": map[string]any{"image": image}}
		}
		preview := func(id string) map[string]any {
			return map[string]any{"class_type": "PreviewImage", "inputs": map[string]any{"images": []any{id, 0}}}
		}
		runPrompt(t, k, ws, "routes-client", map[string]any{"1": node("LoadImageOutput", "dog.png [output]"),
			"2": node("LoadImage", "pets/2024/cat.png"), "3": preview("1"), "4": preview("2")})
		for _, image := range []string{"cat.png [output]", "dog.png"} {
			code, ans := k.postJSON("/prompt", map[string]any{"prompt": map[string]any{"1": node("LoadImageOutput", image), "2": preview("1")}})
			if code != 400 || !strings.Contains(fmt.Sprint(ans["node_errors"]), "value_not_in_list") {
				t.Errorf("LoadImageOutput %q: %d %v, want value_not_in_list", image, code, ans)
			}
		}
	})

	t.Run("info routes", func(t *testing.T) {
		for _, tc := range []struct {
			path  string
			check func(t *testing.T, v any)
		}{
			{"/prompt", func(t *testing.T, v any) {
				ei, _ := v.(map[string]any)["exec_info"].(map[string]any)
				if n, ok := ei["queue_remaining"].(float64); !ok || n != 0 {
					t.Errorf("exec_info %v, want queue_remaining 0", ei)
				}
			}},
			{"/system_stats", checkSystemStats},
			{"/models", func(t *testing.T, v any) {
				if s := toStrings(v); !contains(s, "checkpoints") || !contains(s, "loras") || !contains(s, "vae") {
					t.Errorf("model folders %v", s)
				}
			}},
			{"/models/checkpoints", func(t *testing.T, v any) {
				if s := toStrings(v); !contains(s, "dreamshaper_8.safetensors") {
					t.Errorf("checkpoints %v lack dreamshaper_8.safetensors", s)
				}
			}},
			{"/models/unet", func(t *testing.T, v any) { // legacy name of diffusion_models
				if _, ok := v.([]any); !ok {
					t.Errorf("want a list, got %v", v)
				}
			}},
			{"/embeddings", func(t *testing.T, v any) {
				if _, ok := v.([]any); !ok {
					t.Errorf("want a list, got %v", v)
				}
			}},
			{"/extensions", func(t *testing.T, v any) {
				if arr, ok := v.([]any); !ok || len(arr) != 0 {
					t.Errorf("want [], got %v", v)
				}
			}},
			{"/object_info/KSampler", func(t *testing.T, v any) {
				ks, _ := v.(map[string]any)["KSampler"].(map[string]any)
				req, _ := ks["input"].(map[string]any)["required"].(map[string]any)
				if req["seed"] == nil || req["steps"] == nil || len(v.(map[string]any)) != 1 {
					t.Errorf("KSampler spec %v", v)
				}
			}},
			{"/object_info/NoSuchNode", func(t *testing.T, v any) {
				if m, ok := v.(map[string]any); !ok || len(m) != 0 {
					t.Errorf("want {}, got %v", v)
				}
			}},
			{"/history/00000000-0000-4000-8000-000000000000", func(t *testing.T, v any) {
				if m, ok := v.(map[string]any); !ok || len(m) != 0 {
					t.Errorf("want {}, got %v", v)
				}
			}},
		} {
			t.Run(strings.TrimPrefix(tc.path, "/"), func(t *testing.T) {
				resp, err := http.Get(k.base + tc.path)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var v any
				if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 200 {
					t.Fatalf("GET %s: %d, %v", tc.path, resp.StatusCode, err)
				}
				tc.check(t, v)
			})
		}
	})

	t.Run("api aliases", func(t *testing.T) {
		// Each route answers the same under /api/ (bodies compared where
		// they do not change between two calls).
		for _, tc := range []struct {
			method, path, body string
			sameBody           bool
		}{
			{"GET", "/prompt", "", true},
			{"GET", "/queue", "", true},
			{"GET", "/history?max_items=1", "", true},
			{"GET", "/history/" + firstID, "", true},
			{"GET", "/object_info", "", true},
			{"GET", "/object_info/CheckpointLoaderSimple", "", true},
			{"GET", "/system_stats", "", false},
			{"GET", "/models", "", true},
			{"GET", "/models/checkpoints", "", true},
			{"GET", "/embeddings", "", true},
			{"GET", "/extensions", "", true},
			{"GET", "/features", "", true},
			{"GET", "/view?type=output&filename=" + url.QueryEscape(firstImage["filename"].(string)) + "&subfolder=" + url.QueryEscape(firstImage["subfolder"].(string)), "", true},
			{"GET", "/view?type=bogus&filename=x.png", "", true},
			{"POST", "/prompt", `{"prompt": {}}`, true},
			{"POST", "/queue", `{}`, true},
			{"POST", "/history", `{}`, true},
			{"POST", "/interrupt", `{"client_id": "nobody"}`, true},
			{"POST", "/free", `{}`, true},
			{"GET", "/no/such/route", "", true},
		} {
			t.Run(tc.method+" "+tc.path, func(t *testing.T) {
				code, data := k.do(tc.method, tc.path, []byte(tc.body))
				apiCode, apiData := k.do(tc.method, "/api"+tc.path, []byte(tc.body))
				if code != apiCode {
					t.Fatalf("%s %s = %d, under /api/ %d", tc.method, tc.path, code, apiCode)
				}
				if tc.sameBody && !bytes.Equal(data, apiData) && !strings.Contains(tc.path, "no/such") {
					t.Errorf("bodies differ:\n%s\n%s", data, apiData)
				}
			})
		}
		t.Run("ws", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, _, err := websocket.Dial(ctx, strings.Replace(k.base, "http", "ws", 1)+"/api/ws?clientId=alias-client", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseNow()
			_, data, err := conn.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var m struct {
				Type string
				Data struct{ SID string }
			}
			if err := json.Unmarshal(data, &m); err != nil || m.Type != "status" || m.Data.SID != "alias-client" {
				t.Errorf("first frame %s, want status with sid alias-client", data)
			}
		})
	})

	t.Run("error bodies are JSON", func(t *testing.T) {
		for _, tc := range []struct {
			method, path, ctype, body string
			want                      int
		}{
			{"GET", "/no/such/route", "", "", 404},
			{"GET", "/api/no/such/route", "", "", 404},
			{"DELETE", "/prompt", "", "", 405},
			{"PUT", "/api/queue", "", "", 405},
			{"POST", "/prompt", "application/json", "not json", 400},
			{"POST", "/prompt", "text/plain", `{"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}`, 400},
			{"POST", "/prompt", "", `{"client_id": "x"}`, 400},
			{"POST", "/queue", "application/json", `{"delete": 7}`, 400},
			{"POST", "/history", "application/json", `[`, 400},
			{"POST", "/upload/image", "application/json", `{}`, 400},
			{"GET", "/view?filename=x.png&type=nope", "", "", 400},
			{"GET", "/view?filename=x.png&subfolder=../..", "", "", 403},
			{"GET", "/view?filename=x.png", "", "", 404},
			{"GET", "/models/no_such_folder", "", "", 404},
		} {
			t.Run(fmt.Sprintf("%s %s %d", tc.method, tc.path, tc.want), func(t *testing.T) {
				req, _ := http.NewRequest(tc.method, k.base+tc.path, strings.NewReader(tc.body))
				if tc.ctype != "" {
					req.Header.Set("Content-Type", tc.ctype)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var buf bytes.Buffer
				buf.ReadFrom(resp.Body)
				if resp.StatusCode != tc.want {
					t.Fatalf("%d %s, want %d", resp.StatusCode, buf.Bytes(), tc.want)
				}
				checkJSONError(t, resp.Header.Get("Content-Type"), buf.Bytes())
			})
		}
	})

	t.Run("unknown query parameters are ignored", func(t *testing.T) {
		for _, path := range []string{"/prompt", "/queue", "/history", "/history/" + firstID, "/object_info/KSampler",
			"/models/checkpoints", "/embeddings", "/extensions"} {
			t.Run(path, func(t *testing.T) {
				code, plain := k.do("GET", path, nil)
				sep := "?"
				if strings.Contains(path, "?") {
					sep = "&"
				}
				code2, extra := k.do("GET", path+sep+"utm_source=x&clientId=y&max_itemz=1&_=123", nil)
				if code != 200 || code2 != 200 || !bytes.Equal(plain, extra) {
					t.Errorf("%s: %d %s\nwith unknown parameters: %d %s", path, code, plain, code2, extra)
				}
			})
		}
		// A malformed max_items is refused with 400 in JSON (ComfyUI's
		// int() raises, and it answers 500).
		if code, body := k.do("GET", "/history?max_items=many", nil); code != 400 {
			t.Errorf("/history?max_items=many: %d %s, want 400", code, body)
		}
	})

	t.Run("result cache", func(t *testing.T) {
		graph := loadWorkflow(t, txt2img, 2, 4242)
		origID, _ := runPrompt(t, k, ws, "routes-client", graph)
		orig := k.getJSON("/history/" + origID)[origID].(map[string]any)
		doneBefore, _ := workersJobsDone(t, k)
		for _, tc := range []struct {
			name  string
			graph map[string]any
		}{
			{"same graph", loadWorkflow(t, txt2img, 2, 4242)},
			{"renumbered graph", renumber(loadWorkflow(t, txt2img, 2, 4242), "n")},
		} {
			t.Run(tc.name, func(t *testing.T) {
				id, msgs := runPrompt(t, k, ws, "routes-client", tc.graph)
				if id == origID {
					t.Fatal("the cache hit reused the prompt id")
				}
				// As ComfyUI runs a fully cached prompt: each node in
				// execution order marked finished (progress_state), the
				// output node's executed before its own.
				want := []string{"execution_start", "execution_cached"}
				for range len(tc.graph) - 1 {
					want = append(want, "progress_state")
				}
				want = append(want, "executed", "progress_state", "execution_success")
				if got := types(msgs); !reflect.DeepEqual(got, want) {
					t.Fatalf("messages %v, want %v", got, want)
				}
				last := msgs[len(msgs)-2]["data"].(map[string]any)["nodes"].(map[string]any)
				for id := range tc.graph {
					if n, _ := last[id].(map[string]any); n["state"] != "finished" {
						t.Errorf("last progress_state: node %s is %v", id, last[id])
					}
				}
				cached := toStrings(msgs[1]["data"].(map[string]any)["nodes"])
				if want := sortedKeys(tc.graph); !reflect.DeepEqual(cached, want) {
					t.Errorf("execution_cached nodes %v, want every node %v", cached, want)
				}
				h := k.getJSON("/history/" + id)[id].(map[string]any)
				st := h["status"].(map[string]any)
				if st["status_str"] != "success" || st["completed"] != true {
					t.Errorf("history status %v", st)
				}
				// The same files as the original run, under this graph's ids.
				var origImages, images []any
				for _, o := range orig["outputs"].(map[string]any) {
					origImages = o.(map[string]any)["images"].([]any)
				}
				for node, o := range h["outputs"].(map[string]any) {
					if _, ok := tc.graph[node]; !ok {
						t.Errorf("output under node %q, not in the graph", node)
					}
					images = o.(map[string]any)["images"].([]any)
				}
				if !reflect.DeepEqual(images, origImages) {
					t.Errorf("cached images %v, want the original's %v", images, origImages)
				}
			})
		}
		if done, _ := workersJobsDone(t, k); done != doneBefore {
			t.Errorf("the workers ran %d more jobs for cache hits", done-doneBefore)
		}
		// /metrics counts the hits (and the first run's miss).
		_, text := k.do("GET", "/metrics", nil)
		if hits := metricValue(string(text), `kiln_result_cache_lookups_total{result="hit"}`); hits < 2 {
			t.Errorf("kiln_result_cache_lookups_total{result=\"hit\"} = %v after two hits", hits)
		}
		if misses := metricValue(string(text), `kiln_result_cache_lookups_total{result="miss"}`); misses < 1 {
			t.Errorf("kiln_result_cache_lookups_total{result=\"miss\"} = %v after a first run", misses)
		}
		// /history?max_items counts cache hits with the runs.
		if h := k.getJSON("/history?max_items=1"); len(h) != 1 {
			t.Errorf("/history?max_items=1 has %d entries: %v", len(h), sortedKeys(h))
		}

		t.Run("free_memory clears it", func(t *testing.T) {
			if code, ans := k.postJSON("/free", map[string]any{"free_memory": true}); code != 200 {
				t.Fatalf("/free: %d %v", code, ans)
			}
			_, msgs := runPrompt(t, k, ws, "routes-client", loadWorkflow(t, txt2img, 2, 4242))
			if nodes := toStrings(msgs[1]["data"].(map[string]any)["nodes"]); len(nodes) != 0 || !contains(types(msgs), "progress") {
				t.Errorf("after /free the prompt was not run: %v, cached %v", types(msgs), nodes)
			}
			if done, _ := workersJobsDone(t, k); done != doneBefore+1 {
				t.Errorf("workers ran %d jobs, want %d", done, doneBefore+1)
			}
		})
	})

	t.Run("free unload_models", func(t *testing.T) {
		if _, resident := workersJobsDone(t, k); resident == 0 {
			t.Fatal("no model resident after a run")
		}
		if code, ans := k.postJSON("/free", map[string]any{"unload_models": true}); code != 200 {
			t.Fatalf("/free: %d %v", code, ans)
		}
		waitFor(t, 10*time.Second, "workers to unload their models", func() bool {
			_, resident := workersJobsDone(t, k)
			return resident == 0
		})
		// The next prompt loads them again and runs.
		runPrompt(t, k, ws, "routes-client", loadWorkflow(t, txt2img, 2, 99))
	})

	t.Run("history", func(t *testing.T) {
		var ids []string
		for seed := 501; seed <= 503; seed++ {
			id, _ := runPrompt(t, k, ws, "routes-client", loadWorkflow(t, txt2img, 2, seed))
			ids = append(ids, id)
		}
		all := k.getJSON("/history")
		for _, id := range ids {
			e, ok := all[id].(map[string]any)
			if !ok {
				t.Fatalf("/history lacks %s", id)
			}
			item, _ := e["prompt"].([]any)
			if len(item) != 5 || item[1] != id || e["outputs"] == nil || e["meta"] == nil {
				t.Errorf("entry %s: prompt %v, keys %v", id, item, sortedKeys(e))
			}
			if extra, _ := item[3].(map[string]any); extra["client_id"] != "routes-client" {
				t.Errorf("entry %s: extra_data %v", id, item[3])
			}
			if outs := toStrings(item[4]); !reflect.DeepEqual(outs, []string{"9"}) {
				t.Errorf("entry %s: outputs_to_execute %v", id, outs)
			}
		}
		if last := k.getJSON("/history?max_items=2"); !reflect.DeepEqual(sortedKeys(last), sortedStrings(ids[1:])) {
			t.Errorf("/history?max_items=2 = %v, want the newest two %v", sortedKeys(last), ids[1:])
		}
		if code, _ := k.postJSON("/history", map[string]any{"delete": []string{ids[0]}}); code != 200 {
			t.Fatalf("POST /history delete: %d", code)
		}
		if h := k.getJSON("/history/" + ids[0]); len(h) != 0 {
			t.Errorf("deleted entry still there: %v", h)
		}
		if h := k.getJSON("/history"); h[ids[1]] == nil {
			t.Errorf("delete removed more than its entry")
		}
		if code, _ := k.postJSON("/history", map[string]any{"clear": true}); code != 200 {
			t.Fatalf("POST /history clear: %d", code)
		}
		if h := k.getJSON("/history"); len(h) != 0 {
			t.Errorf("/history after clear: %v", sortedKeys(h))
		}
	})
}

func sortedStrings(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// checkJSONError checks an error answer: JSON, with an error object that
// has a type and a message.
func checkJSONError(t *testing.T, contentType string, body []byte) {
	t.Helper()
	if !strings.HasPrefix(contentType, "application/json") {
		t.Errorf("error Content-Type %q, want application/json", contentType)
	}
	var v struct {
		Error struct{ Type, Message string }
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Error.Type == "" || v.Error.Message == "" {
		t.Errorf("error body %s: want {\"error\": {\"type\", \"message\"}} (%v)", body, err)
	}
}

func checkSystemStats(t *testing.T, v any) {
	t.Helper()
	m, _ := v.(map[string]any)
	sys, _ := m["system"].(map[string]any)
	total, _ := sys["ram_total"].(float64)
	free, _ := sys["ram_free"].(float64)
	if os, _ := sys["os"].(string); os == "" || total <= 0 || free <= 0 || free > total {
		t.Errorf("system %v", sys)
	}
	devices, _ := m["devices"].([]any)
	if len(devices) != 1 {
		t.Fatalf("devices %v, want the one simulated device", m["devices"])
	}
	d := devices[0].(map[string]any)
	vt, _ := d["vram_total"].(float64)
	vf, ok := d["vram_free"].(float64)
	if vt != 85899345920 || !ok || vf > vt || d["name"] == nil || d["type"] == nil || d["index"] == nil {
		t.Errorf("device %v", d)
	}
}

// TestComfyQueueAndInterrupt keeps the one worker busy with a long prompt
// while others wait: GET /queue and GET /prompt show them, "front" puts a
// prompt ahead of the batch ones, POST /queue deletes and clears pending
// prompts, and POST /interrupt cancels the running prompt of its client
// only.
func TestComfyQueueAndInterrupt(t *testing.T) {
	// default_class=batch, so that "front" (interactive) overtakes.
	k, _ := startComfyRoutesKiln(t, "0.5", "comfyui.default_class=batch")
	owner := dialWS(t, k, "owner")

	submit := func(t *testing.T, body map[string]any) (string, float64) {
		t.Helper()
		code, ans := k.postJSON("/prompt", body)
		if code != 200 {
			t.Fatalf("/prompt: %d %v", code, ans)
		}
		n, _ := ans["number"].(float64)
		if errs, ok := ans["node_errors"].(map[string]any); !ok || len(errs) != 0 {
			t.Errorf("node_errors %v", ans["node_errors"])
		}
		return ans["prompt_id"].(string), n
	}
	// 150 steps (kiln's limit) at 1024×1024: seconds of simulated work,
	// ended by the interrupt below long before.
	longGraph := loadWorkflow(t, txt2img, 150, 1)
	longGraph["5"].(map[string]any)["inputs"].(map[string]any)["width"] = 1024
	longGraph["5"].(map[string]any)["inputs"].(map[string]any)["height"] = 1024
	long, _ := submit(t, map[string]any{"prompt": longGraph, "client_id": "owner",
		"extra_data": map[string]any{"note": "long"}})
	owner.until(t, long, "progress")

	b, nb := submit(t, map[string]any{"prompt": loadWorkflow(t, txt2img, 2, 2), "client_id": "other"})
	c, nc := submit(t, map[string]any{"prompt": loadWorkflow(t, txt2img, 2, 3), "client_id": "other"})
	front, nf := submit(t, map[string]any{"prompt": loadWorkflow(t, txt2img, 2, 4), "client_id": "other", "front": true})
	if !(nb < nc && nc < nf) {
		t.Errorf("numbers %v %v %v, want increasing", nb, nc, nf)
	}

	queueIDs := func(t *testing.T) (running, pending []string) {
		t.Helper()
		q := k.getJSON("/queue")
		for key, dst := range map[string]*[]string{"queue_running": &running, "queue_pending": &pending} {
			items, ok := q[key].([]any)
			if !ok {
				t.Fatalf("/queue %s: %v", key, q[key])
			}
			*dst = []string{}
			for _, it := range items {
				item := it.([]any)
				if len(item) != 5 {
					t.Fatalf("queue item %v: want [number, prompt_id, prompt, extra_data, outputs_to_execute]", item)
				}
				*dst = append(*dst, item[1].(string))
			}
		}
		return running, pending
	}

	t.Run("GET /queue", func(t *testing.T) {
		q := k.getJSON("/queue")
		item := q["queue_running"].([]any)[0].([]any)
		extra, _ := item[3].(map[string]any)
		if item[1] != long || extra["note"] != "long" || extra["client_id"] != "owner" || !reflect.DeepEqual(toStrings(item[4]), []string{"9"}) {
			t.Errorf("running item %v", item)
		}
		if _, ok := item[2].(map[string]any)["3"]; !ok {
			t.Errorf("running item's prompt %v", item[2])
		}
		running, pending := queueIDs(t)
		if !reflect.DeepEqual(running, []string{long}) || !reflect.DeepEqual(pending, []string{front, b, c}) {
			t.Errorf("running %v pending %v; want [%s] [%s %s %s] (front first)", running, pending, long, front, b, c)
		}
	})

	t.Run("GET /prompt", func(t *testing.T) {
		ei := k.getJSON("/prompt")["exec_info"].(map[string]any)
		if ei["queue_remaining"] != float64(4) {
			t.Errorf("exec_info %v, want queue_remaining 4", ei)
		}
	})

	t.Run("POST /queue delete", func(t *testing.T) {
		if code, ans := k.postJSON("/queue", map[string]any{"delete": []string{b, "no-such-prompt"}}); code != 200 {
			t.Fatalf("POST /queue: %d %v", code, ans)
		}
		if _, pending := queueIDs(t); !reflect.DeepEqual(pending, []string{front, c}) {
			t.Errorf("pending %v after deleting %s", pending, b)
		}
		// Deleted pending prompts leave no history, as in ComfyUI.
		if h := k.getJSON("/history/" + b); len(h) != 0 {
			t.Errorf("history of a deleted pending prompt: %v", h)
		}
	})

	t.Run("POST /queue clear", func(t *testing.T) {
		if code, ans := k.postJSON("/queue", map[string]any{"clear": true}); code != 200 {
			t.Fatalf("POST /queue: %d %v", code, ans)
		}
		running, pending := queueIDs(t)
		if len(pending) != 0 || !reflect.DeepEqual(running, []string{long}) {
			t.Errorf("after clear: running %v pending %v; clear must leave the running prompt", running, pending)
		}
	})

	t.Run("POST /interrupt", func(t *testing.T) {
		// Another client's interrupt leaves the owner's prompt running.
		if code, _ := k.postJSON("/interrupt", map[string]any{"client_id": "other"}); code != 200 {
			t.Fatalf("/interrupt: %d", code)
		}
		if j := k.job(long); j.State != "running" {
			t.Fatalf("another client's /interrupt ended the prompt: %s", j.State)
		}
		if code, _ := k.postJSON("/interrupt", map[string]any{"client_id": "owner"}); code != 200 {
			t.Fatalf("/interrupt: %d", code)
		}
		msgs := owner.until(t, long, "execution_interrupted")
		d := msgs[len(msgs)-1]["data"].(map[string]any)
		if d["node_id"] != "3" || d["node_type"] != "KSampler" {
			t.Errorf("execution_interrupted %v, want node 3 (KSampler)", d)
		}
		if last := owner.until(t, long, "executing"); last[len(last)-1]["data"].(map[string]any)["node"] != nil {
			t.Errorf("after execution_interrupted: %v", last[len(last)-1])
		}
		if j := k.job(long); j.State != "cancelled" {
			t.Errorf("job state %s, want cancelled", j.State)
		}
		h := k.getJSON("/history/" + long)[long].(map[string]any)
		st := h["status"].(map[string]any)
		msgsH := st["messages"].([]any)
		if st["status_str"] != "error" || st["completed"] != false || fmt.Sprint(msgsH[len(msgsH)-1].([]any)[0]) != "execution_interrupted" {
			t.Errorf("history status %v", st)
		}
		if running, pending := queueIDs(t); len(running)+len(pending) != 0 {
			t.Errorf("queue after interrupt: %v %v", running, pending)
		}
	})
}
