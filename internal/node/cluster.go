package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/kiln-gpu/kiln/internal/api"
	"github.com/kiln-gpu/kiln/internal/cluster"
	"github.com/kiln-gpu/kiln/internal/config"
	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/logging"
	"github.com/kiln-gpu/kiln/internal/worker"
)

// clusterJoinTimeout bounds the wait for NATS at start: a cluster's
// servers and its JetStream leaders may come up after the node.
const clusterJoinTimeout = 90 * time.Second

// nodeID is this node's name: cluster.node_id, else the hostname.
func nodeID(cfg *config.Config) string {
	return cfg.Cluster.WithDefaults().NodeID
}

// openCluster joins the cluster when cluster.nats is set; with it unset
// the node is a single node and nothing here runs.
func (n *Node) openCluster(cfg *config.Config, outDir string) error {
	if !cfg.Cluster.Enabled() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterJoinTimeout)
	defer cancel()
	local := cluster.Local{
		Store:        n.Store,
		Cancel:       n.Dispatcher.Cancel,
		ReadyWorkers: func() int { return n.Pool.Ready() },
		OutputDir:    outDir,
		PendingDir:   filepath.Join(cfg.DataDir, "cluster", "pending-copies"),
		Addr: func() string {
			if a := n.Addr(); a != nil {
				return a.String()
			}
			return ""
		},
		State:      n.clusterState,
		ModelBytes: n.modelBytes,
		Estimate:   n.Dispatcher.Estimate,
	}
	if n.Policies != nil {
		// The active routing policy (policies.routing); a policy loaded
		// with kiln policy load takes over live, as for the other kinds.
		local.Router = n.Policies.Router()
		if n.Router != nil {
			// A routing experiment started on this node splits the jobs
			// submitted here between its arms, and counts them when the
			// registry says they ended (internal/experiment route.go).
			local.Router = n.Router.RouteSplit(local.Router)
		}
	}
	if n.Experiments != nil {
		n.wireClusterExperiments(&local)
	}
	if sc := cfg.Experiments.Shadow; n.Policies != nil && local.Router != nil && sc.RoutingEnabled() {
		// Every job this node routes is also put to the shadow's
		// candidates, priced off the submit's path.
		n.routingShadow = experiment.NewRoutingShadow(ctx, n.experimentHost(), sc.RoutingPolicies(),
			logging.Component(n.opts.Log, "routing-shadow"))
		local.Router = n.routingShadow.Wrap(local.Router)
		n.Metrics.Register(n.routingShadow)
	}
	c, err := cluster.Open(ctx, cfg.Cluster, local, logging.Component(n.opts.Log, "cluster"))
	if err != nil {
		return err
	}
	n.Cluster = c
	n.Metrics.Register(c.Collector())
	if hooks := cluster.TestHooks(); hooks != "" {
		n.log.Warn().Str("hooks", hooks).Msg("cluster test hooks are on (set for a crash test; never in production): outputs stay on this node")
	}
	n.log.Info().Str("node", c.NodeID()).Strs("nats", cfg.Cluster.Servers()).Msg("joined the kiln cluster")
	return nil
}

// runCluster takes work from the cluster until ctx ends; the returned
// func waits for it.
func (n *Node) runCluster(ctx context.Context) func() {
	if n.Cluster == nil {
		return func() {}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); n.Cluster.Run(ctx) }()
	if n.routingShadow != nil {
		wg.Add(1)
		go func() { defer wg.Done(); n.routingShadow.Run(ctx) }()
	}
	return wg.Wait
}

// clusterAPI is the API's view of the cluster (api.Cluster), or nil on a
// single node (a nil interface, not a nil pointer in one).
func (n *Node) clusterAPI() api.Cluster {
	if n.Cluster == nil {
		return nil
	}
	return clusterAdapter{c: n.Cluster, shadow: n.routingShadow}
}

// clusterAdapter maps internal/cluster onto api.Cluster and its errors onto
// the API's.
type clusterAdapter struct {
	c      *cluster.Cluster
	shadow *experiment.RoutingShadow
}

