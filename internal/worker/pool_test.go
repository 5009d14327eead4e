package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// The pool tests spawn the test binary itself as the worker process: when
// KILN_TEST_WORKER is set, TestMain serves the worker protocol on fd 3
// instead of running tests. The mode says how the worker misbehaves.
func TestMain(m *testing.M) {
	if mode := os.Getenv("KILN_TEST_WORKER"); mode != "" {
		err := wire.ServeFD3(&testWorker{mode: mode})
		if err != nil {
			fmt.Fprintln(os.Stderr, "test worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type testWorker struct {
	mode string
	jobs atomic.Int64
}

func (w *testWorker) Hello(_ context.Context, req wire.HelloRequest) (wire.HelloReply, error) {
	if w.mode == "bad-hello" {
		return wire.HelloReply{}, wire.Errorf(wire.ErrCodeUnsupported, "refusing on purpose")
	}
	return wire.HelloReply{Protocol: wire.ProtocolVersion, Name: "test-worker", PID: os.Getpid()}, nil
}

// testH2D is the host → device rate the test worker's loads report.
const testH2D = 10e9

func (w *testWorker) Load(_ context.Context, req wire.LoadRequest) (wire.LoadReply, error) {
	return wire.LoadReply{Model: req.Model, VRAMBytes: req.Bytes,
		LoadNanos: int64(float64(req.Bytes) / testH2D * 1e9)}, nil
}

func (w *testWorker) Unload(_ context.Context, req wire.UnloadRequest) (wire.UnloadReply, error) {
	return wire.UnloadReply{Model: req.Model}, nil
}

func (w *testWorker) Run(ctx context.Context, req wire.RunRequest, progress func(wire.Progress)) (wire.RunResult, error) {
	n := w.jobs.Add(1)
	progress(wire.Progress{JobID: req.JobID, Value: 1, Max: 2})
	if w.mode == "crash-on-run" {
		os.Exit(3)
	}
	if w.mode == "hang-on-run" {
		<-ctx.Done()
		return wire.RunResult{}, ctx.Err()
	}
	progress(wire.Progress{JobID: req.JobID, Value: 2, Max: 2})
	return wire.RunResult{JobID: req.JobID, Outputs: []wire.Output{{Filename: fmt.Sprintf("%d.png", n)}}}, nil
}

func (w *testWorker) Stats(context.Context) (wire.StatsReply, error) {
	return wire.StatsReply{JobsDone: w.jobs.Load()}, nil
}

var _ wire.Handler = (*testWorker)(nil)

// newTestPool builds a pool of one worker running the test binary in mode.
func newTestPool(t *testing.T, mode string, cfg Config, onExit func(*Worker, []string, string)) *Pool {
	t.Helper()
	t.Setenv("KILN_TEST_WORKER", mode)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Command = exe
	cfg.Env = append(cfg.Env, "KILN_TEST_WORKER")
	cfg.PerDevice = 1
	if cfg.RestartBackoffMin == 0 {
		cfg.RestartBackoffMin = 10 * time.Millisecond
		cfg.RestartBackoffMax = 50 * time.Millisecond
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = 100 * time.Millisecond
	}
	p, err := NewPool(cfg, PoolOptions{
		Devices: []wire.DeviceInfo{{Index: 0, Name: "sim-0", Simulated: true, MemoryBytes: 1 << 30}},
		Log:     zerolog.Nop(),
		OnExit:  onExit,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.Start(ctx)
	t.Cleanup(func() {
		cancel()
		p.Stop()
	})
	return p
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func acquire(t *testing.T, p *Pool) Lease {
	t.Helper()
	var l Lease
	waitUntil(t, "a ready worker", func() bool {
		var ok bool
		l, ok = p.Acquire("w0.0")
		return ok
	})
	return l
}

func TestPoolRunsJobs(t *testing.T) {
	p := newTestPool(t, "ok", Config{}, nil)
	for i := 0; i < 3; i++ {
		l := acquire(t, p)
		var steps int
		res, err := l.Worker.Run(context.Background(), wire.RunRequest{JobID: fmt.Sprint(i)}, func(wire.Progress) { steps++ })
		if err != nil {
			t.Fatal(err)
		}
		if steps != 2 || len(res.Outputs) != 1 {
			t.Fatalf("steps %d, outputs %v", steps, res.Outputs)
		}
		p.Release(l, true)
	}
	if got := p.Infos()[0].JobsDone; got != 3 {
		t.Fatalf("jobs done %d, want 3", got)
	}
}

// TestPoolMeasuresLoadRate: the worker's load replies give its host →
// device rate (a cluster node publishes it for the routing policy); a
// load too small to time, or one that reports no time, changes nothing.
func TestPoolMeasuresLoadRate(t *testing.T) {
	p := newTestPool(t, "ok", Config{}, nil)
	l := acquire(t, p)
	defer p.Release(l, true)
	if got := p.Infos()[0].H2DBytesPerS; got != 0 {
		t.Fatalf("rate before any load = %v, want 0", got)
	}
	if _, err := l.Worker.Load(context.Background(), wire.LoadRequest{Model: "checkpoints/tiny", Bytes: 1000}); err != nil {
		t.Fatal(err)
	}
	if got := p.Infos()[0].H2DBytesPerS; got != 0 {
		t.Fatalf("rate after a 1000-byte load = %v, want 0 (too small to time)", got)
	}
	for _, m := range []string{"checkpoints/a", "checkpoints/b"} {
		if _, err := l.Worker.Load(context.Background(), wire.LoadRequest{Model: m, Bytes: 2 << 30}); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.Infos()[0].H2DBytesPerS; got < 0.99*testH2D || got > 1.01*testH2D {
		t.Fatalf("rate after two 2 GiB loads = %v, want the %v the worker reported", got, testH2D)
	}
}

func TestPoolRestartsCrashedWorker(t *testing.T) {
	var mu sync.Mutex
	var reasons []string
	var residentAtExit []string
	p := newTestPool(t, "crash-on-run", Config{}, func(_ *Worker, resident []string, reason string) {
		mu.Lock()
		reasons = append(reasons, reason)
		residentAtExit = append(residentAtExit, resident...)
		mu.Unlock()
	})
	l := acquire(t, p)
	firstPID := l.Worker.PID()
	if _, err := l.Worker.Load(context.Background(), wire.LoadRequest{Model: "checkpoints/a", Bytes: 10}); err != nil {
		t.Fatal(err)
	}
	_, err := l.Worker.Run(context.Background(), wire.RunRequest{JobID: "j"}, nil)
	if !errors.Is(err, ErrConnClosed) {
		t.Fatalf("run on a crashing worker: %v, want ErrConnClosed", err)
	}
	// A release for the dead generation must not free the replacement.
	waitUntil(t, "the worker to restart", func() bool { return p.Get("w0.0").State() == Ready })
	p.Release(l, false)
	if got := p.Get("w0.0").State(); got != Ready {
		t.Fatalf("state after stale release %s", got)
	}
	l2 := acquire(t, p)
	if l2.Generation <= l.Generation || l2.Worker.PID() == firstPID {
		t.Fatalf("no new process: generation %d → %d, pid %d → %d", l.Generation, l2.Generation, firstPID, l2.Worker.PID())
	}
	if p.Restarts() < 1 {
		t.Fatalf("restarts %d", p.Restarts())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(residentAtExit) == 0 || residentAtExit[0] != "checkpoints/a" {
		t.Fatalf("OnExit resident %v, want the loaded model", residentAtExit)
	}
	if len(reasons) == 0 {
		t.Fatal("OnExit not called")
	}
}

func TestPoolBacksOffWhenWorkerCannotStart(t *testing.T) {
	p := newTestPool(t, "bad-hello", Config{RestartBackoffMin: 20 * time.Millisecond, RestartBackoffMax: 80 * time.Millisecond}, nil)
	waitUntil(t, "several failed starts", func() bool { return p.Restarts() >= 3 })
	in := p.Infos()[0]
	if in.State == Ready || in.LastError == "" {
		t.Fatalf("worker %+v should not be ready and should say why", in)
	}
	if p.Ready() != 0 {
		t.Fatalf("ready = %d", p.Ready())
	}
}

func TestPoolRecyclesAfterJobs(t *testing.T) {
	p := newTestPool(t, "ok", Config{RecycleAfterJobs: 2}, nil)
	var pids []int
	for i := 0; i < 4; i++ {
		l := acquire(t, p)
		pids = append(pids, l.Worker.PID())
		if _, err := l.Worker.Run(context.Background(), wire.RunRequest{JobID: fmt.Sprint(i)}, nil); err != nil {
			t.Fatal(err)
		}
		p.Release(l, true)
	}
	if pids[0] != pids[1] || pids[1] == pids[2] || pids[2] != pids[3] {
		t.Fatalf("pids %v: want a new process after every 2 jobs", pids)
	}
	if p.Restarts() != 0 {
		t.Fatalf("a recycle counted as a crash restart: %d", p.Restarts())
	}
}

func TestPoolKillsUnresponsiveWorker(t *testing.T) {
	// hang-on-run keeps Run busy but Serve still answers pings; a worker
	// killed from outside is a crash the supervisor must notice.
	p := newTestPool(t, "hang-on-run", Config{}, nil)
	l := acquire(t, p)
	done := make(chan error, 1)
	go func() {
		_, err := l.Worker.Run(context.Background(), wire.RunRequest{JobID: "j"}, nil)
		done <- err
	}()
	waitUntil(t, "the run to start", func() bool { return l.Worker.PID() != 0 })
	l.Worker.Kill("test kill")
	select {
	case err := <-done:
		if !errors.Is(err, ErrConnClosed) {
			t.Fatalf("run after kill: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after the worker was killed")
	}
	waitUntil(t, "restart", func() bool { return p.Get("w0.0").State() == Ready })
	if in := p.Infos()[0]; in.LastError == "" || in.Restarts != 1 {
		t.Fatalf("after kill: %+v", in)
	}
}

func TestWorkerEnvIsMinimal(t *testing.T) {
	kiln := map[string]string{"PATH": "/usr/bin", "HOME": "/root", "KILN_ADMIN_TOKEN": "secret", "AWS_SECRET_ACCESS_KEY": "x", "HF_HOME": "/cache"}
	got := workerEnv([]string{"HF_HOME", "EXTRA=1", "PATH=/opt/bin"}, func(k string) string { return kiln[k] })
	want := map[string]string{"PATH": "/opt/bin", "HOME": "/root", "HF_HOME": "/cache", "EXTRA": "1"}
	have := map[string]string{}
	for _, e := range got {
		k, v, _ := strings.Cut(e, "=")
		if _, dup := have[k]; dup {
			t.Errorf("%s set twice", k)
		}
		have[k] = v
	}
	if len(have) != len(want) {
		t.Errorf("env %v, want exactly %v", have, want)
	}
	for k, v := range want {
		if have[k] != v {
			t.Errorf("%s = %q, want %q", k, have[k], v)
		}
	}
}
