package tests

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestClusterKilledBeforeOutputCopy kills -9 the node that ran a job after
// the job's record says done and before the node copied its output into
// the object store KILN_outputs (internal/cluster outputs.go): the test
// hook KILNTEST_HOLD_OUTPUT_COPY=1 holds the copy, so the kill comes while
// the copy's note is in the node's pending-copies folder. The other node's
// /view of the output then answers 503 (the file is to come), never 404;
// once the killed node is back, without the hook and on the same data
// dir, it makes the copy, the other node serves the bytes the killed node
// wrote, the note is gone, and the job is listed once, done by its first
// run.
func TestClusterKilledBeforeOutputCopy(t *testing.T) {
	start := time.Now()
	natsURL := startNATSAlone(t)
	// Both nodes hold their copies: whichever runs the job is the one
	// killed, the other serves the /view.
	t.Setenv("KILNTEST_HOLD_OUTPUT_COPY", "1")
	nodes := startTwoNodes(t, natsURL, "cost.time_scale=0.05", "workers.per_device=1")
	t.Setenv("KILNTEST_HOLD_OUTPUT_COPY", "")
	for _, k := range nodes {
		if !strings.Contains(k.log.String(), "KILNTEST_HOLD_OUTPUT_COPY=1") {
			t.Fatalf("%s does not warn that the output copy hook is on", k.base)
		}
	}

	const promptID = "killed-before-copy"
	wf := loadWorkflow(t, "comfyui__script_examples_websockets_api_example.api.json", 4, 7)
	if code, data := postPrompt(t, nodes[0], wf, promptID); code != 200 {
		t.Fatalf("/prompt on %s: HTTP %d: %s", nodes[0].base, code, data)
	}
	var done clusterJobJSON
	waitFor(t, 30*time.Second, "the prompt to finish", func() bool {
		done = nodes[0].clusterJob(promptID)
		return done.State == "done"
	})
	if len(done.Outputs) == 0 {
		t.Fatalf("prompt %s done without outputs", promptID)
	}
	ran, other := nodes[0], nodes[1]
	if done.Node == "node2" {
		ran, other = nodes[1], nodes[0]
	}
	finishedAt := jobField(t, other, promptID, "finished_at")
	// The hook says when the copy is held, which is after the API has
	// finished the files (their PNG metadata is written after the record
	// says done): the file read then is the one the copy must carry.
	waitFor(t, 10*time.Second, done.Node+" to hold the copy", func() bool {
		for _, line := range strings.Split(ran.log.String(), "\n") {
			if strings.Contains(line, `"job":"`+promptID+`"`) && strings.Contains(line, "holding the copy of a finished job's outputs") {
				return true
			}
		}
		return false
	})
	o := done.Outputs[0]
	wrote, err := os.ReadFile(filepath.Join(ran.dataDir, "output", filepath.FromSlash(o.Subfolder), o.Filename))
	if err != nil {
		t.Fatalf("the output %s that %s wrote: %v", o.Filename, done.Node, err)
	}
	pending := filepath.Join(ran.dataDir, "cluster", "pending-copies")
	if got := pendingNotes(t, pending); got != promptID {
		t.Fatalf("%s's pending copies while it holds the copy: %q; want the note of %s", done.Node, got, promptID)
	}
	// The node serves its own /view from its file.
	if code, png := ran.do("GET", viewPath(o.Filename, o.Subfolder), nil); code != 200 || !bytes.Equal(png, wrote) {
		t.Fatalf("/view of %s on %s, which ran it: HTTP %d, %d bytes; the file has %d", o.Filename, done.Node, code, len(png), len(wrote))
	}
	ran.kill9()
	killed := time.Now()

	// The record says done on a node that is gone, and the file is in no
	// object store: the other node waits for the copy (copyWait, 15 s),
	// then says the cluster cannot serve it yet.
	code, body := other.do("GET", viewPath(o.Filename, o.Subfolder), nil)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("/view of %s on %s with %s killed before its copy: HTTP %d: %.200s; want 503", o.Filename, other.base, done.Node, code, body)
	}
	t.Logf("/view on the other node answered 503 %s after the kill", time.Since(killed).Round(time.Millisecond))
	if got := pendingNotes(t, pending); got != promptID {
		t.Fatalf("%s's pending copies after the kill: %q; want the note of %s", done.Node, got, promptID)
	}

	ran.start(strings.TrimPrefix(ran.base, "http://"))
	restarted := time.Now()
	var png []byte
	waitFor(t, 20*time.Second, "the other node's /view to serve the output", func() bool {
		code, png = other.do("GET", viewPath(o.Filename, o.Subfolder), nil)
		return code == 200
	})
	if !bytes.Equal(png, wrote) {
		t.Fatalf("/view of %s on %s after %s's restart: %d bytes, not the %d that %s wrote", o.Filename, other.base, done.Node, len(png), len(wrote), done.Node)
	}
	t.Logf("the other node served the output %s after the restart", time.Since(restarted).Round(time.Millisecond))
	waitFor(t, 5*time.Second, done.Node+"'s note to go", func() bool { return pendingNotes(t, pending) == "" })
	if !strings.Contains(ran.log.String(), "copying the outputs of a job finished before this node stopped") {
		t.Fatalf("%s made the copy without saying that it resumed it", done.Node)
	}

	// Nothing ran again: the job is done by its first run, on the node
	// that ran it, and each node lists it once.
	for _, k := range []*kilnProc{other, ran} {
		j := k.clusterJob(promptID)
		if j.State != "done" || j.Node != done.Node || j.Attempts != 1 || jobField(t, k, promptID, "finished_at") != finishedAt {
			t.Fatalf("job %s on %s after the restart: %s on %s, attempt %d, finished %s; want done on %s, attempt 1, finished %s",
				promptID, k.base, j.State, j.Node, j.Attempts, jobField(t, k, promptID, "finished_at"), done.Node, finishedAt)
		}
		listed := 0
		code, data := k.do("GET", "/v1/jobs?limit=1000", nil)
		var list struct{ Jobs []jobJSON }
		if code != 200 || json.Unmarshal(data, &list) != nil {
			t.Fatalf("GET /v1/jobs on %s: HTTP %d: %s", k.base, code, data)
		}
		for _, l := range list.Jobs {
			if l.ID == promptID {
				listed++
			}
		}
		if listed != 1 || len(list.Jobs) != 1 {
			t.Fatalf("/v1/jobs on %s lists %d jobs, %d of them %s; want that one once", k.base, len(list.Jobs), listed, promptID)
		}
	}
	t.Logf("killed-before-copy test took %s", time.Since(start).Round(time.Millisecond))
}

// viewPath is ComfyUI's /view of an output.
func viewPath(filename, subfolder string) string {
	return "/view?" + url.Values{"filename": {filename}, "subfolder": {subfolder}, "type": {"output"}}.Encode()
}

// pendingNotes returns the job ids of the notes in a node's pending-copies
// folder, joined by commas ("" when there is none).
func pendingNotes(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, string(b))
	}
	return strings.Join(ids, ",")
}

// jobField returns one field of GET /v1/jobs/{id}, as JSON.
func jobField(t *testing.T, k *kilnProc, id, field string) string {
	t.Helper()
	code, data := k.do("GET", "/v1/jobs/"+id, nil)
	var m map[string]json.RawMessage
	if code != 200 || json.Unmarshal(data, &m) != nil {
		t.Fatalf("GET /v1/jobs/%s on %s: HTTP %d: %s", id, k.base, code, data)
	}
	return string(m[field])
}
