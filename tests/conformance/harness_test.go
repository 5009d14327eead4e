package conformance

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/modelfile"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// PythonInterpreter is the interpreter the Python workers run under: Debian's,
// which has python3-msgpack (a pyenv python3 on PATH may not).
const PythonInterpreter = "/usr/bin/python3"

// impl is one worker implementation under test.
type impl struct {
	name string
	argv []string
	skip string // non-empty: why this implementation cannot run here
}

var impls []impl

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kiln-conformance-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sim := filepath.Join(dir, "kiln-worker-sim")
	cmd := exec.Command("go", "build", "-o", sim, "../../cmd/kiln-worker-sim")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build kiln-worker-sim: %v\n", err)
		os.Exit(1)
	}
	echo, _ := filepath.Abs("../../sdk/python/kiln-worker-echo")
	impls = []impl{
		{name: "sim", argv: []string{sim}},
		{name: "python", argv: []string{PythonInterpreter, echo}, skip: pythonSkipReason()},
	}
	if v := os.Getenv("KILN_CONFORMANCE_WORKER"); v != "" {
		name, cmdline, _ := strings.Cut(v, "=")
		impls = append(impls, impl{name: name, argv: strings.Fields(cmdline)})
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// pythonSkipReason says why the Python worker cannot run, or "".
func pythonSkipReason() string {
	if _, err := os.Stat(PythonInterpreter); err != nil {
		return PythonInterpreter + " not found: Python conformance runs skipped"
	}
	if out, err := exec.Command(PythonInterpreter, "-c", "import msgpack").CombinedOutput(); err != nil {
		return fmt.Sprintf("%s has no msgpack (apt-get install python3-msgpack): Python conformance runs skipped: %s",
			PythonInterpreter, strings.TrimSpace(string(out)))
	}
	return ""
}

// forEach runs fn as a subtest for every worker implementation.
func forEach(t *testing.T, fn func(t *testing.T, w impl)) {
	t.Helper()
	for _, w := range impls {
		t.Run(w.name, func(t *testing.T) {
			if w.skip != "" {
				t.Skip(w.skip)
			}
			t.Parallel()
			fn(t, w)
		})
	}
}

// frame is one frame read from the worker, decoded to a generic body.
type frame struct {
	hdr  wire.Header
	body map[string]any
}

// worker is one running worker process and the kernel's end of its socket.
type worker struct {
	t       *testing.T
	cmd     *exec.Cmd
	conn    net.Conn
	outDir  string
	frames  chan frame // closed at end of stream
	readErr error      // set before frames is closed
	exited  chan struct{}
	log     *lockedBuffer
	nextID  uint64
	wmu     sync.Mutex
}

// fastOptions makes both reference workers quick: the sim charges 1‰ of
// its cost model, the echo worker 30 µs per step.
var fastOptions = map[string]any{"cost": map[string]any{"time_scale": 0.001}}

// slowOptions makes a 10000-step run last many seconds in both workers, so
// that tests can act while it is in flight.
var slowOptions = map[string]any{"cost": map[string]any{"time_scale": 0.05}}

// start starts the worker with the kernel's environment and fd 3, without
// sending hello.
func start(t *testing.T, w impl, env ...string) *worker {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	kernelEnd, workerEnd := os.NewFile(uintptr(fds[0]), "kernel"), os.NewFile(uintptr(fds[1]), "worker")
	conn, err := net.FileConn(kernelEnd)
	kernelEnd.Close()
	if err != nil {
		t.Fatal(err)
	}
	p := &worker{t: t, conn: conn, outDir: t.TempDir(), frames: make(chan frame, 1024),
		exited: make(chan struct{}), log: &lockedBuffer{}, nextID: 1}
	p.cmd = exec.Command(w.argv[0], w.argv[1:]...)
	p.cmd.ExtraFiles = []*os.File{workerEnd}
	p.cmd.Env = append(os.Environ(), "KILN_WORKER_ID=conf-w0", "KILN_PROTOCOL=1", "CUDA_VISIBLE_DEVICES=")
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	workerEnd.Close()
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	go p.readLoop()
	t.Cleanup(func() {
		conn.Close()
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("worker log:\n%s", p.log.String())
		}
	})
	return p
}

