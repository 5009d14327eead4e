package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/cost"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// Name and Version identify this worker in its hello reply.
const (
	Name    = "kiln-worker-sim"
	Version = "0.1.0"
)

// Environment variables the worker reads.
const (
	// EnvWorkerID is set by the kernel to the worker's id (for logs).
	EnvWorkerID = "KILN_WORKER_ID"
	// EnvCrashAfterJobs makes the process exit with status 3 in the middle
	// of its N-th run, after the first progress message (crash tests).
	EnvCrashAfterJobs = "KILN_SIM_CRASH_AFTER_JOBS"
)

// CrashExitCode is the exit status of a crash asked for by EnvCrashAfterJobs.
const CrashExitCode = 3

// Sampling of the checksum: SampleChunks chunks of SampleChunkBytes spread
// evenly over the file (the whole file when it is smaller).
const (
	SampleChunks     = 64
	SampleChunkBytes = 64 << 10
)

// sim is the kiln-worker-sim Handler. It is safe for concurrent use: the
// protocol pipelines requests, so loads, runs and stats overlap.
type sim struct {
	log        zerolog.Logger
	clock      clock.Clock
	exit       func(code int) // os.Exit; tests replace it
	crashAfter int64          // crash in the middle of this run (1-based); 0: never

	mu        sync.Mutex
	cost      cost.Config
	dev       cost.Device
	memBytes  int64 // device memory; 0: unbounded
	outputDir string
	models    map[string]*model
	loading   map[string]chan struct{} // closed when the load in flight ends
	vramUsed  int64
	started   int64 // runs started, for crashAfter
	jobsDone  int64
	running   int
}

var _ wire.Handler = (*sim)(nil)

// model is one loaded model: the file's bytes mapped read-only, and what it
// costs on the device.
type model struct {
	id      string
	path    string
	family  string
	nominal int64
	vram    int64
	// streamed are the weight bytes beyond the load's VRAM budget: left
	// in the mapping and charged as a transfer every sampler step.
	streamed int64
	checksum string
	data     []byte // the mmap
}

// newSim returns a sim with default costs that sleeps on clk.
// previewLetters are the letters ComfyUI's PreviewImage draws its five
// prefix letters from (its list has "p" twice and no "w").
const previewLetters = "abcdefghijklmnopqrstupvxyz"

// previewLettersFor returns the five letters of a PreviewImage prefix:
// ComfyUI draws them at random; the sim derives them from the job and node
// ids, so that a re-run of the job writes, and overwrites, the same files.
func previewLettersFor(jobID, node string) string {
	sum := sha256.Sum256([]byte(jobID + "\x00" + node))
	b := make([]byte, 5)
	for i := range b {
		b[i] = previewLetters[int(sum[i])%len(previewLetters)]
	}
	return string(b)
}

func newSim(log zerolog.Logger, clk clock.Clock) *sim {
	return &sim{
		log:     log,
		clock:   clk,
		exit:    os.Exit,
		cost:    cost.Default(),
		dev:     cost.Device{ComputeFactor: 1},
		models:  map[string]*model{},
		loading: map[string]chan struct{}{},
	}
}

// configureFromEnv applies the worker's environment variables.
func (s *sim) configureFromEnv(getenv func(string) string) error {
	if v := getenv(EnvCrashAfterJobs); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return fmt.Errorf("%s=%q: want a positive integer", EnvCrashAfterJobs, v)
		}
		s.crashAfter = n
	}
	return nil
}

// Hello records the device, the output directory and the cost options.
func (s *sim) Hello(ctx context.Context, req wire.HelloRequest) (wire.HelloReply, error) {
	cfg := cost.Default()
	if raw, ok := req.Options["cost"]; ok && raw != nil {
		m, ok := raw.(map[string]any)
		if !ok {
			return wire.HelloReply{}, wire.Errorf(wire.ErrCodeBadRequest, "options.cost: want a map, got %T", raw)
		}
		c, err := cost.Decode(m)
		if err != nil {
			return wire.HelloReply{}, wire.Errorf(wire.ErrCodeBadRequest, "options.cost: %v", err)
		}
		cfg = c
	}
	if req.OutputDir == "" {
		return wire.HelloReply{}, wire.Errorf(wire.ErrCodeBadRequest, "output_dir is empty")
	}
	if req.Device.MemoryBytes > 1<<62 {
		return wire.HelloReply{}, wire.Errorf(wire.ErrCodeBadRequest, "device.memory_bytes %d out of range", req.Device.MemoryBytes)
	}
	s.mu.Lock()
	s.cost = cfg
	s.dev = cost.Device{H2DBytesPerS: req.Device.H2DBandwidth, ComputeFactor: req.Device.ComputeFactor}
	s.memBytes = int64(req.Device.MemoryBytes)
	s.outputDir = req.OutputDir
	s.mu.Unlock()
	s.log.Info().Str("device", req.Device.Name).Uint64("memory_bytes", req.Device.MemoryBytes).
		Float64("compute_factor", req.Device.ComputeFactor).Float64("time_scale", cfg.TimeScale).
		Str("output_dir", req.OutputDir).Msg("hello")
	caps := []string{"cancel", "progress", wire.CapabilityStages, wire.CapabilityStream}
	for _, class := range nodeClasses() {
		caps = append(caps, "node:"+class)
	}
	return wire.HelloReply{
		Protocol:     wire.ProtocolVersion,
		Name:         Name,
		Version:      Version,
		PID:          os.Getpid(),
		Capabilities: caps,
		NodeSpecs:    nodeSpecs(),
	}, nil
}

