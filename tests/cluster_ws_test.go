package tests

import (
	"bytes"
	"image/png"
	"slices"
	"testing"
	"time"
)

// TestClusterWebSocketImages: a ComfyUI client connected to one node of a
// two-node cluster gets the SaveImageWebsocket images of its prompts that
// run on the other node, as binary frames like a single node's (ComfyUI's
// websockets_api_example_ws_images.py reads its images from them). Affinity
// routing sends repeated prompts to the node that holds the checkpoint;
// the client is on the other one.
func TestClusterWebSocketImages(t *testing.T) {
	url := startNATSAlone(t)
	nodes := startTwoNodes(t, url, "cost.time_scale=0.01", "workers.per_device=1", "policies.routing=affinity")
	// The example graph with its SaveImage replaced by a SaveImageWebsocket
	// node, as in TestComfyFidelity.
	graph := func(seed int) map[string]any {
		g := loadWorkflow(t, "comfyui__script_examples_websockets_api_example.api.json", 2, seed)
		delete(g, "9")
		g[wsNode] = map[string]any{"class_type": "SaveImageWebsocket", "inputs": map[string]any{"images": []any{"8", 0}}}
		return g
	}
	prompt := func(k *kilnProc, seed int, clientID string) string {
		t.Helper()
		req := map[string]any{"prompt": graph(seed)}
		if clientID != "" {
			req["client_id"] = clientID
		}
		code, ans := k.postJSON("/prompt", req)
		if code != 200 {
			t.Fatalf("/prompt on %s: %d %v", k.base, code, ans)
		}
		return ans["prompt_id"].(string)
	}

	// The first prompt makes a holder of whichever node runs it.
	first := prompt(nodes[0], 1, "")
	var holder string
	waitFor(t, 30*time.Second, "the first prompt to finish", func() bool {
		j := nodes[0].clusterJob(first)
		holder = j.Node
		return j.State == "done"
	})
	client, holderNode := nodes[0], nodes[1]
	if holder == "node1" {
		client, holderNode = nodes[1], nodes[0]
	}
	const model = "checkpoints/v1-5-pruned-emaonly.ckpt"
	waitFor(t, 10*time.Second, client.base+" to see "+holder+" holding the checkpoint", func() bool {
		return slices.Contains(clusterNodes(t, client)[holder].VRAM, model)
	})

	ws := dialRawWS(t, client, "ws-cluster")
	elsewhere := 0
	for run := range 3 {
		id := prompt(client, 10+run, "ws-cluster")
		frames, _, _ := followPrompt(t, ws, id, wsNode)
		ranOn := client.clusterJob(id).Node
		if ranOn == holder {
			elsewhere++
		}
		if len(frames) != 1 {
			t.Fatalf("prompt %d (ran on %s, client on the other node): %d binary frames while %s executed, want 1", run, ranOn, len(frames), wsNode)
		}
		p := parsePreview(t, frames[0])
		if p.typ != 1 || p.format != 2 {
			t.Errorf("prompt %d: frame type %d format %d, want 1 and 2 (PNG)", run, p.typ, p.format)
		}
		img, err := png.Decode(bytes.NewReader(p.image))
		if err != nil {
			t.Fatalf("prompt %d: %v", run, err)
		}
		if b := img.Bounds(); b.Dx() != 512 || b.Dy() != 512 {
			t.Errorf("prompt %d: %v, want the full 512×512 image", run, b)
		}
	}
	if elsewhere == 0 {
		t.Fatalf("no prompt ran on %s, the node holding the checkpoint; the test did not cross nodes", holder)
	}
	t.Logf("%d of 3 prompts ran on %s and sent their images to the client on the other node; holder node %s", elsewhere, holder, holderNode.base)
}
