// Package node assembles one kiln daemon from its parts: devices, the
// durable queue, the worker pool, the dispatcher and the HTTP API.
//
// The start order is the dependency order and Run undoes it in reverse, so
// that no worker outlives the pool and no job is acknowledged without the
// store.
//
//	n, err := node.New(cfg, node.Options{Log: log})
//	err = n.Run(ctx) // serves until ctx ends; then stops everything
package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/api"
	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/cluster"
	"github.com/kiln-gpu/kiln/internal/config"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/dispatch"
	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/logging"
	"github.com/kiln-gpu/kiln/internal/metrics"
	"github.com/kiln-gpu/kiln/internal/plugin"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/predict"
	"github.com/kiln-gpu/kiln/internal/shadow"
	"github.com/kiln-gpu/kiln/internal/tier"
	"github.com/kiln-gpu/kiln/internal/tune"
	"github.com/kiln-gpu/kiln/internal/worker"
	sdkplugin "github.com/kiln-gpu/kiln/sdk/plugin"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// Options are what a node takes from outside besides its config.
type Options struct {
	Log   zerolog.Logger
	Clock clock.Clock
	// OnListening is called with the API's bound address.
	OnListening func(net.Addr)
}

// Node is one running kiln daemon.
type Node struct {
	cfg  *config.Config
	opts Options
	log  zerolog.Logger
	// demand is the recent demand per model the dispatcher counts and the
	// eviction entries of VRAM and of the host tiers carry (ABI 1.3).
	demand *predict.Demand

	Devices    *device.Set
	Store      *job.Store
	Plugins    *plugin.Host
	Tiers      *tier.Manager // nil when no storage plugin could be found
	Policies   *policy.Host
	Pool       *worker.Pool
	Dispatcher *dispatch.Dispatcher
	Catalog    *catalog.Catalog
	Metrics    *metrics.Metrics
	API        *api.Server
	// Shadow replays live model accesses into ghost caches under each
	// candidate eviction policy; Arrivals records recent arrivals for the
	// auto-tuner. Either is nil when off (see shadow.go).
	Shadow *shadow.Shadow
	// routingShadow puts each job a cluster node routes to other routing
	// policies too (experiments.shadow.routing); nil on a single node.
	routingShadow *experiment.RoutingShadow
	Arrivals      *tune.Recorder
	// Router stands between the dispatcher and the policies; Experiments
	// runs canaries, A/B tests and switchbacks through it (experiment.go).
	Router      *experiment.Router
	Experiments *experiment.Controller
	watch       *nodeWatch // the watch of changes made by hand (watch.go)
	replay      replayFeed // the running eviction experiment's cache replay (shadow.go)
	// Tuner is the background tuner of tune.auto (tune.go): it searches
	// the active policies' parameters in the simulator and canaries what
	// wins on a hold-out. Nil without an arrival recorder.
	Tuner *tune.Auto
	// Cluster is this node's membership of a kiln cluster (cluster.go);
	// nil on a single node.
	Cluster *cluster.Cluster

	addrMu sync.Mutex
	addr   net.Addr
}

