package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/kiln-gpu/kiln/internal/clock"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// State is where a worker process is in its life.
type State string

// Worker states. Only a Ready worker takes new jobs.
const (
	Starting  State = "starting"
	Ready     State = "ready"
	Busy      State = "busy"
	Stopping  State = "stopping"
	Backoff   State = "backoff" // crashed; waiting before the next start
	Stopped   State = "stopped"
	Recycling State = "recycling"
)

// ErrNotReady is returned when a call is made to a worker that has no live
// process.
var ErrNotReady = errors.New("worker not ready")

// PoolOptions are the pool's collaborators.
type PoolOptions struct {
	// Devices lists the devices to start workers on; PerDevice workers each.
	Devices []wire.DeviceInfo
	// OutputDir is passed to workers in hello.
	OutputDir string
	// Options is passed to workers in hello (for kiln-worker-sim: "cost").
	Options map[string]any
	// Clock drives backoff and health checks.
	Clock clock.Clock
	Log   zerolog.Logger
	// OnReady is called (without locks held) when a worker becomes ready to
	// take a job: after a start, after a job, after a recycle.
	OnReady func(w *Worker)
	// OnExit is called when a worker's process has gone, with the models
	// that were resident in it, so that their VRAM reservations can be
	// released. Calls in flight on the worker fail with ErrConnClosed.
	OnExit func(w *Worker, resident []string, reason string)
}

// Pool supervises the worker processes: it starts N per device, pings them,
// restarts them with backoff when they die, and recycles them after a number
// of jobs.
//
//	p, err := worker.NewPool(cfg, opts)
//	p.Start(ctx)          // returns at once; workers come up in the background
//	l, ok := p.Acquire("w0.1") // mark a ready worker busy
//	res, err := l.Worker.Run(ctx, req, onProgress)
//	p.Release(l, true)         // back to ready (or recycled)
//	p.Stop()              // kills every process; no orphans
type Pool struct {
	cfg  Config
	opts PoolOptions
	log  zerolog.Logger
	clk  clock.Clock

	workers []*Worker
	wg      sync.WaitGroup
	cancel  context.CancelFunc

	spawn   chan spawnRequest
	classes atomic.Pointer[nodeClassSet]
}

// Worker is one supervised worker slot. Its process may be restarted many
// times; Generation counts the starts.
type Worker struct {
	id     string
	device wire.DeviceInfo
	pool   *Pool

	mu         sync.Mutex
	state      State
	conn       *Conn
	proc       *os.Process
	pid        int
	generation uint64
	jobsDone   int // since the current process started
	jobsTotal  int
	restarts   int
	lastError  string
	startedAt  time.Time
	resident   map[string]int64 // model → VRAM bytes reported by the worker
	// h2d is the host → device rate of this worker's loads, bytes/s, as
	// its load replies measure it (an exponential average; 0 until one
	// is measured). It outlives a process restart: it is the device's.
	h2d        float64
	hello      wire.HelloReply
	recycle    bool
	killReason string
}

// Info is a snapshot of a worker for the API and the policies.
type Info struct {
	ID         string           `json:"id"`
	Device     int              `json:"device"`
	DeviceName string           `json:"device_name"`
	State      State            `json:"state"`
	PID        int              `json:"pid,omitempty"`
	Generation uint64           `json:"generation"`
	JobsDone   int              `json:"jobs_done"`
	Restarts   int              `json:"restarts"`
	LastError  string           `json:"last_error,omitempty"`
	Resident   map[string]int64 `json:"resident"`
	Name       string           `json:"name,omitempty"`
	Version    string           `json:"version,omitempty"`
	// H2DBytesPerS is the measured host → device rate of the worker's
	// loads (bytes on the device over the load's time as the worker
	// reports it); 0 until a load has been measured.
	H2DBytesPerS float64 `json:"h2d_bytes_per_s,omitempty"`
}

