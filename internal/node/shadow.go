package node

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/logging"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/shadow"
	"github.com/kiln-gpu/kiln/internal/tune"
)

// shadowBuffer is the event buffer of each of the shadow's and the
// recorder's subscriptions: enough for a burst of job starts; beyond it
// the bus drops events for them rather than wait.
const shadowBuffer = 1024

// openShadow builds the eviction shadow (ghost caches at the live
// capacities) and the arrival recorder. Neither can stop a node from
// starting: a failure is logged and the part stays off.
func (n *Node) openShadow(sc experiment.ShadowConfig) {
	log := logging.Component(n.opts.Log, "experiment")
	rec, err := tune.NewRecorder(filepath.Join(n.cfg.DataDir, tune.TraceFile), 0, n.opts.Clock)
	if err != nil {
		log.Warn().Err(err).Msg("recorded arrivals could not be read; starting a new record")
	}
	n.Arrivals = rec
	if !sc.Enabled() {
		return
	}
	s, err := shadow.New(shadow.PolicyCandidates(sc.Policies, n.Policies, log, n.opts.Clock), n.cacheTopology(), n.cacheSources(), n.opts.Clock)
	if err != nil {
		log.Warn().Err(err).Msg("eviction shadow is off")
		return
	}
	n.Shadow = s
	n.Metrics.Register(s.Collector())
}

// cacheTopology is the node's cache geometry as the shadow's ghosts take
// it: each device's usable VRAM (in the order of Devices), the RAM and
// disk tiers.
func (n *Node) cacheTopology() shadow.Topology {
	var topo shadow.Topology
	for _, d := range n.Devices.Devices() {
		in := d.Info()
		topo.Devices = append(topo.Devices, shadow.Device{Name: in.Name, VRAMBytes: n.Devices.Ledger(in.Index).Usable()})
	}
	if n.Tiers != nil {
		tc := n.cfg.Tiers.WithDefaults()
		topo.RAMBytes, topo.DiskBytes = uint64(max(tc.RAM.CapacityBytes, 0)), uint64(max(tc.Disk.CapacityBytes, 0))
	}
	return topo
}

// cacheSources are the models' sizes from the catalog and the transfer
// rates the devices and tiers measure.
func (n *Node) cacheSources() shadow.Sources {
	return shadow.Sources{
		Demand: n.demand.Of,
		Model: func(id string) (uint64, uint64, bool) {
			e, err := n.Catalog.Lookup(id)
			if err != nil {
				return 0, 0, false
			}
			return uint64(max(e.Bytes, 0)), uint64(max(e.VRAMBytes, 0)), true
		},
		Bandwidth: func() shadow.Bandwidths {
			var bw shadow.Bandwidths
			for _, d := range n.Devices.Devices() {
				bw.H2D = append(bw.H2D, d.Info().H2DBytesPerS)
			}
			if n.Tiers != nil {
				for _, st := range n.Tiers.Stats() {
					switch st.Name {
					case "ram":
						bw.RAM = st.BandwidthBytesPerS
					case "disk":
						bw.Disk = st.BandwidthBytesPerS
					}
				}
			}
			return bw
		},
	}
}

// replayFeed holds the running eviction experiment's cache replay, which
// runShadow feeds the node's job starts.
type replayFeed struct {
	cur atomic.Pointer[shadow.Pair]
}

// startReplay is the experiments' Options.Replay: a pair of ghost
// hierarchies at this node's capacities, fed from now until the
// experiment closes it.
func (n *Node) startReplay(arms [2]*policy.Arm) (experiment.Replay, error) {
	p, err := shadow.NewPair(arms[experiment.Baseline], arms[experiment.Candidate], n.cacheTopology(), n.cacheSources(), n.opts.Clock)
	if err != nil {
		return nil, err
	}
	n.replay.cur.Store(p)
	return fedReplay{p, &n.replay}, nil
}

// fedReplay stops the feed before it closes the pair.
type fedReplay struct {
	*shadow.Pair
	feed *replayFeed
}

func (r fedReplay) Close() error {
	r.feed.cur.CompareAndSwap(r.Pair, nil)
	return r.Pair.Close()
}

// runShadow feeds the shadow and the recorder from the dispatcher's events
// until ctx ends; the returned function waits for both to stop (the
// recorder saves its ring on the way out).
func (n *Node) runShadow(ctx context.Context) (wait func()) {
	var wg sync.WaitGroup
	log := logging.Component(n.opts.Log, "experiment")
	if n.Arrivals != nil {
		ch, cancel := n.Dispatcher.Subscribe(shadowBuffer)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			if err := n.Arrivals.Feed(ctx, ch, n.Store.Get); err != nil {
				log.Warn().Err(err).Msg("recording arrivals")
			}
		}()
	}
	index := map[int]int{} // device index → position in the topology
	for i, d := range n.Devices.Devices() {
		index[d.Info().Index] = i
	}
	resolve := func(e job.Event) (int, []string, bool) {
		j := e.Job // the job as started; read back only without one
		if j == nil {
			var err error
			if j, err = n.Store.Get(e.JobID); err != nil || j == nil {
				return 0, nil, false
			}
		}
		for _, w := range n.Pool.Workers() {
			if w.ID() == e.Worker {
				dev, ok := index[w.Device().Index]
				return dev, j.Models, ok
			}
		}
		return 0, nil, false
	}
	if n.Shadow != nil {
		ch, cancel := n.Dispatcher.Subscribe(shadowBuffer)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			n.Shadow.Feed(ctx, ch, resolve)
		}()
	}
	// An eviction experiment's replay is fed like the shadow, from its
	// start to its end; between experiments the events pass unread.
	ch, cancel := n.Dispatcher.Subscribe(shadowBuffer)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-ch:
				if !ok {
					return
				}
				p := n.replay.cur.Load()
				if p == nil || e.Type != job.EventStarted {
					continue
				}
				if dev, models, ok := resolve(e); ok {
					p.AccessOn(dev, e.Worker, models)
				} else {
					p.Dropped(1)
				}
			}
		}
	}()
	return wg.Wait
}