// startHello starts the worker and completes hello with options.
func startHello(t *testing.T, w impl, options map[string]any, env ...string) (*worker, map[string]any) {
	t.Helper()
	p := start(t, w, env...)
	f := p.call(wire.TypeHello, p.helloBody(1, options))
	if f.hdr.Type != wire.TypeOK {
		t.Fatalf("hello: %s %v", f.hdr.Type, f.body)
	}
	return p, f.body
}

func (p *worker) helloBody(protocol int, options map[string]any) wire.HelloRequest {
	return wire.HelloRequest{Protocol: protocol, WorkerID: "conf-w0", OutputDir: p.outDir, Options: options,
		Device: wire.DeviceInfo{Index: 0, Name: "conformance", ComputeFactor: 1, Simulated: true}}
}

func (p *worker) readLoop() {
	r := bufio.NewReader(p.conn)
	for {
		hdr, raw, err := wire.ReadFrame(r)
		if err != nil {
			p.readErr = err
			close(p.frames)
			return
		}
		var body map[string]any
		if err := wire.DecodeBody(raw, &body); err != nil {
			p.readErr = fmt.Errorf("decode %s body: %w", hdr.Type, err)
			close(p.frames)
			return
		}
		p.frames <- frame{hdr: hdr, body: body}
	}
}

// send writes a request with a fresh id and returns the id.
func (p *worker) send(typ string, body any) uint64 {
	p.t.Helper()
	p.wmu.Lock()
	id := p.nextID
	p.nextID++
	p.wmu.Unlock()
	p.sendID(id, typ, body)
	return id
}

// sendID writes a request with the given id.
func (p *worker) sendID(id uint64, typ string, body any) {
	p.t.Helper()
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := wire.WriteFrame(p.conn, wire.Header{ID: id, Type: typ}, body); err != nil {
		p.t.Fatalf("send %s: %v", typ, err)
	}
}

// next returns the next frame, failing the test after timeout.
func (p *worker) next(timeout time.Duration) frame {
	p.t.Helper()
	select {
	case f, ok := <-p.frames:
		if !ok {
			p.t.Fatalf("worker closed the stream: %v", p.readErr)
		}
		return f
	case <-time.After(timeout):
		p.t.Fatalf("no frame from the worker within %s", timeout)
	}
	return frame{}
}

// call sends a request and returns its terminal frame; progress and other
// requests' frames are checked to carry a known id and otherwise dropped.
func (p *worker) call(typ string, body any) frame {
	p.t.Helper()
	id := p.send(typ, body)
	return p.waitTerminal(id, 20*time.Second, nil)
}

// waitTerminal reads until the terminal frame of id, passing every frame
// (its own progress included) to seen when seen is non-nil.
func (p *worker) waitTerminal(id uint64, timeout time.Duration, seen func(frame)) frame {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f := p.next(time.Until(deadline))
		if seen != nil {
			seen(f)
		}
		if f.hdr.ID == id && f.hdr.Type != wire.TypeProgress {
			return f
		}
	}
}

// waitExit waits for the process to exit and returns its status.
func (p *worker) waitExit(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		p.t.Fatalf("worker did not exit within %s", timeout)
	}
	return -1
}

// waitEOF waits for the worker to close its end of the socket.
func (p *worker) waitEOF(timeout time.Duration) {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case f, ok := <-p.frames:
			if !ok {
				if !errors.Is(p.readErr, io.EOF) && !errors.Is(p.readErr, net.ErrClosed) &&
					!strings.Contains(fmt.Sprint(p.readErr), "connection reset") {
					p.t.Fatalf("stream ended with %v, want end-of-file", p.readErr)
				}
				return
			}
			_ = f
		case <-deadline:
			p.t.Fatalf("worker did not close the socket within %s", timeout)
		}
	}
}

