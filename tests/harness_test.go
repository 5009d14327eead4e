// Package tests holds tests that start real kiln and worker processes and
// talk to them over real HTTP: end-to-end flow, crash recovery, bad input.
package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds kiln and kiln-worker-sim built once for the whole package.
var binDir string

func TestMain(m *testing.M) {
	// E2E_BIN_DIR names a folder of binaries built beforehand (make build's
	// layout), for machines that run a compiled test binary and have no Go
	// toolchain, such as a GPU machine lent for the NVML tests.
	if prebuilt := os.Getenv("E2E_BIN_DIR"); prebuilt != "" {
		abs, err := filepath.Abs(prebuilt)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		binDir = abs
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "kiln-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Every binary kiln runs, next to kiln as `make build` lays them out:
	// the daemon finds its worker and its storage and loader plugins there.
	for target, pkg := range map[string]string{
		"kiln": "../cmd/kiln", "kiln-worker-sim": "../cmd/kiln-worker-sim",
		"kiln-storage-fs": "../plugins/storage-fs", "kiln-storage-http": "../plugins/storage-http",
		"kiln-loader-safetensors": "../plugins/loader-safetensors", "kiln-loader-gguf": "../plugins/loader-gguf",
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, target), pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", target, err)
			os.Exit(1)
		}
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildPolicy builds the Go policy package pkg (relative to tests/) to a
// WASM module and returns its bytes.
func buildPolicy(t *testing.T, pkg string) []byte {
	t.Helper()
	wasm := filepath.Join(t.TempDir(), "policy.wasm")
	build := exec.Command("go", "build", "-buildmode=c-shared", "-o", wasm, pkg)
	build.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	module, err := os.ReadFile(wasm)
	if err != nil {
		t.Fatal(err)
	}
	return module
}

// modelStore synthesizes a small model store for the example workflows once
// per test binary run.
var modelStoreDir string

func modelStore(t *testing.T) string {
	t.Helper()
	if modelStoreDir != "" {
		return modelStoreDir
	}
	dir, err := os.MkdirTemp("", "kiln-e2e-models-")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(binDir, "kiln"), "models", "synth", "--dir", dir,
		"--from-workflows", "../examples/workflows", "--scale", "0.0005").CombinedOutput()
	if err != nil {
		t.Fatalf("models synth: %v\n%s", err, out)
	}
	modelStoreDir = dir
	return dir
}

// kilnProc is one running `kiln serve`.
type kilnProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	base    string
	dataDir string
	models  string
	sets    []string
	log     *syncBuffer
	exited  chan struct{}
}

// freePort finds a loopback port for a kiln to listen on.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startKiln starts kiln serve on a fresh port and waits until it is ready.
func startKiln(t *testing.T, dataDir string, sets ...string) *kilnProc {
	t.Helper()
	k := &kilnProc{t: t, dataDir: dataDir, models: modelStore(t), sets: sets}
	k.start(freePort(t))
	t.Cleanup(func() {
		k.stop()
		if t.Failed() {
			// A failure seen only by the test's HTTP client (an EOF, a
			// 500) is explained by kiln's own log.
			t.Logf("kiln's log, last lines:\n%s", k.logTail())
		}
	})
	return k
}