// NewPool validates the configuration and prepares one slot per worker.
func NewPool(cfg Config, opts PoolOptions) (*Pool, error) {
	if cfg.PerDevice < 1 {
		return nil, fmt.Errorf("workers.per_device: must be ≥ 1, got %d", cfg.PerDevice)
	}
	if len(opts.Devices) == 0 {
		return nil, errors.New("worker pool: no devices")
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real()
	}
	if opts.OnReady == nil {
		opts.OnReady = func(*Worker) {}
	}
	if opts.OnExit == nil {
		opts.OnExit = func(*Worker, []string, string) {}
	}
	if err := CheckWorker(cfg, opts.Devices); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	p := &Pool{cfg: cfg, opts: opts, log: opts.Log, clk: opts.Clock, spawn: make(chan spawnRequest)}
	for _, d := range opts.Devices {
		for slot := 0; slot < cfg.PerDevice; slot++ {
			p.workers = append(p.workers, &Worker{
				id:       fmt.Sprintf("w%d.%d", d.Index, slot),
				device:   d,
				pool:     p,
				state:    Stopped,
				resident: map[string]int64{},
			})
		}
	}
	return p, nil
}

// WithDefaults fills zero fields with the defaults of configs/kiln.yaml.
func (c Config) WithDefaults() Config {
	if c.PerDevice == 0 {
		c.PerDevice = 2
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 15 * time.Second
	}
	if c.PingInterval == 0 {
		c.PingInterval = 2 * time.Second
	}
	if c.PingTimeout == 0 {
		c.PingTimeout = 5 * time.Second
	}
	if c.RestartBackoffMin == 0 {
		c.RestartBackoffMin = 200 * time.Millisecond
	}
	if c.RestartBackoffMax == 0 {
		c.RestartBackoffMax = 10 * time.Second
	}
	return c
}

// Validate checks the worker section.
func (c Config) Validate() error {
	switch {
	case c.PerDevice < 1:
		return fmt.Errorf("workers.per_device: must be ≥ 1, got %d", c.PerDevice)
	case c.StartTimeout <= 0:
		return errors.New("workers.start_timeout: must be > 0")
	case c.PingInterval <= 0:
		return errors.New("workers.ping_interval: must be > 0")
	case c.PingTimeout <= 0:
		return errors.New("workers.ping_timeout: must be > 0")
	case c.RestartBackoffMin <= 0:
		return errors.New("workers.restart_backoff_min: must be > 0")
	case c.RestartBackoffMax < c.RestartBackoffMin:
		return errors.New("workers.restart_backoff_max: must be ≥ workers.restart_backoff_min")
	case c.RecycleAfterJobs < 0:
		return errors.New("workers.recycle_after_jobs: must be ≥ 0")
	case c.MaxRSSBytes < 0:
		return errors.New("workers.max_rss_bytes: must be ≥ 0")
	}
	return nil
}

// Start launches the supervisors. It returns at once.
func (p *Pool) Start(ctx context.Context) {
	ctx, p.cancel = context.WithCancel(ctx)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.spawner(ctx)
	}()
	for _, w := range p.workers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			w.supervise(ctx)
		}()
	}
}

// Stop kills every worker process and waits for the supervisors to end.
func (p *Pool) Stop() {
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
}

// Workers returns the worker slots (stable order: device, then slot).
func (p *Pool) Workers() []*Worker { return p.workers }

// Get returns the worker with the given id, or nil.
func (p *Pool) Get(id string) *Worker {
	for _, w := range p.workers {
		if w.id == id {
			return w
		}
	}
	return nil
}

// Infos returns a snapshot of every worker.
func (p *Pool) Infos() []Info {
	out := make([]Info, 0, len(p.workers))
	for _, w := range p.workers {
		out = append(out, w.Info())
	}
	return out
}

// Ready reports how many workers can take a job or are running one.
func (p *Pool) Ready() int {
	n := 0
	for _, w := range p.workers {
		if s := w.State(); s == Ready || s == Busy {
			n++
		}
	}
	return n
}

// Restarts is the total number of process restarts across all workers.
func (p *Pool) Restarts() int {
	n := 0
	for _, w := range p.workers {
		w.mu.Lock()
		n += w.restarts
		w.mu.Unlock()
	}
	return n
}

// Lease is a worker taken for one job. It names the process generation, so
// that a release that arrives after the process was replaced cannot free the
// replacement while it runs another job.
type Lease struct {
	Worker     *Worker
	Generation uint64
}

// NodeClasses returns the union of the node classes that the workers which
// have said hello advertise ("node:<Class>" capabilities), and whether any
// worker advertised classes at all (a worker that lists none accepts any
// graph, so nothing can be refused on its behalf).
func (p *Pool) NodeClasses() (map[string]bool, bool) {
	if c := p.classes.Load(); c != nil {
		return c.set, c.known
	}
	return nil, false
}