// code returns the error code of an error frame, failing otherwise.
func code(t *testing.T, f frame) string {
	t.Helper()
	if f.hdr.Type != wire.TypeError {
		t.Fatalf("got %s %v, want an error frame", f.hdr.Type, f.body)
	}
	c, _ := f.body["code"].(string)
	if msg, _ := f.body["message"].(string); msg == "" {
		t.Errorf("error %s has no message", c)
	}
	return c
}

// lockedBuffer collects a worker's stdout and stderr.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ModelID is the model the test workflows load.
const ModelID = "checkpoints/conformance-v1-5.safetensors"

// synthModel writes a small sd15 safetensors file and returns its load
// request.
func synthModel(t *testing.T) wire.LoadRequest {
	t.Helper()
	path := filepath.Join(t.TempDir(), "conformance-v1-5.safetensors")
	spec := modelfile.Spec{ID: ModelID, Family: "sd15", NominalBytes: 2 << 30, Scale: 0.002, Seed: 7}
	if err := modelfile.SynthFile(path, spec); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return wire.LoadRequest{Model: ModelID, Path: path, Bytes: st.Size(), Family: "sd15"}
}

// txt2img returns a minimal sd15 text-to-image workflow.
func txt2img(width, height, batch, steps int, prefix string) map[string]any {
	return map[string]any{
		"4": map[string]any{"class_type": "CheckpointLoaderSimple", "inputs": map[string]any{"ckpt_name": "conformance-v1-5.safetensors"}},
		"5": map[string]any{"class_type": "EmptyLatentImage", "inputs": map[string]any{"width": width, "height": height, "batch_size": batch}},
		"6": map[string]any{"class_type": "CLIPTextEncode", "inputs": map[string]any{"text": "a kiln", "clip": []any{"4", 1}}},
		"7": map[string]any{"class_type": "CLIPTextEncode", "inputs": map[string]any{"text": "", "clip": []any{"4", 1}}},
		"3": map[string]any{"class_type": "KSampler", "inputs": map[string]any{
			"model": []any{"4", 0}, "positive": []any{"6", 0}, "negative": []any{"7", 0}, "latent_image": []any{"5", 0},
			"seed": 42, "steps": steps, "cfg": 7, "sampler_name": "euler", "scheduler": "normal", "denoise": 1}},
		"8": map[string]any{"class_type": "VAEDecode", "inputs": map[string]any{"samples": []any{"3", 0}, "vae": []any{"4", 2}}},
		"9": map[string]any{"class_type": "SaveImage", "inputs": map[string]any{"images": []any{"8", 0}, "filename_prefix": prefix}},
	}
}

// runRequest builds a run request for the test workflow.
func runRequest(jobID string, wf map[string]any) wire.RunRequest {
	return wire.RunRequest{JobID: jobID, Attempt: 1, Workflow: wf, Models: []string{ModelID}}
}

// loaded starts a worker, completes hello and loads the test model.
func loaded(t *testing.T, w impl, options map[string]any, env ...string) (*worker, wire.LoadRequest) {
	t.Helper()
	p, _ := startHello(t, w, options, env...)
	req := synthModel(t)
	if f := p.call(wire.TypeLoad, req); f.hdr.Type != wire.TypeOK {
		t.Fatalf("load: %s %v", f.hdr.Type, f.body)
	}
	return p, req
}

// num converts a decoded msgpack number to int64.
func num(v any) int64 {
	switch x := v.(type) {
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case int64:
		return x
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	case uint64:
		return int64(x)
	case int:
		return int64(x)
	case float64:
		return int64(x)
	}
	return -1
}
