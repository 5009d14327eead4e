package cluster

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
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

// place asks the routing policy for j's node; "" means any node. work is
// the job's estimated cost, as routedSince counted it.
func (c *Cluster) place(j *job.Job) (node string, work time.Duration) {
	r := c.local.Router
	if r == nil {
		return "", 0
	}
	live := c.Nodes()
	if len(live) == 0 {
		return "", 0
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
		if n.ID == c.cfg.NodeID {
			n = c.liveSelf(n)
		}
		views[i] = nodeView(n, c.routedSince[n.ID])
	}
	c.viewMu.RUnlock()
	node, ok := r.Route(decision.RouteRequest{Job: jv, Nodes: views, Random: rand.Uint64()})
	if !ok {
		return "", 0
	}
	c.viewMu.Lock()
	r2 := c.routedSince[node]
	r2.jobs++
	r2.work += jv.EstimatedCost
	c.routedSince[node] = r2
	c.viewMu.Unlock()
	return node, jv.EstimatedCost
}

// unroute takes a job that place routed to this node and Submit then
// claimed out of routedSince: it is in the local queue, which liveSelf
// reads.
func (c *Cluster) unroute(work time.Duration) {
	c.viewMu.Lock()
	defer c.viewMu.Unlock()
	r := c.routedSince[c.cfg.NodeID]
	if r.jobs > 0 {
		r.jobs--
		r.work = max(r.work-work, 0)
		c.routedSince[c.cfg.NodeID] = r
	}
}

// liveSelf is this node's view of itself: its last heartbeat with its
// local queue and idle workers as they are now. The jobs it claimed when
// they were submitted are in that queue, so they do not count in
// routedSince (Submit takes them out again, unroute): counted there, jobs
// run one after another within a second, each done before the next,
// would make the node look busy and send the next ones elsewhere. The jobs
// routed here that wait in its consumers still count, as for any node.
func (c *Cluster) liveSelf(n NodeInfo) NodeInfo {
	counts := c.local.Store.Counts()
	n.Queued, n.Running = counts[job.Queued], counts[job.Running]
	// Workers up, less those running a job.
	n.Workers = c.local.ReadyWorkers()
	n.IdleWorkers = max(n.Workers-n.Running, 0)
	if n.Queued == 0 && n.IdleWorkers > 0 {
		n.Wait = 0
	}
	return n
}

// routed is what this node sent another since that node's last heartbeat.
type routed struct {
	jobs int
	work time.Duration
}

// nodeView is a node's heartbeat as a routing policy sees it: the jobs
// routed to it that wait in its consumers count as queued, their work as
// wait (a node pulls only what its workers and prefetch hold, so its own
// queue is short however many jobs are routed to it), and so do the jobs
// this node routed to it since that heartbeat (without them a burst of
// submits within one heartbeat would all see the same views and go to the
// same node).
func nodeView(n NodeInfo, since routed) decision.NodeView {
	v := decision.NodeView{
		ID: n.ID, Healthy: n.Healthy,
		Queued: n.Queued + n.Routed + since.jobs, Running: n.Running, Workers: n.Workers, IdleWorkers: n.IdleWorkers,
		FreeVRAM: n.FreeVRAM, UsableVRAM: n.UsableVRAM,
		EstimatedWait: n.Wait + n.RoutedWork/time.Duration(max(n.Workers, 1)),
		H2DBytesPerS:  n.H2DBytesPerS, DiskBytesPerS: n.DiskBytesPerS, RemoteBytesPerS: n.RemoteBytesPerS,
		VRAM: n.VRAM, RAM: n.RAM, Disk: n.Disk,
	}
	if since.jobs > 0 {
		// The idle workers take the first of them at once.
		extra := since.work - time.Duration(min(since.jobs, v.IdleWorkers))*since.work/time.Duration(since.jobs)
		v.EstimatedWait += extra / time.Duration(max(v.Workers, 1))
	}
	return v
}

// adoptEvery is how often a node looks for the consumers of dead nodes.
const adoptEvery = 2 * time.Second

// adopt takes, while this node has room, the jobs routed to nodes that are
// no longer alive (no heartbeat within nodeTTL): their consumers keep them
// until someone pulls. Several nodes may adopt from one consumer at once;
// each message still goes to one of them at a time. A dead node's consumer
// that holds nothing more (every job it had delivered and acked) is
// deleted, so that JetStream does not keep a consumer for every node that
// ever died; jobs that reach a dead node's subject after that (routed by a
// node whose view of the heartbeats lagged) get a consumer again
// (strays). A node taken for dead that comes back creates its own again
// (pull).
func (c *Cluster) adopt(ctx context.Context) {
	t := time.NewTicker(adoptEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !c.nc.IsConnected() {
			continue
		}
		alive := map[string]bool{c.cfg.NodeID: true}
		for _, n := range c.Nodes() {
			alive[n.ID] = true
		}
		lctx, cancel := context.WithTimeout(ctx, opTimeout)
		orphans := c.orphans(lctx, alive)
		cancel()
		for _, name := range orphans {
			if c.freeSlots() > 0 {
				c.drain(ctx, name)
			}
			c.retire(ctx, name, alive)
		}
		c.rescue(ctx)
	}
}

