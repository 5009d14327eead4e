package node

import (
	"context"
	"path/filepath"
	"sync"

	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/logging"
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
	var topo shadow.Topology
	for _, d := range n.Devices.Devices() {
		in := d.Info()
		topo.Devices = append(topo.Devices, shadow.Device{Name: in.Name, VRAMBytes: n.Devices.Ledger(in.Index).Usable()})
	}
	if n.Tiers != nil {
		tc := n.cfg.Tiers.WithDefaults()
		topo.RAMBytes, topo.DiskBytes = uint64(max(tc.RAM.CapacityBytes, 0)), uint64(max(tc.Disk.CapacityBytes, 0))
	}
	src := shadow.Sources{
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
	s, err := shadow.New(shadow.PolicyCandidates(sc.Policies, n.Policies, log, n.opts.Clock), topo, src, n.opts.Clock)
	if err != nil {
		log.Warn().Err(err).Msg("eviction shadow is off")
		return
	}
	n.Shadow = s
	n.Metrics.Register(s.Collector())
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
	if n.Shadow != nil {
		index := map[int]int{} // device index → position in the topology
		for i, d := range n.Devices.Devices() {
			index[d.Info().Index] = i
		}
		ch, cancel := n.Dispatcher.Subscribe(shadowBuffer)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			n.Shadow.Feed(ctx, ch, func(e job.Event) (int, []string, bool) {
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
			})
		}()
	}
	return wg.Wait
}