// nodeClassSet is the cached answer of NodeClasses; it is rebuilt when a
// worker says hello, not on every submission that asks.
type nodeClassSet struct {
	set   map[string]bool
	known bool
	specs map[string]any
}

// NodeSpecs returns the node specs (ComfyUI /object_info entries by class)
// that the workers sent in hello, merged; nil when none sent any.
func (p *Pool) NodeSpecs() map[string]any {
	if c := p.classes.Load(); c != nil {
		return c.specs
	}
	return nil
}

func (p *Pool) refreshNodeClasses() {
	out := map[string]bool{}
	known := false
	var specs map[string]any
	for _, w := range p.workers {
		w.mu.Lock()
		for class, spec := range w.hello.NodeSpecs {
			if specs == nil {
				specs = map[string]any{}
			}
			specs[class] = spec
		}
		for _, c := range w.hello.Capabilities {
			if cls, ok := strings.CutPrefix(c, "node:"); ok {
				out[cls] = true
				known = true
			}
		}
		w.mu.Unlock()
	}
	p.classes.Store(&nodeClassSet{set: out, known: known, specs: specs})
}

// Acquire marks a ready worker busy; ok is false when the worker is not ready
// (it died or was taken since the caller looked).
func (p *Pool) Acquire(id string) (Lease, bool) {
	w := p.Get(id)
	if w == nil {
		return Lease{}, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != Ready || !w.aliveLocked() {
		return Lease{}, false
	}
	w.state = Busy
	return Lease{Worker: w, Generation: w.generation}, true
}

// Release returns a leased worker after a job. It counts the job and, when
// the worker has done RecycleAfterJobs jobs, restarts its process gracefully.
func (p *Pool) Release(l Lease, jobCompleted bool) {
	w := l.Worker
	w.mu.Lock()
	if w.generation != l.Generation {
		w.mu.Unlock()
		return
	}
	if jobCompleted {
		w.jobsDone++
		w.jobsTotal++
	}
	if w.state != Busy {
		w.mu.Unlock()
		return
	}
	if p.cfg.RecycleAfterJobs > 0 && w.jobsDone >= p.cfg.RecycleAfterJobs {
		w.state = Recycling
		w.recycle = true
		conn := w.conn
		w.mu.Unlock()
		p.log.Info().Str("worker", w.id).Int("jobs", w.jobsDone).Msg("recycling worker")
		if conn != nil {
			conn.Close() // the worker sees EOF and exits; the supervisor restarts it
		}
		return
	}
	if !w.aliveLocked() {
		// The process died under the job; the supervisor is about to
		// notice. Marking it ready now would hand the next job to a corpse.
		w.state = Stopping
		w.mu.Unlock()
		return
	}
	w.state = Ready
	w.mu.Unlock()
	p.opts.OnReady(w)
}

// aliveLocked reports whether the worker's connection is up. Callers hold
// w.mu.
func (w *Worker) aliveLocked() bool {
	if w.conn == nil {
		return false
	}
	select {
	case <-w.conn.Done():
		return false
	default:
		return true
	}
}

// ID is the worker's stable slot id, e.g. "w0.1" (device 0, slot 1).
func (w *Worker) ID() string { return w.id }

// Device is the device the worker is pinned to.
func (w *Worker) Device() wire.DeviceInfo { return w.device }

// State returns the worker's current state.
func (w *Worker) State() State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state
}

// Generation counts the worker's process starts.
func (w *Worker) Generation() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.generation
}

// Resident returns the models loaded in the worker's process.
func (w *Worker) Resident() map[string]int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]int64, len(w.resident))
	for k, v := range w.resident {
		out[k] = v
	}
	return out
}

// Info returns a snapshot of the worker.
func (w *Worker) Info() Info {
	w.mu.Lock()
	defer w.mu.Unlock()
	res := make(map[string]int64, len(w.resident))
	for k, v := range w.resident {
		res[k] = v
	}
	return Info{
		ID: w.id, Device: w.device.Index, DeviceName: w.device.Name, State: w.state, PID: w.pid,
		Generation: w.generation, JobsDone: w.jobsTotal, Restarts: w.restarts, LastError: w.lastError,
		Resident: res, Name: w.hello.Name, Version: w.hello.Version, H2DBytesPerS: w.h2d,
	}
}

// PID returns the current process id (0 when none).
func (w *Worker) PID() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pid
}

