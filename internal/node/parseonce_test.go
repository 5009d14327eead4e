package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/config"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/modelfile"
	"github.com/kiln-gpu/kiln/internal/workflow"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// workerEnv, set in a worker process's environment, makes the test binary
// serve the worker protocol (countingWorker) instead of running tests.
const workerEnv = "KILN_NODE_TEST_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) != "" {
		if err := wire.ServeFD3(&countingWorker{}); err != nil {
			fmt.Fprintln(os.Stderr, "counting worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// workerCounts is what a countingWorker writes beside a job's output: the
// graphs its run built, and whether the run request carried the graph as
// a msgpack map (a 1.2 kernel: decoded by the SDK's frame decoder) or as
// the client's JSON bytes (1.3: decoded by Serve). Either way the worker's
// process decodes the graph once.
type workerCounts struct {
	Graphs     uint64 `json:"graphs"`
	MsgpackMap bool   `json:"msgpack_map"`
}

// countingWorker is a worker that does what kiln-worker-sim does with a
// run's graph (builds it with workflow.FromMap) and writes one real PNG
// per output node, then records its process's counts.
type countingWorker struct {
	mu     sync.Mutex
	outDir string
}

func (w *countingWorker) Hello(_ context.Context, r wire.HelloRequest) (wire.HelloReply, error) {
	w.mu.Lock()
	w.outDir = r.OutputDir
	w.mu.Unlock()
	return wire.HelloReply{Protocol: wire.ProtocolVersion, Name: "counting", PID: os.Getpid(),
		Capabilities: []string{"cancel", "progress", wire.CapabilityStages}}, nil
}

func (w *countingWorker) Load(_ context.Context, r wire.LoadRequest) (wire.LoadReply, error) {
	return wire.LoadReply{Model: r.Model, VRAMBytes: r.Bytes}, nil
}

func (w *countingWorker) Unload(_ context.Context, r wire.UnloadRequest) (wire.UnloadReply, error) {
	return wire.UnloadReply{Model: r.Model}, nil
}

func (w *countingWorker) Run(ctx context.Context, r wire.RunRequest, progress func(wire.Progress)) (wire.RunResult, error) {
	c := workerCounts{MsgpackMap: len(r.WorkflowJSON) == 0}
	before := workflow.ReadCounts()
	g, err := workflow.FromMap(r.Workflow, workflow.Limits{})
	if err != nil {
		return wire.RunResult{}, err
	}
	w.mu.Lock()
	out := w.outDir
	w.mu.Unlock()
	for _, n := range g.Nodes() {
		if n.ClassType == holdClass {
			// Run until cancelled, having said so with a file, so that
			// the test cancels a job that is running on the worker.
			if err := os.WriteFile(filepath.Join(out, r.JobID+".holding"), nil, 0o644); err != nil {
				return wire.RunResult{}, err
			}
			select {
			case <-ctx.Done():
				return wire.RunResult{}, ctx.Err()
			case <-time.After(30 * time.Second):
				return wire.RunResult{}, errors.New("held for 30 s and not cancelled")
			}
		}
	}
	var res wire.RunResult
	for _, n := range g.OutputNodes() {
		progress(wire.Progress{JobID: r.JobID, Node: n.ID, Value: 1, Max: 1})
		name := fmt.Sprintf("ComfyUI_%s_00001_.png", n.ID)
		if err := writePNG(filepath.Join(out, r.JobID, name)); err != nil {
			return wire.RunResult{}, err
		}
		res.Outputs = append(res.Outputs, wire.Output{Node: n.ID, Filename: name, Subfolder: r.JobID, Type: "output"})
	}
	c.Graphs = workflow.ReadCounts().Graphs - before.Graphs
	b, _ := json.Marshal(c)
	if err := os.WriteFile(filepath.Join(out, r.JobID+".counts"), b, 0o644); err != nil {
		return wire.RunResult{}, err
	}
	return res, nil
}

func (w *countingWorker) Stats(context.Context) (wire.StatsReply, error) {
	return wire.StatsReply{}, nil
}

func writePNG(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, 2, 2))); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

const parseOnceGraph = `{
 "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 4, "cfg": 7, "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
   "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
 "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}},
 "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
 "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
 "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
 "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
 "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}}
}`

// holdClass is a node class that makes a countingWorker run until the job
// is cancelled.
const holdClass = "KilnTestHold"