func (a clusterAdapter) RoutingShadow() any {
	if a.shadow == nil {
		return nil
	}
	return a.shadow.Report()
}

var _ api.Cluster = clusterAdapter{}

func apiError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cluster.ErrTooLarge):
		return fmt.Errorf("%w: %w", api.ErrJobTooLarge, err)
	case errors.Is(err, cluster.ErrUnavailable):
		return fmt.Errorf("%w: %w", api.ErrClusterUnavailable, err)
	}
	return err
}

func (a clusterAdapter) Submit(ctx context.Context, j *job.Job) (*job.Job, bool, error) {
	rec, existed, err := a.c.Submit(ctx, j)
	if err != nil {
		return nil, false, apiError(err)
	}
	return &rec.Job, existed, nil
}

func (a clusterAdapter) Get(ctx context.Context, id string) (*job.Job, string, error) {
	rec, err := a.c.Get(ctx, id)
	if err != nil {
		return nil, "", apiError(err)
	}
	return &rec.Job, rec.Node, nil
}

func (a clusterAdapter) List(state job.State, limit int) ([]*job.Job, []string, map[job.State]int) {
	recs, counts := a.c.List(state, limit)
	jobs := make([]*job.Job, len(recs))
	nodes := make([]string, len(recs))
	for i, r := range recs {
		jobs[i], nodes[i] = &r.Job, r.Node
	}
	return jobs, nodes, counts
}

func (a clusterAdapter) Cancel(ctx context.Context, id string) (*job.Job, string, error) {
	rec, err := a.c.Cancel(ctx, id)
	if err != nil {
		return nil, "", apiError(err)
	}
	return &rec.Job, rec.Node, nil
}

func (a clusterAdapter) Ready() error { return a.c.Ready() }

func (a clusterAdapter) Nodes() any { return a.c.Nodes() }

func (a clusterAdapter) OutputsWritten(id string) { a.c.OutputsWritten(id) }

func (a clusterAdapter) ForwardWS(clientID, kind string, frame []byte) {
	a.c.ForwardWS(clientID, kind, frame)
}

func (a clusterAdapter) OnForwardedWS(deliver func(clientID, kind string, frame []byte)) error {
	return a.c.OnForwardedWS(deliver)
}

func (a clusterAdapter) OpenOutput(ctx context.Context, typ, subfolder, name string) (io.ReadCloser, error) {
	rc, err := a.c.OpenOutput(ctx, typ, subfolder, name)
	return rc, apiError(err)
}