func (w *Worker) currentConn() (*Conn, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conn == nil {
		return nil, fmt.Errorf("worker %s: %w", w.id, ErrNotReady)
	}
	return w.conn, nil
}

// Load makes a model resident in the worker's process.
func (w *Worker) Load(ctx context.Context, req wire.LoadRequest) (wire.LoadReply, error) {
	c, err := w.currentConn()
	if err != nil {
		return wire.LoadReply{}, err
	}
	var rep wire.LoadReply
	if err := c.Call(ctx, wire.TypeLoad, req, &rep); err != nil {
		return rep, fmt.Errorf("worker %s: load %s: %w", w.id, req.Model, err)
	}
	w.mu.Lock()
	if w.conn == c {
		w.resident[req.Model] = rep.VRAMBytes
	}
	w.sampleH2D(rep)
	w.mu.Unlock()
	return rep, nil
}

// minRateSample is the smallest load that is timed: below it the fixed
// costs of a load, not its bytes, decide the time (the tiers use the same
// floor).
const minRateSample = 64 << 10

// sampleH2D folds a load's measured rate into w.h2d (w.mu held). A load
// that found the model resident reports no time and is no sample.
func (w *Worker) sampleH2D(rep wire.LoadReply) {
	if rep.LoadNanos <= 0 || rep.VRAMBytes < minRateSample {
		return
	}
	bw := float64(rep.VRAMBytes) / (float64(rep.LoadNanos) / 1e9)
	if w.h2d == 0 {
		w.h2d = bw
		return
	}
	w.h2d = 0.7*w.h2d + 0.3*bw
}

// Unload frees a model in the worker's process.
func (w *Worker) Unload(ctx context.Context, model string) (wire.UnloadReply, error) {
	c, err := w.currentConn()
	if err != nil {
		return wire.UnloadReply{}, err
	}
	var rep wire.UnloadReply
	err = c.Call(ctx, wire.TypeUnload, wire.UnloadRequest{Model: model}, &rep)
	var werr *wire.Error
	if err != nil && !(errors.As(err, &werr) && werr.Code == wire.ErrCodeNotLoaded) {
		return rep, fmt.Errorf("worker %s: unload %s: %w", w.id, model, err)
	}
	w.mu.Lock()
	if w.conn == c {
		delete(w.resident, model)
	}
	w.mu.Unlock()
	return rep, nil
}

// Run executes one job on the worker.
func (w *Worker) Run(ctx context.Context, req wire.RunRequest, onProgress func(wire.Progress)) (wire.RunResult, error) {
	c, err := w.currentConn()
	if err != nil {
		return wire.RunResult{}, err
	}
	res, err := c.Run(ctx, req, onProgress)
	if err != nil {
		return res, fmt.Errorf("worker %s: run %s: %w", w.id, req.JobID, err)
	}
	return res, nil
}

// RunStaged executes one job whose request carries Stages, calling onStage
// for each stage the worker asks for (Conn.RunStaged).
func (w *Worker) RunStaged(ctx context.Context, req wire.RunRequest, onProgress func(wire.Progress),
	onStage func(stage int) error) (wire.RunResult, error) {
	c, err := w.currentConn()
	if err != nil {
		return wire.RunResult{}, err
	}
	res, err := c.RunStaged(ctx, req, onProgress, onStage)
	if err != nil {
		return res, fmt.Errorf("worker %s: run %s: %w", w.id, req.JobID, err)
	}
	return res, nil
}

// Speaks reports whether the worker's hello reply lists capability (e.g.
// wire.CapabilityStages).
func (w *Worker) Speaks(capability string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Contains(w.hello.Capabilities, capability)
}

// Stats asks the worker for its state.
func (w *Worker) Stats(ctx context.Context) (wire.StatsReply, error) {
	c, err := w.currentConn()
	if err != nil {
		return wire.StatsReply{}, err
	}
	var rep wire.StatsReply
	if err := c.Call(ctx, wire.TypeStats, struct{}{}, &rep); err != nil {
		return rep, fmt.Errorf("worker %s: stats: %w", w.id, err)
	}
	return rep, nil
}

// Kill ends the worker's process at once (SIGKILL), as a crash would. The
// supervisor restarts it. Used by the API's admin surface and by tests.
func (w *Worker) Kill(reason string) {
	w.mu.Lock()
	proc := w.proc
	w.killReason = reason
	w.mu.Unlock()
	if proc != nil {
		_ = proc.Kill()
	}
}

