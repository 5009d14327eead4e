package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-gpu/kiln/internal/job"
)

// fetchWait bounds one pull request; a job published meanwhile arrives at
// once, so this is only how often an idle puller re-asks.
const fetchWait = 2 * time.Second

// Run takes work from the cluster until ctx ends: one puller per class,
// the in-progress signals of held jobs, the recorder of finished jobs, the
// node's heartbeat and the watch of the registry.
func (c *Cluster) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range c.pullers {
		wg.Add(1)
		go func() { defer wg.Done(); c.pull(ctx, p) }()
	}
	for _, f := range []func(context.Context){c.keepAlive, c.record, c.watch, c.watchNodes, c.adopt} {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	wg.Wait()
	c.release()
}

// release gives back the jobs this node still holds when it stops, so that
// other nodes take them at once instead of after AckWait.
func (c *Cluster) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, h := range c.held {
		if !h.abandoned {
			_ = h.msg.Nak()
		}
		delete(c.held, id)
	}
}

// JobFinished is the dispatcher's hook: a local job ended (done, failed,
// cancelled). The recorder writes it to the registry; the hook itself must
// not wait on the network, as it runs in the dispatcher.
func (c *Cluster) JobFinished(j *job.Job) {
	c.mu.Lock()
	_, ok := c.held[j.ID]
	if ok {
		c.finished = append(c.finished, j)
	}
	c.mu.Unlock()
	if ok {
		signal(c.wake)
	}
}

// outputsWait bounds how long a finished job's result waits for the API to
// finish its files (OutputsWritten) before it is recorded anyway.
const outputsWait = 5 * time.Second

