package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsClient is a ComfyUI WebSocket client.
type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
	msgs chan map[string]any
}

func dialWS(t *testing.T, k *kilnProc, clientID string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, strings.Replace(k.base, "http", "ws", 1)+"/ws?clientId="+clientID, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &wsClient{t: t, conn: conn, msgs: make(chan map[string]any, 4096)}
	go func() {
		defer close(c.msgs)
		for {
			typ, data, err := conn.Read(context.Background())
			if err != nil {
				return
			}
			if typ != websocket.MessageText {
				c.msgs <- map[string]any{"type": "binary"}
				continue
			}
			var m map[string]any
			if json.Unmarshal(data, &m) == nil {
				c.msgs <- m
			}
		}
	}()
	t.Cleanup(func() { conn.CloseNow() })
	return c
}

// until collects a prompt's messages up to and including the one of type last.
func (c *wsClient) until(t *testing.T, promptID, last string) []map[string]any {
	t.Helper()
	var got []map[string]any
	deadline := time.After(60 * time.Second)
	for {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				t.Fatalf("socket closed; got %v", types(got))
			}
			d, _ := m["data"].(map[string]any)
			if d["prompt_id"] != promptID {
				continue
			}
			got = append(got, m)
			if m["type"] == last {
				return got
			}
			if m["type"] == "execution_error" {
				t.Fatalf("execution_error while waiting for %s: %v", last, d)
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s; got %v", last, types(got))
		}
	}
}

func types(ms []map[string]any) []string {
	var out []string
	for _, m := range ms {
		out = append(out, fmt.Sprint(m["type"]))
	}
	return out
}

func (k *kilnProc) postJSON(path string, v any) (int, map[string]any) {
	k.t.Helper()
	b, _ := json.Marshal(v)
	code, data := k.do("POST", path, b)
	var out map[string]any
	_ = json.Unmarshal(data, &out)
	return code, out
}

func (k *kilnProc) getJSON(path string) map[string]any {
	k.t.Helper()
	code, data := k.do("GET", path, nil)
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil || code != 200 {
		k.t.Fatalf("GET %s: %d %s", path, code, data)
	}
	return out
}

func startComfyKiln(t *testing.T) *kilnProc {
	return startKiln(t, t.TempDir(), "cost.time_scale=0.0005", "workers.per_device=1", "comfyui.keepalive=500ms",
		"devices.simulated=[{name: sim-80g, memory_bytes: 85899345920, h2d_bytes_per_s: 25e9, compute_factor: 1}]")
}

// TestComfyWorkflows submits every shared workflow through /prompt: those
// with ImageRequestParameter are refused with missing_node_type, the others
// run to execution_success with ComfyUI's message sequence, /queue and
// /history agree with it, and their PNGs come back through /view.
func TestComfyWorkflows(t *testing.T) {
	k := startComfyKiln(t)
	ws := dialWS(t, k, "wf-client")
	files, _ := filepath.Glob("../examples/workflows/*.json")
	for i, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			wf := loadWorkflow(t, name, 2, i+1)
			code, ans := k.postJSON("/prompt", map[string]any{"prompt": wf, "client_id": "wf-client"})
			raw, _ := os.ReadFile(f)
			if bytes.Contains(raw, []byte(`"ImageRequestParameter"`)) {
				e, _ := ans["error"].(map[string]any)
				if code != 400 || e["type"] != "missing_node_type" {
					t.Fatalf("want 400 missing_node_type, got %d %v", code, ans)
				}
				return
			}
			if code != 200 {
				t.Fatalf("/prompt: %d %v", code, ans)
			}
			id := ans["prompt_id"].(string)
			msgs := ws.until(t, id, "execution_success")
			// /queue and /history agree with execution_success at once.
			h := k.getJSON("/history/" + id)[id].(map[string]any)
			st := h["status"].(map[string]any)
			if st["status_str"] != "success" || st["completed"] != true {
				t.Fatalf("history status %v", st)
			}
			if q := k.getJSON("/queue"); strings.Contains(fmt.Sprint(q), id) {
				t.Fatalf("prompt still in /queue after execution_success: %v", q)
			}
			last := ws.until(t, id, "executing")
			if d := last[len(last)-1]["data"].(map[string]any); d["node"] != nil {
				t.Fatalf("after execution_success: %v", last)
			}
			checkSequence(t, msgs)
			outputs := h["outputs"].(map[string]any)
			if len(outputs) == 0 {
				t.Fatal("no outputs")
			}
			checkFileNames(t, wf, outputs)
			for _, o := range outputs {
				for _, img := range o.(map[string]any)["images"].([]any) {
					im := img.(map[string]any)
					q := url.Values{"filename": {im["filename"].(string)}, "subfolder": {im["subfolder"].(string)}, "type": {im["type"].(string)}}
					code, data := k.do("GET", "/view?"+q.Encode(), nil)
					if code != 200 {
						t.Fatalf("/view %v: %d", q, code)
					}
					if _, err := png.Decode(bytes.NewReader(data)); err != nil {
						t.Fatalf("/view %v: not a PNG: %v", q, err)
					}
				}
			}
		})
	}
}