// supervise keeps one worker process alive until ctx ends.
func (w *Worker) supervise(ctx context.Context) {
	p := w.pool
	log := p.log.With().Str("worker", w.id).Logger()
	backoff := p.cfg.RestartBackoffMin
	for ctx.Err() == nil {
		w.setState(Starting)
		started := p.clk.Now()
		exitReason, err := w.runOnce(ctx, log)
		if ctx.Err() != nil {
			break
		}
		w.mu.Lock()
		recycled := w.recycle
		w.recycle = false
		if err != nil {
			w.lastError = err.Error()
		} else {
			w.lastError = exitReason
		}
		if !recycled {
			w.restarts++
		}
		w.mu.Unlock()
		if recycled {
			backoff = p.cfg.RestartBackoffMin
			continue
		}
		// A worker that stayed up for a while earns a fresh backoff; one
		// that dies straight after start backs off exponentially so that a
		// broken worker binary does not spin the CPU.
		if p.clk.Since(started) > 4*p.cfg.RestartBackoffMax {
			backoff = p.cfg.RestartBackoffMin
		}
		ev := log.Warn().Dur("backoff", backoff)
		if err != nil {
			ev = ev.Err(err)
		}
		ev.Str("reason", exitReason).Msg("worker exited; restarting")
		w.setState(Backoff)
		if p.clk.Sleep(ctx, backoff) != nil {
			break
		}
		backoff *= 2
		if backoff > p.cfg.RestartBackoffMax {
			backoff = p.cfg.RestartBackoffMax
		}
	}
	w.setState(Stopped)
}

func (w *Worker) setState(s State) {
	w.mu.Lock()
	w.state = s
	w.mu.Unlock()
}

// runOnce starts one process, says hello, health-checks it, and returns when
// it is gone. The returned reason says why it ended.
func (w *Worker) runOnce(ctx context.Context, log zerolog.Logger) (string, error) {
	p := w.pool
	proc, conn, err := p.startProcess(ctx, w, log)
	if err != nil {
		return "start failed", err
	}
	w.mu.Lock()
	w.generation++
	w.proc = proc.cmd.Process
	w.pid = proc.cmd.Process.Pid
	w.conn = conn
	w.jobsDone = 0
	w.killReason = ""
	w.startedAt = p.clk.Now()
	w.mu.Unlock()

	exited := make(chan error, 1)
	go func() { exited <- proc.wait() }()

	cleanup := func(reason string) string {
		conn.Close()
		_ = proc.cmd.Process.Kill()
		waitErr := <-exited
		w.mu.Lock()
		if w.killReason != "" {
			reason = w.killReason
		}
		resident := make([]string, 0, len(w.resident))
		for m := range w.resident {
			resident = append(resident, m)
		}
		sort.Strings(resident)
		w.resident = map[string]int64{}
		w.conn = nil
		w.proc = nil
		w.pid = 0
		w.state = Stopping
		w.mu.Unlock()
		if waitErr != nil {
			reason = fmt.Sprintf("%s (%v)", reason, waitErr)
		}
		p.opts.OnExit(w, resident, reason)
		return reason
	}

	helloCtx, cancel := context.WithTimeout(ctx, p.cfg.StartTimeout)
	var hr wire.HelloReply
	err = conn.Call(helloCtx, wire.TypeHello, wire.HelloRequest{
		Protocol:      wire.ProtocolVersion,
		ProtocolMinor: wire.ProtocolMinor,
		WorkerID:      w.id,
		Device:        w.device,
		OutputDir:     p.opts.OutputDir,
		Options:       p.opts.Options,
	}, &hr)
	cancel()
	if err == nil && hr.Protocol != wire.ProtocolVersion {
		err = fmt.Errorf("worker speaks protocol %d, kernel %d", hr.Protocol, wire.ProtocolVersion)
	}
	if err != nil {
		return cleanup("hello failed"), fmt.Errorf("worker %s: hello: %w", w.id, err)
	}
	w.mu.Lock()
	w.hello = hr
	w.state = Ready
	w.mu.Unlock()
	p.refreshNodeClasses()
	log.Info().Int("pid", proc.cmd.Process.Pid).Str("name", hr.Name).Int("device", w.device.Index).Msg("worker ready")
	p.opts.OnReady(w)

	for {
		select {
		case <-ctx.Done():
			return cleanup("kernel stopping"), nil
		case err := <-exited:
			exited <- err // cleanup waits on it again
			return cleanup("process exited"), nil
		case <-conn.Done():
			w.mu.Lock()
			recycling := w.recycle
			w.mu.Unlock()
			if recycling {
				// Give the worker a moment to exit on EOF by itself.
				select {
				case err := <-exited:
					exited <- err
				case <-p.clk.After(2 * time.Second):
				}
				return cleanup("recycled"), nil
			}
			return cleanup("connection closed"), nil
		case <-p.clk.After(p.cfg.PingInterval):
			if reason := w.healthCheck(ctx, conn); reason != "" {
				log.Warn().Str("reason", reason).Msg("worker unhealthy; killing it")
				return cleanup(reason), nil
			}
		}
	}
}