// TestParseOnce counts, for one job through POST /prompt and one through
// POST /v1/jobs, the decodes of its workflow and the graphs built from it
// in kiln's process and in the worker's, from the request to the job's
// end (the dispatcher's estimate and stage plan, the run, the finish, the
// WebSocket hub and the result cache included). The limits are the counts
// of a job parsed once at submit (issue 19, "parse once"): a re-parse
// added anywhere on the path fails this test.
func TestParseOnce(t *testing.T) {
	n, base := startCountingNode(t)
	for _, tc := range []struct {
		name, path, body string
		// kernel is what kiln's process does per job: decode the body
		// once and build the graph once; everything after (the stage
		// plan, estimates, the hub, the result cache's key) comes from
		// the graph's Facts.
		kernel workflow.Counts
	}{
		{name: "prompt", path: "/prompt", body: `{"prompt": ` + parseOnceGraph + `, "client_id": "c1"}`,
			kernel: workflow.Counts{Decodes: 1, Graphs: 1}},
		{name: "v1 jobs", path: "/v1/jobs", body: `{"workflow": ` + parseOnceGraph + `, "client_id": "c1"}`,
			kernel: workflow.Counts{Decodes: 1, Graphs: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws := dialHub(t, base, "c1")
			before := workflow.ReadCounts()
			recBefore, getsBefore := job.ReadCounts()
			id := submit(t, base+tc.path, tc.body)
			// The hub's last message for a prompt comes after the result
			// cache has stored it: the job's path ends there.
			waitEnd(t, ws, id)
			after := workflow.ReadCounts()
			got := workflow.Counts{Decodes: after.Decodes - before.Decodes, Graphs: after.Graphs - before.Graphs}
			recs, gets := job.ReadCounts()
			recs, gets = recs-recBefore, gets-getsBefore
			wc := readWorkerCounts(t, n, id)
			if j, err := n.Store.Get(id); err != nil || j.State != job.Done {
				t.Fatalf("job %s: %+v, %v; want done", id, j, err)
			}
			t.Logf("kiln: %d workflow decodes, %d graphs built, %d job records decoded (%d by Store.Get); worker: %d graphs, msgpack map: %v",
				got.Decodes, got.Graphs, recs, gets, wc.Graphs, wc.MsgpackMap)
			if got != tc.kernel {
				t.Errorf("kiln decoded the workflow %d times and built %d graphs; want %d and %d",
					got.Decodes, got.Graphs, tc.kernel.Decodes, tc.kernel.Graphs)
			}
			if gets > 0 {
				t.Errorf("kiln read the job back from the store %d times (Store.Get); want none: the store hands back what it wrote", gets)
			}
			if wc.Graphs != 1 {
				t.Errorf("the worker built %d graphs; want 1", wc.Graphs)
			}
			if wc.MsgpackMap {
				t.Error("the worker got the graph as a msgpack map; want the stored JSON bytes (protocol 1.3)")
			}
			if recs > 0 {
				t.Errorf("kiln decoded %d stored job records on the job's path; want none: every transition builds the next record from what the store keeps", recs)
			}
		})
	}
	// The history lists each finished job from one decode of its record
	// and never decodes a workflow (the output nodes are in the record).
	t.Run("history", func(t *testing.T) {
		counts := n.Store.Counts()
		finished := counts[job.Done] + counts[job.Failed] + counts[job.Cancelled]
		if finished == 0 {
			t.Skip("no finished job to list: the history is checked after the submit subtests")
		}
		before := workflow.ReadCounts()
		recBefore, getsBefore := job.ReadCounts()
		var hist map[string]struct {
			Prompt []json.RawMessage `json:"prompt"`
		}
		getJSON(t, base+"/history", &hist)
		after := workflow.ReadCounts()
		recs, gets := job.ReadCounts()
		if len(hist) != finished {
			t.Fatalf("/history has %d entries; want the %d finished jobs", len(hist), finished)
		}
		for id, e := range hist {
			if len(e.Prompt) != 5 || string(e.Prompt[4]) != `["9"]` {
				t.Errorf("/history %s: prompt %s; want its output node [\"9\"] last", id, e.Prompt)
			}
		}
		if d := after.Decodes - before.Decodes; d != 0 {
			t.Errorf("/history decoded %d workflows; want none", d)
		}
		if recs-recBefore != uint64(finished) || gets != getsBefore {
			t.Errorf("/history decoded %d job records (%d by Store.Get); want one per entry, %d, and no Get", recs-recBefore, gets-getsBefore, finished)
		}
	})
	// Cancelling a running job: the store commits the cancellation and
	// hands the job over, and the dispatcher reports the end with it once
	// the worker has stopped; nothing reads the job back.
	t.Run("cancel running", func(t *testing.T) {
		events, stop := n.Dispatcher.Subscribe(256)
		defer stop()
		held := strings.Replace(parseOnceGraph, `"9": {`, `"10": {"class_type": "`+holdClass+`", "inputs": {}},
 "9": {`, 1)
		before := workflow.ReadCounts()
		recBefore, getsBefore := job.ReadCounts()
		id := submit(t, base+"/v1/jobs", `{"workflow": `+held+`}`)
		out := n.cfg.OutputDir
		if out == "" {
			out = filepath.Join(n.cfg.DataDir, "output")
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := os.Stat(filepath.Join(out, id+".holding")); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the job did not start running on the worker within 30 s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		req, _ := http.NewRequest(http.MethodDelete, base+"/v1/jobs/"+id, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("DELETE /v1/jobs/%s: %s", id, resp.Status)
		}
		timeout := time.After(30 * time.Second)
		for done := false; !done; {
			select {
			case e := <-events:
				done = e.Type == job.EventFinished && e.JobID == id
				if done && (e.Job == nil || e.Job.State != job.Cancelled) {
					t.Errorf("finished event %+v; want the cancelled job with it", e)
				}
			case <-timeout:
				t.Fatal("no finished event within 30 s of the cancellation")
			}
		}
		after := workflow.ReadCounts()
		recs, gets := job.ReadCounts()
		if d := after.Decodes - before.Decodes; d != 1 {
			t.Errorf("%d workflow decodes; want 1, at submit", d)
		}
		if recs != recBefore || gets != getsBefore {
			t.Errorf("%d job records decoded (%d by Store.Get) from submit to the cancelled job's end; want none", recs-recBefore, gets-getsBefore)
		}
	})
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %s: %v", url, b, err)
	}
}