// checkSequence checks ComfyUI's order: execution_start, execution_cached,
// executing before its node's progress, executed, execution_success.
func checkSequence(t *testing.T, msgs []map[string]any) {
	t.Helper()
	ts := types(msgs)
	if len(ts) < 4 || ts[0] != "execution_start" || ts[1] != "execution_cached" || ts[len(ts)-1] != "execution_success" {
		t.Fatalf("sequence %v", ts)
	}
	current, sawProgress, sawExecuted := "", false, false
	for _, m := range msgs[2:] {
		d := m["data"].(map[string]any)
		switch m["type"] {
		case "executing":
			current, _ = d["node"].(string)
			if sawExecuted {
				t.Fatalf("executing after executed: %v", ts)
			}
		case "progress":
			sawProgress = true
			if d["node"] != current {
				t.Fatalf("progress for node %v while executing %q", d["node"], current)
			}
		case "executed":
			sawExecuted = true
		}
	}
	if !sawProgress || !sawExecuted {
		t.Fatalf("no progress or executed in %v", ts)
	}
	checkProgressState(t, msgs)
}

// checkProgressState checks the progress_state messages of a run against
// ComfyUI's progress registry: each node marked running at 0/1 right
// before its executing, each progress right after a progress_state with
// the same value, and every started node finished (value = max) before
// the first executed. Only ComfyUI's message types appear.
func checkProgressState(t *testing.T, msgs []map[string]any) {
	t.Helper()
	known := map[string]bool{"execution_start": true, "execution_cached": true, "executing": true, "progress": true,
		"progress_state": true, "executed": true, "execution_success": true}
	started := map[string]bool{}
	var lastState map[string]any
	for i, m := range msgs {
		typ, d := m["type"].(string), m["data"].(map[string]any)
		if !known[typ] {
			t.Fatalf("message type %q is not one ComfyUI sends for a run", typ)
		}
		var prevNodes map[string]any
		if i > 0 && msgs[i-1]["type"] == "progress_state" {
			prevNodes, _ = msgs[i-1]["data"].(map[string]any)["nodes"].(map[string]any)
		}
		switch typ {
		case "progress_state":
			lastState, _ = d["nodes"].(map[string]any)
		case "executing":
			node, _ := d["node"].(string)
			n, _ := prevNodes[node].(map[string]any)
			if n["state"] != "running" || n["value"] != 0.0 || n["max"] != 1.0 {
				t.Fatalf("executing %s not right after progress_state with it running at 0/1: %v", node, types(msgs))
			}
			started[node] = true
		case "progress":
			n, _ := prevNodes[d["node"].(string)].(map[string]any)
			if n["value"] != d["value"] || n["max"] != d["max"] {
				t.Fatalf("progress %v not right after a progress_state with its value", d)
			}
		case "executed":
			for node := range started {
				if n, _ := lastState[node].(map[string]any); n["state"] != "finished" {
					t.Fatalf("executed while node %s is %v", node, lastState[node])
				}
			}
		}
	}
}

// checkFileNames checks saved images' names as ComfyUI's SaveImage gives
// them: <name>_<5 digits>_.png in the folder of the node's filename_prefix.
func checkFileNames(t *testing.T, graph map[string]any, outputs map[string]any) {
	t.Helper()
	for node, o := range outputs {
		n, _ := graph[node].(map[string]any)
		if n["class_type"] != "SaveImage" {
			continue
		}
		prefix, _ := n["inputs"].(map[string]any)["filename_prefix"].(string)
		if prefix == "" {
			prefix = "ComfyUI"
		}
		dir, base := path.Split(prefix)
		for _, img := range o.(map[string]any)["images"].([]any) {
			im := img.(map[string]any)
			name, _ := im["filename"].(string)
			digits, ok := strings.CutPrefix(name, base+"_")
			digits, ok2 := strings.CutSuffix(digits, "_.png")
			if _, err := strconv.Atoi(digits); !ok || !ok2 || len(digits) != 5 || err != nil || im["subfolder"] != strings.TrimSuffix(dir, "/") {
				t.Errorf("node %s (prefix %q) saved %v; want %s_NNNNN_.png in %q", node, prefix, im, base, strings.TrimSuffix(dir, "/"))
			}
		}
	}
}