// healthCheck pings the worker and, when configured, bounds its memory. It
// returns a reason when the worker must be restarted.
func (w *Worker) healthCheck(ctx context.Context, conn *Conn) string {
	p := w.pool
	pctx, cancel := context.WithTimeout(ctx, p.cfg.PingTimeout)
	defer cancel()
	nonce := uint64(p.clk.Now().UnixNano())
	var rep wire.PingReply
	if err := conn.Call(pctx, wire.TypePing, wire.PingRequest{Nonce: nonce}, &rep); err != nil {
		if ctx.Err() != nil {
			return ""
		}
		return fmt.Sprintf("ping failed: %v", err)
	}
	if rep.Nonce != nonce {
		return "ping answered with a wrong nonce"
	}
	if p.cfg.MaxRSSBytes > 0 {
		var st wire.StatsReply
		if err := conn.Call(pctx, wire.TypeStats, struct{}{}, &st); err == nil && st.RSSBytes > p.cfg.MaxRSSBytes {
			w.mu.Lock()
			idle := w.state == Ready
			if idle {
				w.state = Recycling
				w.recycle = true
			}
			w.mu.Unlock()
			if idle {
				return fmt.Sprintf("resident memory %d bytes over workers.max_rss_bytes", st.RSSBytes)
			}
		}
	}
	return ""
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (p *process) wait() error {
	<-p.done
	return p.err
}

type spawnRequest struct {
	cmd   *exec.Cmd
	reply chan error
}

// spawner starts every worker process from one OS thread that never exits.
// Pdeathsig is delivered when the thread that forked the child dies, not the
// process, and the Go runtime may retire threads; pinning the forks to a
// thread that lives as long as the pool makes "the worker dies with kiln"
// hold.
func (p *Pool) spawner(ctx context.Context) {
	runtime.LockOSThread()
	// Never unlocked on purpose: the thread must outlive every child.
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-p.spawn:
			req.reply <- req.cmd.Start()
		}
	}
}

// startProcess creates the socketpair, starts the worker with its end on
// fd 3, and wraps the kernel's end in a Conn.
func (p *Pool) startProcess(ctx context.Context, w *Worker, log zerolog.Logger) (*process, *Conn, error) {
	path, err := p.command()
	if err != nil {
		return nil, nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	kernelEnd := os.NewFile(uintptr(fds[0]), "kiln-worker-"+w.id)
	workerEnd := os.NewFile(uintptr(fds[1]), "kiln-worker-fd3")
	defer workerEnd.Close()

	cmd := exec.Command(path, p.cfg.Args...)
	cmd.ExtraFiles = []*os.File{workerEnd} // becomes fd 3
	cmd.Env = append(workerEnv(p.cfg.Env, os.Getenv),
		"KILN_WORKER_ID="+w.id,
		"KILN_PROTOCOL="+strconv.Itoa(wire.ProtocolVersion),
		"CUDA_VISIBLE_DEVICES="+visibleDevice(w.device),
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		kernelEnd.Close()
		return nil, nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		kernelEnd.Close()
		return nil, nil, err
	}
	reply := make(chan error, 1)
	select {
	case p.spawn <- spawnRequest{cmd: cmd, reply: reply}:
	case <-ctx.Done():
		kernelEnd.Close()
		return nil, nil, ctx.Err()
	}
	if err := <-reply; err != nil {
		kernelEnd.Close()
		return nil, nil, fmt.Errorf("start %s: %w", path, err)
	}
	nc, err := net.FileConn(kernelEnd)
	kernelEnd.Close()
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, nil, fmt.Errorf("wrap socket: %w", err)
	}
	proc := &process{cmd: cmd, done: make(chan struct{})}
	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() { defer pipes.Done(); relayLog(stdout, log, "stdout") }()
	go func() { defer pipes.Done(); relayLog(stderr, log, "stderr") }()
	go func() {
		// Wait must follow the pipe readers draining, as os/exec requires.
		pipes.Wait()
		proc.err = cmd.Wait()
		close(proc.done)
	}()
	return proc, NewConn(nc, log), nil
}