// startCountingNode runs a whole kiln node in this process, on one
// simulated device with one countingWorker process, a synthetic SD1.5
// checkpoint in its models directory and no storage plugin (the models
// directory served as it is). It returns the node and its API's base URL.
func startCountingNode(t *testing.T) (*Node, string) {
	t.Helper()
	dir := t.TempDir()
	models := filepath.Join(dir, "models")
	if _, err := modelfile.SynthStore(models, []workflow.ModelRef{{ID: "checkpoints/v1-5.safetensors"}}, 1e-6, 1); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.LoadOptions{Sets: []string{
		"listen=127.0.0.1:0", "data_dir=" + filepath.Join(dir, "data"), "models_dir=" + models,
		"devices.backend=sim", "workers.per_device=1", "workers.command=" + exe,
		"workers.env=[" + workerEnv + "=1]", "plugins.dir=" + filepath.Join(dir, "no-plugins"),
		"devices.simulated=[{name: g0, memory_bytes: 8589934592, h2d_bytes_per_s: 12e9, compute_factor: 1}]",
	}})
	if err != nil {
		t.Fatal(err)
	}
	addr := make(chan net.Addr, 1)
	n, err := New(cfg, Options{Log: zerolog.Nop(), OnListening: func(a net.Addr) { addr <- a }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("node did not stop within 30 s")
		}
	})
	var base string
	select {
	case a := <-addr:
		base = "http://" + a.String()
	case err := <-done:
		t.Fatalf("node stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("node did not listen within 30 s")
	}
	deadline := time.Now().Add(30 * time.Second)
	for n.Pool.Ready() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no worker ready within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return n, base
}

func submit(t *testing.T, url, body string) string {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %s %s", url, resp.Status, b)
	}
	var r struct {
		ID       string `json:"id"`
		PromptID string `json:"prompt_id"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("POST %s: %s: %v", url, b, err)
	}
	if r.PromptID != "" {
		return r.PromptID
	}
	return r.ID
}

func dialHub(t *testing.T, base, clientID string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, strings.Replace(base, "http", "ws", 1)+"/ws?clientId="+clientID, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return conn
}

// waitEnd reads the hub's messages until the one that ends prompt id:
// "executing" with no node.
func waitEnd(t *testing.T, conn *websocket.Conn, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		typ, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("waiting for the end of %s: %v", id, err)
		}
		if typ != websocket.MessageText {
			continue
		}
		var m struct {
			Type string `json:"type"`
			Data struct {
				Node     *string `json:"node"`
				PromptID string  `json:"prompt_id"`
			} `json:"data"`
		}
		if json.Unmarshal(b, &m) == nil && m.Type == "executing" && m.Data.Node == nil && m.Data.PromptID == id {
			return
		}
	}
}

func readWorkerCounts(t *testing.T, n *Node, id string) workerCounts {
	t.Helper()
	out := n.cfg.OutputDir
	if out == "" {
		out = filepath.Join(n.cfg.DataDir, "output")
	}
	b, err := os.ReadFile(filepath.Join(out, id+".counts"))
	if err != nil {
		t.Fatal(err)
	}
	var c workerCounts
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}
