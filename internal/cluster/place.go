package cluster

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
)

// Placement. The node that accepts a job asks the routing policy
// (Local.Router) which node should run it, with one decision.NodeView per
// live node built from the heartbeats in KILN_nodes, and queues the job's
// id on that node's subject (kiln.work.<class>.<node>), which only that
// node's durable consumer pulls. A node that dies leaves its consumer
// behind with the jobs routed to it; every live node with room adopts such
// orphans (adopt), so a routed job never waits for a node that is gone.
// A job no node can take now (the policy says so) goes on the shared
// subject (kiln.work.<class>), which every node pulls.

// place asks the routing policy for j's node; "" means any node.
func (c *Cluster) place(j *job.Job) string {
	r := c.local.Router
	if r == nil {
		return ""
	}
	live := c.Nodes()
	if len(live) == 0 {
		return ""
	}
	jv := decision.JobView{ID: j.ID, Class: j.Class, DeadlineMS: j.DeadlineMS, Models: j.Models}
	if c.local.ModelBytes != nil {
		jv.ModelBytes = c.local.ModelBytes(j.Models)
		for _, b := range jv.ModelBytes {
			jv.EstimatedVRAM += b
		}
	}
	if c.local.Estimate != nil {
		jv.EstimatedCost = c.local.Estimate(j)
	}
	views := make([]decision.NodeView, len(live))
	c.viewMu.RLock()
	for i, n := range live {
		views[i] = nodeView(n, c.routedSince[n.ID])
	}
	c.viewMu.RUnlock()
	node, ok := r.Route(decision.RouteRequest{Job: jv, Nodes: views, Random: rand.Uint64()})
	if !ok {
		return ""
	}
	c.viewMu.Lock()
	r2 := c.routedSince[node]
	r2.jobs++
	r2.work += jv.EstimatedCost
	c.routedSince[node] = r2
	c.viewMu.Unlock()
	return node
}

// routed is what this node sent another since that node's last heartbeat.
type routed struct {
	jobs int
	work time.Duration
}

// nodeView is a node's heartbeat as a routing policy sees it, with the jobs
// this node routed to it since that heartbeat counted in (queued, and their
// work added to its wait): without them a burst of submits within one
// heartbeat would all see the same views and go to the same node.
func nodeView(n NodeInfo, since routed) decision.NodeView {
	v := decision.NodeView{
		ID: n.ID, Healthy: n.Healthy,
		Queued: n.Queued + since.jobs, Running: n.Running, Workers: n.Workers, IdleWorkers: n.IdleWorkers,
		FreeVRAM: n.FreeVRAM, UsableVRAM: n.UsableVRAM, EstimatedWait: n.Wait,
		H2DBytesPerS: n.H2DBytesPerS, DiskBytesPerS: n.DiskBytesPerS, RemoteBytesPerS: n.RemoteBytesPerS,
		VRAM: n.VRAM, RAM: n.RAM, Disk: n.Disk,
	}
	if since.jobs > 0 {
		// The idle workers take the first of them at once.
		extra := since.work - time.Duration(min(since.jobs, v.IdleWorkers))*since.work/time.Duration(since.jobs)
		v.EstimatedWait += extra / time.Duration(max(v.Workers, 1))
	}
	return v
}

// adoptEvery is how often a node with room looks for the consumers of dead
// nodes.
const adoptEvery = 2 * time.Second

// adopt takes, while this node has room, the jobs routed to nodes that are
// no longer alive (no heartbeat within nodeTTL): their consumers keep them
// until someone pulls. Several nodes may adopt from one consumer at once;
// each message still goes to one of them at a time.
func (c *Cluster) adopt(ctx context.Context) {
	t := time.NewTicker(adoptEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if c.freeSlots() <= 0 {
			continue
		}
		alive := map[string]bool{c.cfg.NodeID: true}
		for _, n := range c.Nodes() {
			alive[n.ID] = true
		}
		lctx, cancel := context.WithTimeout(ctx, opTimeout)
		var orphans []string
		if st, err := c.js.Stream(lctx, workStream); err == nil {
			names := st.ConsumerNames(lctx)
			for name := range names.Name() {
				if node, _, ok := consumerNode(name); ok && !alive[node] {
					orphans = append(orphans, name)
				}
			}
		}
		cancel()
		for _, name := range orphans {
			c.drain(ctx, name)
		}
	}
}

// drain pulls an orphaned consumer's jobs while this node has room.
func (c *Cluster) drain(ctx context.Context, name string) {
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	cons, err := c.js.Consumer(cctx, workStream, name)
	cancel()
	if err != nil {
		return
	}
	for ctx.Err() == nil && c.reserveFetch() {
		fctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
		got := 0
		if err == nil {
			for msg := range batch.Messages() {
				got++
				c.log.Info().Str("consumer", name).Msg("adopting a job routed to a node that is gone")
				c.take(ctx, msg)
			}
		}
		cancel()
		c.releaseFetch()
		if got == 0 {
			return
		}
	}
}