// relayLog forwards a worker's output lines to the kernel log, so that a
// worker's crash message is visible where the operator looks.
func relayLog(r io.Reader, log zerolog.Logger, stream string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if json.Valid(line) && len(line) > 0 && line[0] == '{' {
			// A structured worker log line stays structured.
			log.Info().Str("stream", stream).RawJSON("worker_log", line).Msg("worker")
			continue
		}
		log.Info().Str("stream", stream).Msg(string(line))
	}
}

// DefaultEnv are the variables every worker gets from kiln's environment
// when kiln has them: what a process needs to find its interpreter, its
// libraries and a temporary directory, and nothing that could carry a
// secret.
var DefaultEnv = []string{"PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "PYTHONPATH"}

// workerEnv builds a worker's minimal environment from DefaultEnv and the
// configured extra entries.
func workerEnv(extra []string, getenv func(string) string) []string {
	var env []string
	seen := map[string]bool{}
	add := func(name, value string) {
		if !seen[name] {
			seen[name] = true
			env = append(env, name+"="+value)
		}
	}
	for _, e := range extra {
		if name, value, ok := strings.Cut(e, "="); ok {
			add(name, value)
		}
	}
	for _, name := range append(append([]string(nil), DefaultEnv...), extra...) {
		if strings.Contains(name, "=") {
			continue
		}
		if v := getenv(name); v != "" {
			add(name, v)
		}
	}
	return env
}

func visibleDevice(d wire.DeviceInfo) string {
	if d.UUID != "" && !d.Simulated {
		return d.UUID
	}
	return strconv.Itoa(d.Index)
}

// SimWorker is the simulated worker's executable name.
const SimWorker = "kiln-worker-sim"

// ErrSimulatedWorkerOnGPU is returned (wrapped) by CheckWorker.
var ErrSimulatedWorkerOnGPU = errors.New("the simulated worker would run on real GPUs")

// CheckWorker refuses a pool that would run the simulated worker
// (workers.command empty, or naming kiln-worker-sim) on devices NVML found:
// such a node would accept jobs, sleep and hand back gradient pictures
// while its GPUs idle. workers.simulate says it is meant.
func CheckWorker(cfg Config, devices []wire.DeviceInfo) error {
	if cfg.Simulate || (cfg.Command != "" && filepath.Base(cfg.Command) != SimWorker) {
		return nil
	}
	var real []string
	for _, d := range devices {
		if !d.Simulated {
			real = append(real, d.Name)
		}
	}
	if len(real) == 0 {
		return nil
	}
	return fmt.Errorf("workers: NVML found %d NVIDIA GPU(s) (%s) but workers.command runs %s, which sleeps instead of computing: "+
		"set workers.command to a real worker (sdk/python/kiln-worker-torch, or kiln_comfy with configs/comfyui-gpu.yaml), "+
		"or set workers.simulate=true to simulate on these GPUs on purpose (or devices.backend=sim to ignore them): %w",
		len(real), strings.Join(real, ", "), SimWorker, ErrSimulatedWorkerOnGPU)
}

// command resolves the worker executable: the configured one, else
// kiln-worker-sim beside the running binary, else on PATH.
func (p *Pool) command() (string, error) {
	if p.cfg.Command != "" {
		return exec.LookPath(p.cfg.Command)
	}
	if exe, err := os.Executable(); err == nil {
		cand := dirOf(exe) + "/" + SimWorker
		if st, err := os.Stat(cand); err == nil && !st.IsDir() {
			return cand, nil
		}
	}
	path, err := exec.LookPath(SimWorker)
	if err != nil {
		return "", errors.New("workers.command is empty and kiln-worker-sim is neither next to kiln nor on PATH")
	}
	return path, nil
}

func dirOf(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			return path[:i]
		}
	}
	return "."
}