func (k *kilnProc) start(addr string) {
	k.t.Helper()
	args := []string{"serve", "--listen", addr, "--data-dir", k.dataDir, "--models", k.models,
		"--set", "log.format=json", "--set", "log.level=debug",
		"--set", "workers.command=" + filepath.Join(binDir, "kiln-worker-sim"),
		// On a GPU machine the harness still simulates, and says so (issue 16).
		"--set", "workers.simulate=true",
		"--set", "workers.restart_backoff_min=50ms", "--set", "workers.ping_interval=500ms"}
	for _, s := range k.sets {
		args = append(args, "--set", s)
	}
	k.cmd = exec.Command(filepath.Join(binDir, "kiln"), args...)
	k.log = &syncBuffer{}
	k.cmd.Stdout = k.log
	k.cmd.Stderr = k.log
	k.cmd.Env = os.Environ()
	if err := k.cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	k.exited = make(chan struct{})
	go func() { _ = k.cmd.Wait(); close(k.exited) }()
	k.base = "http://" + addr
	waitFor(k.t, 30*time.Second, "kiln ready", func() bool {
		select {
		case <-k.exited:
			k.t.Fatalf("kiln exited during start:\n%s", k.logTail())
		default:
		}
		resp, err := http.Get(k.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func (k *kilnProc) logTail() string {
	s := k.log.String()
	if len(s) > 8000 {
		s = s[len(s)-8000:]
	}
	return s
}

// stop asks kiln to stop (SIGTERM) and waits.
func (k *kilnProc) stop() {
	if k.cmd == nil || k.cmd.Process == nil {
		return
	}
	select {
	case <-k.exited:
		return
	default:
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(15 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.exited
	}
}

// kill9 kills kiln as a crash would.
func (k *kilnProc) kill9() {
	_ = k.cmd.Process.Kill()
	<-k.exited
}

// syncBuffer is a buffer that kiln's stdout and stderr copiers and the test
// may use at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fourModels are workflows of four different checkpoints (SD1.5, SDXL,
// SD1.5 with a LoRA, SD3): traffic in which where a job runs and what a
// device holds matter.
var fourModels = []string{"salad-comfyui-api__sd1.5-txt2img.api.json", "comfyui__tests_inference_graphs_default_graph_sdxl1_0.api.json",
	"comfyui__tests_inference_workflows_sd-1.5-lora-0.api.json", "worker-comfyui__workflow_sd3.api.json"}

// submitEvery submits the workflows in turn (2 steps, the submission's
// index as seed), in the classes in turn, one every interval, until the
// returned stop is called; the test's cleanup calls it too.
func (k *kilnProc) submitEvery(t *testing.T, every time.Duration, workflows, classes []string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-time.After(every):
			}
			k.submit(loadWorkflow(t, workflows[i%len(workflows)], 2, i), classes[i%len(classes)])
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (k *kilnProc) do(method, path string, body []byte) (int, []byte) {
	k.t.Helper()
	return k.request(method, path, body, "")
}

// admin is do with the admin token kiln generated in its data dir.
func (k *kilnProc) admin(method, path string, body []byte) (int, []byte) {
	k.t.Helper()
	tok, err := os.ReadFile(filepath.Join(k.dataDir, "admin.token"))
	if err != nil {
		k.t.Fatal(err)
	}
	return k.request(method, path, body, strings.TrimSpace(string(tok)))
}

func (k *kilnProc) request(method, path string, body []byte, token string) (int, []byte) {
	k.t.Helper()
	req, err := http.NewRequest(method, k.base+path, bytes.NewReader(body))
	if err != nil {
		k.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		k.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

type jobJSON struct {
	ID       string  `json:"id"`
	State    string  `json:"state"`
	Class    string  `json:"class"`
	Attempts int     `json:"attempts"`
	Worker   string  `json:"worker"`
	Error    *string `json:"error"`
	Outputs  []struct {
		Filename  string `json:"filename"`
		Subfolder string `json:"subfolder"`
	} `json:"outputs"`
	Progress *struct {
		Phase string `json:"phase"`
		Value int    `json:"value"`
		Max   int    `json:"max"`
	} `json:"progress"`
}

func (k *kilnProc) submit(workflow map[string]any, class string) string {
	k.t.Helper()
	body, _ := json.Marshal(map[string]any{"workflow": workflow, "class": class})
	code, data := k.do("POST", "/v1/jobs", body)
	if code != http.StatusAccepted {
		k.t.Fatalf("submit: HTTP %d: %s", code, data)
	}
	var acc struct{ ID, State string }
	if err := json.Unmarshal(data, &acc); err != nil || acc.ID == "" || acc.State != "queued" {
		k.t.Fatalf("submit answer %s: %v", data, err)
	}
	return acc.ID
}

func (k *kilnProc) job(id string) jobJSON {
	k.t.Helper()
	code, data := k.do("GET", "/v1/jobs/"+id, nil)
	if code != 200 {
		k.t.Fatalf("get job %s: HTTP %d: %s", id, code, data)
	}
	var j jobJSON
	if err := json.Unmarshal(data, &j); err != nil {
		k.t.Fatal(err)
	}
	return j
}

type workerJSON struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	PID      int    `json:"pid"`
	Restarts int    `json:"restarts"`
}

func (k *kilnProc) workers() []workerJSON {
	k.t.Helper()
	_, data := k.do("GET", "/v1/workers", nil)
	var out struct{ Workers []workerJSON }
	if err := json.Unmarshal(data, &out); err != nil {
		k.t.Fatalf("workers: %v: %s", err, data)
	}
	return out.Workers
}

// loadWorkflow reads an example workflow and sets its sampler steps.
func loadWorkflow(t *testing.T, name string, steps int, seed int) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("../examples/workflows", name))
	if err != nil {
		t.Fatal(err)
	}
	var g map[string]any
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	for _, n := range g {
		node := n.(map[string]any)
		in, _ := node["inputs"].(map[string]any)
		if strings.HasPrefix(node["class_type"].(string), "KSampler") {
			if steps > 0 {
				in["steps"] = steps
			}
			in["seed"] = seed
		}
	}
	return g
}

// processAlive reports whether pid names a live process (not a zombie).
func processAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state is the field after the parenthesised command name.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}

func syscallKill(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

// childPIDs lists the direct children of pid, from every thread's children
// file in /proc.
func childPIDs(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(data)) {
			var child int
			if _, err := fmt.Sscan(field, &child); err == nil {
				out = append(out, child)
			}
		}
	}
	return out
}