// Load maps the model file, checksums a sample of it, and charges the rest
// of the cost model's load time by sleeping.
func (s *sim) Load(ctx context.Context, req wire.LoadRequest) (wire.LoadReply, error) {
	if req.Model == "" || req.Path == "" {
		return wire.LoadReply{}, wire.Errorf(wire.ErrCodeBadRequest, "load: model and path are required")
	}
	// One load per model at a time; a second request waits for the first.
	for {
		s.mu.Lock()
		if m := s.models[req.Model]; m != nil {
			s.mu.Unlock()
			return wire.LoadReply{Model: m.id, VRAMBytes: m.vram, Checksum: m.checksum, StreamedBytes: m.streamed}, nil
		}
		ch, busy := s.loading[req.Model]
		if !busy {
			s.loading[req.Model] = make(chan struct{})
			s.mu.Unlock()
			break
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return wire.LoadReply{}, ctx.Err()
		}
	}
	m, elapsed, err := s.load(ctx, req)
	s.mu.Lock()
	close(s.loading[req.Model])
	delete(s.loading, req.Model)
	if err == nil {
		s.models[req.Model] = m
	}
	s.mu.Unlock()
	if err != nil {
		return wire.LoadReply{}, err
	}
	s.log.Info().Str("model", m.id).Str("family", m.family).Int64("nominal_bytes", m.nominal).
		Int64("vram_bytes", m.vram).Int64("streamed_bytes", m.streamed).Dur("took", elapsed).Msg("model loaded")
	return wire.LoadReply{Model: m.id, VRAMBytes: m.vram, LoadNanos: elapsed.Nanoseconds(), Checksum: m.checksum,
		StreamedBytes: m.streamed}, nil
}

// load does the work of Load for a model no one else is loading.
func (s *sim) load(ctx context.Context, req wire.LoadRequest) (*model, time.Duration, error) {
	start := s.clock.Now()
	f, err := os.Open(req.Path)
	if err != nil {
		return nil, 0, wire.Errorf(wire.ErrCodeFailed, "load %s: %v", req.Model, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, wire.Errorf(wire.ErrCodeFailed, "load %s: %v", req.Model, err)
	}
	size := st.Size()
	switch {
	case !st.Mode().IsRegular():
		return nil, 0, wire.Errorf(wire.ErrCodeBadRequest, "load %s: %s is not a regular file", req.Model, req.Path)
	case size != req.Bytes:
		return nil, 0, wire.Errorf(wire.ErrCodeBadRequest, "load %s: %s has %d bytes, request says %d", req.Model, req.Path, size, req.Bytes)
	case size == 0:
		return nil, 0, wire.Errorf(wire.ErrCodeBadRequest, "load %s: %s is empty", req.Model, req.Path)
	case int64(int(size)) != size:
		return nil, 0, wire.Errorf(wire.ErrCodeBadRequest, "load %s: %d bytes cannot be mapped", req.Model, size)
	}

	info, herr := readModelInfo(f, size)
	nominal, family, dtype := size, req.Family, ""
	if herr != nil {
		s.log.Debug().Err(herr).Str("model", req.Model).Msg("no safetensors header, charging the file size")
	} else {
		if info.nominal > 0 {
			nominal = info.nominal
		}
		if family == "" {
			family = info.family
		}
		dtype = info.dtype
	}

	s.mu.Lock()
	c, dev, limit := s.cost, s.dev, s.memBytes
	// A loader that casts on load (UNETLoader's weight_dtype) holds the
	// weights in that dtype: Flux-dev's bf16 file as fp8 takes half.
	vram := cost.WeightBytes(cost.VRAMBytes(family, nominal), dtype, req.WeightDType)
	var streamed int64
	if req.VRAMBudgetBytes > 0 && vram > req.VRAMBudgetBytes {
		// Weight streaming (protocol 1.2): the budget stays on the device,
		// the rest crosses PCIe every step.
		streamed, vram = vram-req.VRAMBudgetBytes, req.VRAMBudgetBytes
	}
	if limit > 0 && s.vramUsed+vram > limit {
		used := s.vramUsed
		s.mu.Unlock()
		return nil, 0, wire.Errorf(wire.ErrCodeOutOfMemory, "load %s: needs %d bytes of VRAM, %d of %d in use",
			req.Model, vram, used, limit)
	}
	s.vramUsed += vram // reserved now so that concurrent loads cannot overcommit
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		s.vramUsed -= vram
		s.mu.Unlock()
	}

	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		release()
		return nil, 0, wire.Errorf(wire.ErrCodeFailed, "load %s: mmap %s: %v", req.Model, req.Path, err)
	}
	sum := checksumSample(data)
	// Charge what the cost model says the load takes, less the real I/O
	// already spent.
	rest := c.LoadTime(family, nominal, dev) - s.clock.Since(start)
	if err := s.clock.Sleep(ctx, rest); err != nil {
		_ = unix.Munmap(data)
		release()
		return nil, 0, err
	}
	return &model{
		id: req.Model, path: req.Path, family: family, nominal: nominal,
		vram: vram, streamed: streamed, checksum: sum, data: data,
	}, s.clock.Since(start), nil
}