// orphans names the consumers of dead nodes, creating one for each dead
// node's subject that holds jobs but has lost its consumer.
func (c *Cluster) orphans(ctx context.Context, alive map[string]bool) []string {
	st, err := c.js.Stream(ctx, workStream)
	if err != nil {
		return nil
	}
	var out []string
	exists := map[string]bool{}
	names := st.ConsumerNames(ctx)
	for name := range names.Name() {
		exists[name] = true
		if node, _, ok := consumerNode(name); ok && !alive[node] {
			out = append(out, name)
		}
	}
	if names.Err() != nil {
		return out
	}
	// Strays: jobs on kiln.work.<class>.<node> of a dead node with no
	// consumer.
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(workSubject+"*.*"))
	if err != nil {
		return out
	}
	for subject, n := range info.State.Subjects {
		rest, _ := strings.CutPrefix(subject, workSubject)
		class, node, ok := strings.Cut(rest, ".")
		if !ok || n == 0 || alive[node] || (job.Class(class) != job.Interactive && job.Class(class) != job.Batch) {
			continue
		}
		name := nodeConsumer(node, job.Class(class))
		if exists[name] {
			continue
		}
		if _, err := c.js.CreateOrUpdateConsumer(ctx, workStream, c.consumerConfig(name, subject)); err == nil {
			c.log.Info().Str("consumer", name).Uint64("jobs", n).Msg("jobs were routed to a node that is gone after its consumer was deleted; adopting them")
			out = append(out, name)
		}
	}
	return out
}

// retireAge is how old a consumer must be before it may be deleted as a
// dead node's: the heartbeat's TTL, time enough for a node that has just
// created its consumers (Open) to write its first heartbeat (Run, under
// a second later).
const retireAge = nodeTTL

// retireGrace is how long a node's heartbeat must have been seen missing
// from the bucket before its consumers are deleted. A heartbeat also
// expires while the node is alive but cannot write: after a NATS server
// dies, JetStream elects new stream leaders and writes fail for several
// seconds (5 s and more on a loaded machine), longer than the TTL. The
// node writes again as soon as it can; deleting its consumers meanwhile
// only makes it create them again. Its jobs do not wait for this: they
// are adopted as soon as its heartbeat expires (orphans, drain).
const retireGrace = 2 * nodeTTL

// retire deletes a dead node's consumer once it holds nothing: no job
// waiting and none delivered without an ack (an adopted job is acked
// through it, so it stays while any runs).
func (c *Cluster) retire(ctx context.Context, name string, alive map[string]bool) {
	if node, _, ok := consumerNode(name); !ok || alive[node] {
		if ok {
			delete(c.goneSince, node)
		}
		return
	}
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	cons, err := c.js.Consumer(cctx, workStream, name)
	if err != nil {
		return
	}
	info, err := cons.Info(cctx)
	if err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
		return
	}
	// A node creates its consumers when it joins, a moment before its
	// first heartbeat: a young consumer is not a dead node's. Its age by
	// the server's clock (TimeStamp is the server's now), not this node's.
	now := info.TimeStamp
	if now.IsZero() {
		now = time.Now()
	}
	if now.Sub(info.Created) < retireAge {
		return
	}
	// This node's view of the heartbeats is a watch, which can lag for
	// seconds after a NATS server dies; before deleting, ask the bucket
	// itself whether the node's heartbeat has expired (an error, or a
	// replica that still holds it, keeps the consumer).
	node, _, _ := consumerNode(name)
	if _, err := c.nodes.Get(cctx, node); !errors.Is(err, jetstream.ErrKeyNotFound) {
		delete(c.goneSince, node)
		return
	}
	if c.goneSince == nil {
		c.goneSince = map[string]time.Time{}
	}
	first, seen := c.goneSince[node]
	if !seen {
		c.goneSince[node] = time.Now()
		return
	}
	if time.Since(first) < retireGrace {
		return
	}
	// The entry stays until the node is seen alive: its other class's
	// consumer is deleted on the same grounds.
	err = c.js.DeleteConsumer(cctx, workStream, name)
	switch {
	case err == nil:
		c.log.Info().Str("consumer", name).Msg("deleted the consumer of a node that is gone (its jobs all went elsewhere)")
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		c.log.Debug().Err(err).Str("consumer", name).Msg("delete a dead node's consumer")
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
