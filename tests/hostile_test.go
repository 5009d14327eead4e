package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHostileInputOnV1 sends what a careless or hostile client might to
// POST /v1/jobs. Each gets a 4xx JSON error that names the problem, and
// kiln keeps serving.
func TestHostileInputOnV1(t *testing.T) {
	k := startKiln(t, t.TempDir(), "limits.max_steps=100", "limits.max_resolution=2048", "limits.max_batch_size=8")
	sampler := func(steps, width, batch int) string {
		return fmt.Sprintf(`{"workflow": {
			"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "dreamshaper_8.safetensors"}},
			"5": {"class_type": "EmptyLatentImage", "inputs": {"width": %d, "height": 512, "batch_size": %d}},
			"3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": %d, "cfg": 7, "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
				"model": ["4", 0], "positive": ["4", 1], "negative": ["4", 1], "latent_image": ["5", 0]}},
			"8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
			"9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["8", 0]}}}}`, width, batch, steps)
	}
	deep := `{"workflow": ` + strings.Repeat(`{"a":`, 20000) + `1` + strings.Repeat(`}`, 20000) + `}`
	for _, tc := range []struct {
		name     string
		body     string
		wantType string
	}{
		{"path traversal in a model name", `{"workflow": {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "../../../etc/passwd"}}, "9": {"class_type": "SaveImage", "inputs": {"images": ["4", 0]}}}}`, "invalid_model_name"},
		{"absolute model path", `{"workflow": {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "/etc/passwd"}}, "9": {"class_type": "SaveImage", "inputs": {"images": ["4", 0]}}}}`, "invalid_model_name"},
		{"cyclic graph", `{"workflow": {"1": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0]}}, "2": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0]}}, "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}}`, "cycle"},
		{"deeply nested JSON", deep, ""},
		{"huge steps", sampler(100000, 512, 1), "limit_exceeded"},
		{"huge resolution", sampler(20, 100000, 1), "limit_exceeded"},
		{"huge batch", sampler(20, 512, 4096), "limit_exceeded"},
		{"unknown node class", `{"workflow": {"1": {"class_type": "DefinitelyNotANode", "inputs": {}}, "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}}`, "missing_node_type"},
		{"invalid UTF-8", "{\"workflow\": {\"1\": {\"class_type\": \"Save\xffImage\", \"inputs\": {}}}}", "invalid_json"},
		{"no output node", `{"workflow": {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "dreamshaper_8.safetensors"}}}}`, "prompt_no_outputs"},
		{"link to a missing node", `{"workflow": {"9": {"class_type": "SaveImage", "inputs": {"images": ["77", 0]}}}}`, "invalid_link"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, data := k.do("POST", "/v1/jobs", []byte(tc.body))
			if code < 400 || code > 499 {
				t.Fatalf("HTTP %d, want 4xx: %.300s", code, data)
			}
			var env struct {
				Error struct{ Type, Message string }
			}
			if err := json.Unmarshal(data, &env); err != nil || env.Error.Message == "" {
				t.Fatalf("not a JSON error: %.300s", data)
			}
			if tc.wantType != "" && env.Error.Type != tc.wantType {
				t.Fatalf("type %q, want %q: %s", env.Error.Type, tc.wantType, env.Error.Message)
			}
		})
	}

	t.Run("oversize header", func(t *testing.T) {
		req, _ := http.NewRequest("GET", k.base+"/healthz", nil)
		req.Header.Set("X-Junk", strings.Repeat("a", 2<<20))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("HTTP %d, want 431", resp.StatusCode)
		}
	})

	t.Run("slow client is cut off", func(t *testing.T) {
		// A client that never finishes its headers must not hold a
		// connection past api.read_header_timeout (5s by default).
		conn, err := net.Dial("tcp", strings.TrimPrefix(k.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		start := time.Now()
		_, err = bufio.NewReader(conn).ReadString('\n')
		if err == nil && time.Since(start) > 15*time.Second {
			t.Fatal("connection still open after 15s")
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("server took %s to drop a stalled client", time.Since(start))
		}
	})

	if code, _ := k.do("GET", "/healthz", nil); code != http.StatusOK {
		t.Fatalf("kiln unhealthy after hostile input: %d", code)
	}
}