// OutputsWritten is the API's hook: it has written the last bytes of a
// finished job's files (ComfyUI's PNG metadata), so the recorder may copy
// them to the object store; before that, a copy could differ from the file
// this node serves.
func (c *Cluster) OutputsWritten(id string) {
	c.mu.Lock()
	_, ok := c.held[id]
	if ok {
		c.written[id] = true
	}
	c.mu.Unlock()
	if ok {
		signal(c.wake)
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// capacity is how many jobs this node may hold: its ready workers plus
// prefetch, none when it has no ready worker or is cut off. It takes c.mu
// (through Ready), so callers must not hold it.
func (c *Cluster) capacity() int {
	w := c.local.ReadyWorkers()
	if w == 0 || c.Ready() != nil {
		return 0
	}
	return w + c.cfg.Prefetch
}

// freeSlots is how many more jobs this node may take now.
func (c *Cluster) freeSlots() int {
	capacity := c.capacity()
	c.mu.Lock()
	defer c.mu.Unlock()
	return capacity - len(c.held)
}

// reserveFetch says whether a puller may fetch one job now: while the node
// holds fewer jobs than its capacity. Fetches in flight are not counted
// against it: every puller (one per consumer) must get its turn, or the
// pullers that won the slots would starve the others' consumers (a node
// with 2 workers and 4 consumers did). So a node may take up to its
// capacity plus one job per puller less one; they wait in its local queue.
func (c *Cluster) reserveFetch() bool { return c.freeSlots() > 0 }

// releaseFetch wakes a puller waiting for room after a fetch.
func (c *Cluster) releaseFetch() { signal(c.room) }

// pull fetches jobs from one consumer (a class's shared jobs, or those
// routed to this node), one at a time, while the node has room.
func (c *Cluster) pull(ctx context.Context, p *puller) {
	cons := p.cons
	for ctx.Err() == nil {
		if !c.reserveFetch() {
			select {
			case <-ctx.Done():
				return
			case <-c.room:
			case <-time.After(250 * time.Millisecond):
			}
			continue
		}
		// FetchContext, not FetchMaxWait: nats.go takes one or the other,
		// and the node's ctx must end a fetch at shutdown.
		fctx, cancel := context.WithTimeout(ctx, fetchWait)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
		if err == nil {
			for msg := range batch.Messages() {
				c.take(ctx, msg)
			}
			err = batch.Error()
		}
		cancel()
		c.releaseFetch()
		if errors.Is(err, nats.ErrNoResponders) && ctx.Err() == nil {
			// The consumer is gone: another node deleted it while this
			// one was cut off from NATS and taken for dead (adopt), or
			// its stream leader is being elected. Create it again (a
			// no-op in the second case); jobs routed here meanwhile
			// waited in the stream.
			if again, rerr := c.recreate(ctx, p); rerr == nil {
				cons = again
				continue
			}
		}
		if err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			c.log.Debug().Err(err).Msg("fetch")
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
}

// recreate creates p's consumer again if it no longer exists, and returns
// the consumer to fetch from.
func (c *Cluster) recreate(ctx context.Context, p *puller) (jetstream.Consumer, error) {
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	cons, err := c.js.Consumer(cctx, workStream, p.name)
	if err == nil {
		return cons, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, err
	}
	cons, err = c.js.CreateOrUpdateConsumer(cctx, workStream, c.consumerConfig(p.name, p.filter))
	if err != nil {
		return nil, err
	}
	c.log.Info().Str("consumer", p.name).Msg("created this node's work consumer again (it was deleted while the node was taken for dead)")
	return cons, nil
}

// take claims a delivered job and hands it to the local kernel, or acks a
// message whose job needs nothing more.
func (c *Cluster) take(ctx context.Context, msg jetstream.Msg) {
	id := string(msg.Data())
	log := c.log.With().Str("job", id).Logger()
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	rec, rev, err := c.get(octx, id)
	switch {
	case errors.Is(err, job.ErrNotFound):
		_ = msg.Ack() // deleted from the registry: nothing to run
		return
	case err != nil:
		log.Warn().Err(err).Msg("read a delivered job; it is redelivered")
		_ = msg.NakWithDelay(time.Second)
		return
	case terminal(rec.State):
		// Finished elsewhere, or cancelled while queued; a restarted node
		// gets here for the jobs its last life held.
		_ = msg.Ack()
		return
	}
	c.mu.Lock()
	if h, ok := c.held[id]; ok {
		// Redelivered to the node that holds it (an in-progress signal
		// came late): keep the newer message alive.
		h.msg = msg
		c.mu.Unlock()
		_ = msg.InProgress()
		return
	}
	c.mu.Unlock()
	now := time.Now().UTC()
	if rec.Attempts >= c.cfg.MaxAttempts {
		rec.State, rec.FinishedAt = job.Failed, now
		rec.Error = "the job was started on its nodes cluster.max_attempts times and never finished"
		if c.update(octx, rec, rev) == nil {
			_ = msg.Ack()
		}
		return
	}
	prev := rec.Node
	rec.State, rec.Node, rec.StartedAt = job.Running, c.cfg.NodeID, now
	rec.Attempts++
	newRev, err := c.put(octx, rec, rev)
	if err != nil {
		// Claimed by another node meanwhile, or NATS is away: ask again.
		_ = msg.NakWithDelay(200 * time.Millisecond)
		return
	}
	if prev != "" && prev != c.cfg.NodeID {
		log.Info().Str("from", prev).Int("attempt", rec.Attempts).Msg("took over a job from a node that stopped holding it")
	}
	local := &job.Job{ID: rec.ID, Class: rec.Class, Workflow: rec.Workflow, Models: rec.Models,
		DeadlineMS: rec.DeadlineMS, Tenant: rec.Tenant, ClientID: rec.ClientID}
	// The cluster's order within a class, kept on the node: an explicit
	// order as given, else the registry's sequence (negated for front).
	order := float64(rec.Seq)
	switch {
	case rec.Order != nil && !rec.Front:
		order = *rec.Order
	case rec.Front:
		order = -float64(rec.Seq)
	}
	local.Order = &order
	c.mu.Lock()
	c.held[id] = &held{msg: msg, rev: newRev, rec: *rec}
	c.mu.Unlock()
	err = c.local.Store.Submit(octx, local)
	if errors.Is(err, job.ErrDuplicate) {
		// A previous life of this node ran it (forgetLocal cancelled it):
		// the registry's claim is the job now.
		if old, gerr := c.local.Store.Get(id); gerr == nil && !terminal(old.State) {
			_, _ = c.local.Cancel(id)
		}
		_ = c.local.Store.Delete(id)
		err = c.local.Store.Submit(octx, local)
	}
	if err != nil {
		log.Warn().Err(err).Msg("could not queue a claimed job locally; giving it back")
		c.mu.Lock()
		delete(c.held, id)
		c.mu.Unlock()
		rec.State, rec.Node, rec.StartedAt = job.Queued, "", time.Time{}
		rec.Attempts--
		_ = c.update(octx, rec, newRev)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	// Its estimate (the store derived its facts) feeds the work of the
	// jobs still waiting in this node's consumers (routedBacklog).
	if c.local.Estimate != nil {
		est := c.local.Estimate(local)
		c.mu.Lock()
		if c.meanJob == 0 {
			c.meanJob = est
		} else {
			c.meanJob = (7*c.meanJob + 3*est) / 10
		}
		c.mu.Unlock()
	}
}

// put writes rec over revision rev and returns the new revision.
func (c *Cluster) put(ctx context.Context, rec *Record, rev uint64) (uint64, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	n, err := c.jobs.Update(ctx, key(rec.ID), data, rev)
	if err == nil {
		c.remember(rec)
	}
	return n, err
}

func (c *Cluster) update(ctx context.Context, rec *Record, rev uint64) error {
	_, err := c.put(ctx, rec, rev)
	return err
}

// keepAlive signals "in progress" for every held job every AckWait/3 and
// writes the node's heartbeat every second. A node cut off from NATS for
// longer than AckWait has lost its jobs to other nodes: it cancels them
// here, so that its workers stop, and drops their results.
func (c *Cluster) keepAlive(ctx context.Context) {
	every := max(c.cfg.AckWait/3, 100*time.Millisecond)
	progress := time.NewTicker(every)
	beat := time.NewTicker(nodeBeat)
	defer progress.Stop()
	defer beat.Stop()
	c.heartbeat(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			c.heartbeat(ctx)
		case <-progress.C:
			c.mu.Lock()
			cut := !c.cutSince.IsZero() && time.Since(c.cutSince) > c.cfg.AckWait
			var lost []string
			for id, h := range c.held {
				if cut && !h.abandoned {
					h.abandoned = true
					lost = append(lost, id)
					continue
				}
				if !h.abandoned {
					_ = h.msg.InProgress()
				}
			}
			c.mu.Unlock()
			for _, id := range lost {
				c.log.Warn().Str("job", id).Msg("cut off from NATS longer than ack_wait: the job goes to another node; stopping it here")
				if _, err := c.local.Cancel(id); err != nil {
					c.drop(id) // already ended locally
				}
			}
		}
	}
}

// heartbeat writes this node's NodeInfo into KILN_nodes. The bucket's TTL
// (nodeTTL) drops it a few seconds after the last write, so a dead node
// leaves the cluster's view on its own.
func (c *Cluster) heartbeat(ctx context.Context) {
	info := NodeInfo{ID: c.cfg.NodeID, At: time.Now().UTC()}
	if c.local.State != nil {
		info.NodeState = c.local.State()
	}
	if c.local.Addr != nil {
		info.Addr = c.local.Addr()
	}
	ready := c.local.ReadyWorkers()
	c.routedBacklog(ctx)
	c.mu.Lock()
	info.Held = len(c.held)
	info.Routed = c.routed
	info.RoutedWork = time.Duration(c.routed) * c.meanJob
	c.mu.Unlock()
	// Healthy as the node would be if this write reaches JetStream: a
	// write that does not is no heartbeat at all.
	info.Healthy = ready > 0 && c.nc.IsConnected()
	data, _ := json.Marshal(info)
	bctx, cancel := context.WithTimeout(ctx, nodeBeat)
	defer cancel()
	if _, err := c.nodes.Put(bctx, c.cfg.NodeID, data); err != nil || !info.Healthy {
		return
	}
	// Ready (and /readyz) counts only healthy heartbeats: once it is 200,
	// every node's view has this node as one the router may choose.
	c.mu.Lock()
	c.lastBeat = time.Now()
	c.mu.Unlock()
}

// routedBacklog counts the jobs that wait in this node's own consumers
// (routed to it, not pulled yet) into c.routed; on an error it keeps the
// last count.
func (c *Cluster) routedBacklog(ctx context.Context) {
	ictx, cancel := context.WithTimeout(ctx, nodeBeat/4)
	defer cancel()
	n := 0
	for _, p := range c.pullers {
		if !p.own {
			continue // a shared one: any node's
		}
		// p.cons names the consumer; it reads the one that exists now,
		// also after pull created it again.
		info, err := p.cons.Info(ictx)
		if err != nil {
			return
		}
		n += int(info.NumPending)
	}
	c.mu.Lock()
	c.routed = n
	c.mu.Unlock()
}

// drop forgets a held job without acking it.
func (c *Cluster) drop(id string) {
	c.mu.Lock()
	delete(c.held, id)
	delete(c.written, id)
	c.mu.Unlock()
	signal(c.room)
}

// record writes finished local jobs to the registry and acks their
// messages. A write that fails for want of NATS is retried while the job's
// message is still this node's (until AckWait after the cut).
func (c *Cluster) record(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		case <-time.After(500 * time.Millisecond):
		}
		c.mu.Lock()
		todo := c.finished
		c.finished = nil
		c.mu.Unlock()
		var again []*job.Job
		for _, j := range todo {
			if !c.finish(ctx, j) {
				again = append(again, j)
			}
		}
		if len(again) > 0 {
			c.mu.Lock()
			c.finished = append(again, c.finished...)
			c.mu.Unlock()
		}
	}
}

// finish records one finished job; false means "try again later".
func (c *Cluster) finish(ctx context.Context, j *job.Job) bool {
	c.mu.Lock()
	h, ok := c.held[j.ID]
	c.mu.Unlock()
	if !ok {
		return true
	}
	if h.abandoned {
		c.drop(j.ID)
		return true
	}
	c.mu.Lock()
	written := c.written[j.ID]
	c.mu.Unlock()
	if j.State == job.Done && !written && time.Since(j.FinishedAt) < outputsWait {
		return false // the API is still writing its files
	}
	log := c.log.With().Str("job", j.ID).Logger()
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if len(j.Outputs) > 0 && j.State == job.Done {
		if err := c.uploadOutputs(octx, j.Outputs); err != nil {
			if !c.nc.IsConnected() {
				return false
			}
			log.Warn().Err(err).Msg("copy outputs to the cluster's object store; they stay on this node")
		}
	}
	rec := h.rec
	rec.State, rec.Outputs, rec.Error, rec.Worker = j.State, j.Outputs, j.Error, j.Worker
	rec.FinishedAt = j.FinishedAt
	if !j.StartedAt.IsZero() {
		rec.StartedAt = j.StartedAt
	}
	// Starts on earlier nodes, and this node's own (a worker crash here
	// costs one too).
	if j.Attempts > 1 {
		rec.Attempts += j.Attempts - 1
	}
	_, err := c.put(octx, &rec, h.rev)
	switch {
	case err == nil:
		if err := h.msg.Ack(); err != nil {
			log.Debug().Err(err).Msg("ack (the next delivery finds the job finished and acks it)")
		}
		c.drop(j.ID)
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists):
		// Another node claimed the job after this one stopped signalling;
		// its run is the job's now. The message is its to ack.
		log.Warn().Msg("the job was taken over by another node; this node's result is dropped")
		c.drop(j.ID)
	default:
		if c.nc.IsConnected() {
			log.Warn().Err(err).Msg("record a finished job; retrying")
		}
		return false
	}
	return true
}

// terminal reports whether a job in state st has ended.
func terminal(st job.State) bool {
	return st == job.Done || st == job.Failed || st == job.Cancelled
}