// New opens the devices and the queue and prepares the pool. Nothing runs
// until Run. On error, whatever was opened is closed.
func New(cfg *config.Config, opts Options) (n *Node, err error) {
	if opts.Clock == nil {
		opts.Clock = clock.Real()
	}
	n = &Node{cfg: cfg, opts: opts, log: opts.Log, demand: predict.NewDemand()}
	// The error returns set n to nil, so the cleanup keeps its own pointer.
	opened := n
	defer func() {
		if err != nil {
			opened.close()
		}
	}()
	if err := checkExposure(cfg); err != nil {
		return nil, err
	}
	// Everything below hands paths to other processes (workers, plugins),
	// which run in their own working directories.
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	abs := *cfg
	abs.DataDir = dataDir
	cfg = &abs
	n.cfg = cfg
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	outDir := cfg.OutputDir
	if outDir == "" {
		outDir = filepath.Join(cfg.DataDir, "output")
	}
	if outDir, err = filepath.Abs(outDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("output dir: %w", err)
	}

	n.Devices, err = device.Open(cfg.Devices, logging.Component(opts.Log, "device"))
	if err != nil {
		return nil, err
	}
	var storeOpts []job.Option
	if cfg.Cluster.Enabled() {
		// In a cluster the local queue only runs what JetStream holds
		// replicated, and a restarted node drops its unfinished local jobs
		// (the cluster gives them out again): an fdatasync per change
		// would buy nothing but time on every job's path.
		storeOpts = append(storeOpts, job.WithoutSync())
	}
	n.Store, err = job.Open(filepath.Join(cfg.DataDir, "queue.db"), cfg.Queue, opts.Clock, storeOpts...)
	if err != nil {
		return nil, err
	}
	if hooks := job.TestHooks(); hooks != "" {
		n.log.Warn().Str("hooks", hooks).Msg("job store test hooks are on (set for a crash test; never in production): acknowledged jobs stay in the job log")
	}
	if r := n.Store.Recovered(); r > 0 {
		n.log.Info().Int("jobs", r).Msg("re-queued unfinished jobs from the last run")
	}
	modelsDir, err := filepath.Abs(cfg.ModelsDir)
	if err != nil {
		return nil, err
	}
	costCfg := cfg.Cost.WithDefaults()
	// The policy host comes before the tiers: the active eviction policy
	// picks their victims too (its fallback's native build when it faults).
	pcfg := cfg.Policies
	if pcfg.CacheDir == "" {
		// The compilation cache is keyed by module content and wazero's
		// version, so one per user serves every data dir and spares each
		// fresh node the built-ins' compile time.
		if dir, err := os.UserCacheDir(); err == nil {
			pcfg.CacheDir = filepath.Join(dir, "kiln", "policy-compilation")
		}
	}
	// Modules loaded through the API, the active choices and their history
	// survive a restart (internal/policy/persist.go).
	pcfg.StateDir = filepath.Join(cfg.DataDir, "policies")
	n.Policies, err = policy.NewHost(pcfg, logging.Component(opts.Log, "policy"), opts.Clock)
	if err != nil {
		return nil, err
	}
	// So does the router the dispatcher asks its policies through: an
	// eviction experiment decides for the host tiers through it too
	// (experiment.Router.HostTier).
	n.Router = experiment.NewRouter(experiment.Policies{
		Scheduler: n.Policies.Scheduler(), Balancer: n.Policies.Balancer(),
		Batcher: n.Policies.Batcher(), Evictor: n.Policies.Evictor(),
	})
	if err := n.openModels(cfg, modelsDir, costCfg, logging.Component(opts.Log, "tier")); err != nil {
		return nil, err
	}

	var devs []wire.DeviceInfo
	for _, d := range n.Devices.Devices() {
		in := d.Info()
		devs = append(devs, wire.DeviceInfo{
			Index: in.Index, Name: in.Name, UUID: in.UUID, MemoryBytes: in.MemoryBytes,
			H2DBandwidth: in.H2DBytesPerS, ComputeFactor: in.ComputeFactor, Simulated: in.Simulated,
		})
	}
	costOpts := costCfg.Map()
	n.Metrics = metrics.New(metrics.Sources{
		QueueDepth: func() map[string]int {
			st := n.Store.Stats()
			out := map[string]int{}
			for c, v := range st.QueuedByClass {
				out[string(c)] = v
			}
			return out
		},
		JobsByState: func() map[string]int {
			out := map[string]int{}
			for s, v := range n.Store.Counts() {
				out[string(s)] = v
			}
			return out
		},
		QueueCommits: func() (uint64, uint64, uint64) {
			st := n.Store.Stats()
			return st.Commits, st.SubmitCommits, st.JobsCommitted
		},
		// Restarts are per worker (internal/worker's collector); the
		// ledger's reserved bytes per device (internal/device's).
		WorkersReady: func() int { return n.Pool.Ready() },
	})
	n.Metrics.Register(n.Devices.Collector())
	if n.Tiers != nil {
		n.Metrics.Register(n.Tiers.Collector())
		n.Tiers.SetVRAMStats(n.vramStats)
	}
	n.Metrics.Register(n.Policies.Collector())
	adminToken, err := api.AdminToken(cfg.Admin.Token, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if err := n.openExperiments(); err != nil {
		return nil, err
	}
	n.Metrics.Register(experimentOutcomes{n.Experiments})
	n.Dispatcher = dispatch.New(dispatch.Options{
		Store: n.Store, Devices: n.Devices, Catalog: n.Catalog, Tiers: n.Tiers, Demand: n.demand, Cost: costCfg, Clock: opts.Clock,
		Scheduler: n.Router, Balancer: n.Router, Evictor: n.Router, Batcher: n.Router, LookaheadJobs: lookahead(cfg.Dispatch),
		Preemption: cfg.Dispatch.Preemption, PreemptMinRun: cfg.Dispatch.PreemptMinRun, VRAMWait: cfg.Dispatch.VRAMWait,
		WorkerContextBytes: uint64(cfg.Dispatch.WorkerContextBytes),
		Log:                logging.Component(opts.Log, "dispatch"),
		Hooks: dispatch.Hooks{
			JobFinished: func(j *job.Job) {
				if !j.FinishedAt.IsZero() {
					n.Metrics.JobFinished(string(j.Class), string(j.State), j.FinishedAt.Sub(j.CreatedAt).Seconds())
				}
				n.Experiments.JobFinished(j)
				n.observeWatch(j)
				if n.Cluster != nil {
					n.Cluster.JobFinished(j)
				}
			},
			ModelLoaded:  func(_ string, d time.Duration) { n.Metrics.ModelLoaded(d.Seconds()) },
			ModelEvicted: func(string) { n.Metrics.ModelEvicted() },
			JobPreempted: func(j *job.Job) { n.Metrics.JobPreempted(string(j.Class)) },
		},
	})
	n.Pool, err = worker.NewPool(cfg.Workers, worker.PoolOptions{
		Devices: devs, OutputDir: outDir, Options: map[string]any{"cost": costOpts},
		Clock: opts.Clock, Log: logging.Component(opts.Log, "worker"),
		OnReady: n.Dispatcher.OnWorkerReady, OnExit: n.Dispatcher.OnWorkerExit,
	})
	if err != nil {
		return nil, err
	}
	n.Dispatcher.SetPool(n.Pool)
	n.Metrics.Register(n.Pool.Collector())
	if err := n.openCluster(cfg, outDir); err != nil {
		return nil, err
	}
	n.openShadow(cfg.Experiments.Shadow)
	if err := n.openTune(); err != nil {
		return nil, err
	}
	n.API = api.New(cfg.API, api.Deps{
		Store: n.Store, Dispatcher: n.Dispatcher, Pool: n.Pool, Devices: n.Devices, Catalog: n.Catalog,
		Metrics: n.Metrics, Limits: cfg.Limits, Clock: opts.Clock, Log: logging.Component(opts.Log, "api"),
		OutputDir: outDir, Comfy: cfg.ComfyUI, Tiers: n.Tiers,
		Policies: n.Policies, AdminToken: adminToken,
		Shadow: n.Shadow, Trace: n.traceSource(), Experiments: n.Experiments, Watches: n.watcher(),
		TuneStatus: n.tuneStatus(), NodeID: nodeID(cfg), Cluster: n.clusterAPI(),
	})
	return n, nil
}

// Run starts the workers, the dispatcher and the API, and serves until ctx
// ends or the API fails. It then stops the API first (no new jobs), the
// dispatcher and the workers, and closes the store.
func (n *Node) Run(ctx context.Context) error {
	defer n.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	n.Pool.Start(ctx)
	dispatchDone := make(chan struct{})
	go func() {
		defer close(dispatchDone)
		n.Dispatcher.Run(ctx)
	}()
	shadowDone := n.runShadow(ctx)
	experimentsDone := n.runExperiments(ctx)
	tuneDone := n.runTune(ctx)
	clusterDone := n.runCluster(ctx)
	predictDone := n.runPredict(ctx)
	err := n.API.ListenAndServe(ctx, n.cfg.Listen, func(a net.Addr) {
		n.addrMu.Lock()
		n.addr = a
		n.addrMu.Unlock()
		n.log.Info().Str("addr", a.String()).Int("devices", len(n.Devices.Devices())).
			Int("workers", len(n.Pool.Workers())).Msg("kiln serving")
		if n.opts.OnListening != nil {
			n.opts.OnListening(a)
		}
	})
	cancel()
	<-dispatchDone
	shadowDone()
	experimentsDone()
	tuneDone()
	clusterDone()
	predictDone()
	n.Pool.Stop()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// Addr is the API's bound address once listening, else nil.
func (n *Node) Addr() net.Addr {
	n.addrMu.Lock()
	defer n.addrMu.Unlock()
	return n.addr
}

// openModels builds the catalog and the cache tiers from the storage and
// loader plugins of the tiers section; with no backend configured, a
// kiln-storage-fs plugin serves the models directory. When no storage plugin
// binary can be found (a bare `go build` of kiln alone), kiln says so and
// serves the directory itself, loading models from their files without the
// disk and RAM tiers.
func (n *Node) openModels(cfg *config.Config, modelsDir string, costCfg cost.Config, log zerolog.Logger) error {
	tcfg := cfg.Tiers.WithDefaults()
	backends := tcfg.Remote.Backends
	if len(backends) == 0 {
		backends = []tier.BackendConfig{{Name: "models", Plugin: "kiln-storage-fs", Options: map[string]string{"root": modelsDir}}}
	}
	n.Plugins = plugin.NewHost(cfg.Plugins, n.opts.Clock, logging.Component(n.opts.Log, "plugin"))
	for _, b := range backends {
		if _, err := n.Plugins.Resolve(b.Plugin); err != nil {
			if len(tcfg.Remote.Backends) > 0 {
				return fmt.Errorf("tiers.remote.backends %s: %w", b.Name, err)
			}
			log.Warn().Err(err).Str("dir", modelsDir).
				Msg("storage plugin not found; serving the models directory without the disk and RAM tiers")
			n.Catalog = catalog.New(modelsDir, costCfg)
			return nil
		}
	}
	var sources []catalog.Backend
	for _, b := range backends {
		st, err := n.Plugins.Storage(b.Name, b.Plugin, b.Options)
		if err != nil {
			return fmt.Errorf("storage plugin %s: %w", b.Name, err)
		}
		sources = append(sources, catalog.Backend{Name: b.Name, Storage: st})
	}
	loaders := map[string]sdkplugin.Loader{}
	for _, l := range tcfg.Remote.Loaders {
		if _, err := n.Plugins.Resolve(l.Plugin); err != nil {
			log.Warn().Err(err).Msg("loader plugin not found; its formats are catalogued by size only")
			continue
		}
		ld, err := n.Plugins.Loader(l.Plugin, l.Plugin, nil)
		if err != nil {
			return fmt.Errorf("loader plugin %s: %w", l.Plugin, err)
		}
		for _, ext := range l.Extensions {
			loaders[strings.ToLower(ext)] = ld
		}
	}
	n.Catalog = catalog.NewFromBackends(sources, catalog.ExtLoaders(loaders), costCfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := n.Catalog.Refresh(ctx)
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	for _, e := range res.Errors {
		log.Warn().Str("problem", e).Msg("catalog")
	}
	log.Info().Int("models", res.Models).Int("backends", len(sources)).Msg("catalog ready")
	n.Tiers, err = tier.New(tcfg, n.Catalog, tier.Options{DataDir: cfg.DataDir, Clock: n.opts.Clock, Log: log, Demand: n.demand.Of,
		DiskEvictor: n.Router.HostTier(n.Policies.NewEvictor()), RAMEvictor: n.Router.HostTier(n.Policies.NewEvictor())})
	if err != nil {
		return fmt.Errorf("tiers: %w", err)
	}
	return nil
}

// checkExposure refuses to listen beyond loopback without an admin token
// that the operator chose: a generated token is fine on one machine, but
// whoever exposes kiln must have set one on purpose.
func checkExposure(cfg *config.Config) error {
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %q: %w", cfg.Listen, err)
	}
	loopback := host == "localhost"
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		loopback = true
	}
	if loopback || cfg.Admin.Token != "" || os.Getenv("KILN_ADMIN_TOKEN") != "" {
		return nil
	}
	return fmt.Errorf("listen %s is not a loopback address: set admin.token (or KILN_ADMIN_TOKEN) before exposing kiln beyond this machine", cfg.Listen)
}

// vramStats describes the VRAM tier from the devices' ledgers.
func (n *Node) vramStats() tier.Stats {
	st := tier.Stats{Name: "vram"}
	for _, d := range n.Devices.Devices() {
		led := n.Devices.Ledger(d.Info().Index)
		st.CapacityBytes += int64(led.Usable())
		st.UsedBytes += int64(led.Used())
		st.Entries += len(led.Snapshot())
	}
	return st
}

func (n *Node) close() {
	if n.Cluster != nil {
		n.Cluster.Close()
		n.Cluster = nil
	}
	if n.Shadow != nil {
		if err := n.Shadow.Close(); err != nil {
			n.log.Warn().Err(err).Msg("close eviction shadow")
		}
		n.Shadow = nil
	}
	if n.Store != nil {
		if err := n.Store.Close(); err != nil {
			n.log.Warn().Err(err).Msg("close store")
		}
		n.Store = nil
	}
	if n.Policies != nil {
		if err := n.Policies.Close(); err != nil {
			n.log.Warn().Err(err).Msg("close policies")
		}
		n.Policies = nil
	}
	if n.Tiers != nil {
		if err := n.Tiers.Close(); err != nil {
			n.log.Warn().Err(err).Msg("close tiers")
		}
		n.Tiers = nil
	}
	if n.Plugins != nil {
		n.Plugins.Close()
		n.Plugins = nil
	}
	if n.Devices != nil {
		n.Devices.Close()
		n.Devices = nil
	}
}

// lookahead maps the config's "0 turns it off" onto the dispatcher's "0
// means the default".
func lookahead(c dispatch.Config) int {
	if c.LookaheadJobs == 0 {
		return -1
	}
	return c.LookaheadJobs
}