// checksumSample hashes SampleChunks chunks of SampleChunkBytes spread evenly
// over data (all of data when it is smaller) with SHA-256. Reading the
// mapping faults the pages in: this is the real I/O of a load.
func checksumSample(data []byte) string {
	h := sha256.New()
	n := int64(len(data))
	if n <= SampleChunks*SampleChunkBytes {
		h.Write(data)
		return hex.EncodeToString(h.Sum(nil))
	}
	span := n - SampleChunkBytes
	for i := int64(0); i < SampleChunks; i++ {
		off := span * i / (SampleChunks - 1)
		h.Write(data[off : off+SampleChunkBytes])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Unload unmaps a model and frees its VRAM.
func (s *sim) Unload(ctx context.Context, req wire.UnloadRequest) (wire.UnloadReply, error) {
	s.mu.Lock()
	m := s.models[req.Model]
	if m == nil {
		s.mu.Unlock()
		return wire.UnloadReply{}, wire.Errorf(wire.ErrCodeNotLoaded, "unload: model %q is not loaded", req.Model)
	}
	delete(s.models, req.Model)
	s.vramUsed -= m.vram
	s.mu.Unlock()
	if err := unix.Munmap(m.data); err != nil {
		// The bytes are no longer reachable; report but do not fail.
		s.log.Warn().Err(err).Str("model", m.id).Msg("munmap failed")
	}
	s.log.Info().Str("model", m.id).Int64("freed_bytes", m.vram).Msg("model unloaded")
	return wire.UnloadReply{Model: m.id, FreedBytes: m.vram}, nil
}

// Stats reports the loaded models, VRAM, jobs done, RSS and runs in flight.
func (s *sim) Stats(ctx context.Context) (wire.StatsReply, error) {
	s.mu.Lock()
	rep := wire.StatsReply{VRAMUsed: s.vramUsed, JobsDone: s.jobsDone, Running: s.running, NodeSpecs: nodeSpecs()}
	for _, m := range s.models {
		rep.Models = append(rep.Models, wire.ModelStat{Model: m.id, VRAMBytes: m.vram})
	}
	s.mu.Unlock()
	sort.Slice(rep.Models, func(i, j int) bool { return rep.Models[i].Model < rep.Models[j].Model })
	rss, err := readRSS()
	if err != nil {
		s.log.Debug().Err(err).Msg("read rss")
	}
	rep.RSSBytes = rss
	return rep, nil
}

// close unmaps every model (tests; a real process just exits).
func (s *sim) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, m := range s.models {
		_ = unix.Munmap(m.data)
		delete(s.models, id)
	}
	s.vramUsed = 0
}

// readRSS returns the resident set size from /proc/self/statm.
func readRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, fmt.Errorf("read statm: %w", err)
	}
	var size, resident int64
	if _, err := fmt.Sscan(string(b), &size, &resident); err != nil {
		return 0, fmt.Errorf("parse statm: %w", err)
	}
	return resident * int64(os.Getpagesize()), nil
}

// errCrashed is returned by Run after exit when exit returns (tests only).
var errCrashed = errors.New("simulated crash")