// clusterState describes this node for its heartbeat: the jobs it holds,
// its workers, VRAM by the devices' ledgers, the tiers' measured rates and
// which models each tier holds.
func (n *Node) clusterState() cluster.NodeState {
	var st cluster.NodeState
	counts := n.Store.Counts()
	st.Queued, st.Running = counts[job.Queued], counts[job.Running]
	vram := map[string]bool{}
	var h2d float64
	measured := 0
	for _, w := range n.Pool.Infos() {
		if w.H2DBytesPerS > 0 {
			h2d += w.H2DBytesPerS
			measured++
		}
		switch w.State {
		case worker.Ready:
			st.Workers++
			st.IdleWorkers++
		case worker.Busy:
			st.Workers++
		}
		for m := range w.Resident {
			vram[m] = true
		}
	}
	var devH2D float64
	devices := n.Devices.Devices()
	for _, d := range devices {
		led := n.Devices.Ledger(d.Info().Index)
		st.FreeVRAM += led.Free()
		st.UsableVRAM = max(st.UsableVRAM, led.Usable())
		devH2D += d.Info().H2DBytesPerS
	}
	// Host → device: the mean of the rates the workers' loads measured;
	// before any load, the devices' own rate (configured, or the PCIe
	// link's), which is what this node's dispatcher prices loads with.
	switch {
	case measured > 0:
		st.H2DBytesPerS = uint64(h2d / float64(measured))
	case len(devices) > 0:
		st.H2DBytesPerS = uint64(devH2D / float64(len(devices)))
	}
	st.VRAM, st.RAM, st.Disk = sortedKeys(vram), []string{}, []string{}
	st.Wait = n.backlog(st)
	if n.Tiers == nil {
		return st
	}
	// Stats: vram, ram, disk, remote; the RAM tier's rate is of its
	// promotions (disk → RAM), the remote one of fetches (source → disk),
	// the two the dispatcher prices this node's own loads with (0 until
	// measured: the routing policy then assumes its defaults).
	stats := n.Tiers.Stats()
	st.DiskBytesPerS = uint64(stats[1].BandwidthBytesPerS)
	st.RemoteBytesPerS = uint64(stats[3].BandwidthBytesPerS)
	if models, err := n.Catalog.List(); err == nil {
		for _, m := range models {
			ram, disk := n.Tiers.Holds(m.ID)
			if ram {
				st.RAM = append(st.RAM, m.ID)
			}
			if disk {
				st.Disk = append(st.Disk, m.ID)
			}
		}
	}
	return st
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// modelBytes are the models' VRAM footprints from the catalog (0 for a
// model it does not know), for the routing policy's fit check.
func (n *Node) modelBytes(models []string) []uint64 {
	out := make([]uint64, len(models))
	for i, m := range models {
		if e, err := n.Catalog.Lookup(m); err == nil && e.VRAMBytes > 0 {
			out[i] = uint64(e.VRAMBytes)
		}
	}
	return out
}

// backlogJobs bounds the jobs a heartbeat's backlog adds up: a node holds
// about its workers plus cluster.prefetch cluster jobs, so more means a
// node that is far behind, which the first thousand show well enough.
const backlogJobs = 1000

// backlog is the time until this node could start one more job: the cost
// model's estimates of its queued jobs and the rest of its running ones,
// over its workers; none while a worker idles with nothing queued.
func (n *Node) backlog(st cluster.NodeState) time.Duration {
	if st.Queued == 0 && st.IdleWorkers > 0 {
		return 0
	}
	var work time.Duration
	now := time.Now()
	for _, state := range []job.State{job.Queued, job.Running} {
		jobs, err := n.Store.List(state, backlogJobs)
		if err != nil {
			continue
		}
		for _, j := range jobs {
			est := n.Dispatcher.Estimate(j)
			if state == job.Running && !j.StartedAt.IsZero() {
				est = max(est-now.Sub(j.StartedAt), 0)
			}
			work += est
		}
	}
	return work / time.Duration(max(st.Workers, 1))
}

// wireClusterExperiments lets a routing experiment span the cluster: the
// node running one publishes its split in its heartbeat (Leading), the
// other nodes split the jobs submitted to them by it (Follow) and tag each
// job's record with its arm (Tag), and the running node counts every
// tagged job that ends (Ended). internal/experiment follow.go has the why.
func (n *Node) wireClusterExperiments(local *cluster.Local) {
	x := n.Experiments
	local.Ended = func(j *job.Job, raw json.RawMessage) {
		var tag *experiment.Tag
		if len(raw) > 0 {
			tag = new(experiment.Tag)
			if json.Unmarshal(raw, tag) != nil {
				tag = nil
			}
		}
		x.ObserveClusterTagged(j, tag)
	}
	if n.Router == nil {
		return
	}
	local.Tag = func(id string) json.RawMessage {
		tag, ok := n.Router.Tag(id)
		if !ok {
			return nil
		}
		b, _ := json.Marshal(tag)
		return b
	}
	node := nodeID(n.cfg)
	local.Leading = func() json.RawMessage {
		f, ok := x.Leading()
		if !ok {
			return nil
		}
		f.Node = node
		b, _ := json.Marshal(f)
		return b
	}
	local.Follow = func(raw json.RawMessage) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if len(raw) == 0 {
			return x.FollowRouting(ctx, nil)
		}
		var f experiment.FollowSpec
		if err := json.Unmarshal(raw, &f); err != nil {
			return fmt.Errorf("the routing experiment's split: %w", err)
		}
		return x.FollowRouting(ctx, &f)
	}
}
