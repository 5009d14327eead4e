package cluster

import (
	"bytes"
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
// node's heartbeat, the watch of the registry and the audit of its queued
// jobs.
func (c *Cluster) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range c.pullers {
		wg.Add(1)
		go func() { defer wg.Done(); c.pull(ctx, p) }()
	}
	for _, f := range []func(context.Context){c.keepAlive, c.beat, c.record, c.watch, c.watchNodes, c.adopt, c.resumeCopies, c.audit} {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	wg.Wait()
	c.copies.Wait()
	c.release()
}

// release gives back the jobs this node still holds when it stops, so that
// other nodes take them at once instead of after AckWait: a job held
// through a message by a nak, a direct one by queuing it (as rescue would,
// later).
func (c *Cluster) release() {
	c.mu.Lock()
	var direct []held
	for id, h := range c.held {
		switch {
		case h.abandoned:
		case h.msg != nil:
			_ = h.msg.Nak()
		case h.rev != 0:
			direct = append(direct, *h)
		}
		delete(c.held, id)
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, h := range direct {
		_ = c.publish(ctx, h.rec.ID, h.rec.Class, "", h.rec.Token, h.rev)
	}
}

// JobFinished is the dispatcher's hook: a local job ended (done, failed,
// cancelled). The recorder writes it to the registry; the hook itself must
// not wait on the network, as it runs in the dispatcher.
func (c *Cluster) JobFinished(j *job.Job) {
	c.mu.Lock()
	h, ok := c.held[j.ID]
	if ok {
		c.finished = append(c.finished, j)
		h.endedAt = time.Now()
	}
	c.mu.Unlock()
	if ok {
		signal(c.wake)
	}
}

// outputsWait bounds how long a finished job's outputs wait for the API to
// finish its files (OutputsWritten) before they are copied anyway.
const outputsWait = 5 * time.Second

// OutputsWritten is the API's hook: it has written the last bytes of a
// finished job's files (ComfyUI's PNG metadata), so the node may copy them
// to the object store; before that, a copy could differ from the file this
// node serves.
func (c *Cluster) OutputsWritten(id string) {
	c.mu.Lock()
	if ch, ok := c.written[id]; ok {
		select {
		case <-ch:
		default:
			close(ch)
		}
	}
	c.mu.Unlock()
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

// recordWait is how long a work message whose record is not in the
// registry is kept (redelivered every recordRetry) before it is dropped:
// Submit writes the record and the message concurrently, so a node may pull
// the message first; a message whose submit failed has no record ever.
const (
	recordWait  = submitTimeout + 5*time.Second
	recordRetry = 100 * time.Millisecond
)

// take claims a delivered job and hands it to the local kernel, or acks a
// message whose job needs nothing more.
func (c *Cluster) take(ctx context.Context, msg jetstream.Msg) {
	id, token, wantRev := parseWorkMessage(msg.Data())
	log := c.log.With().Str("job", id).Logger()
	c.mu.Lock()
	if h, ok := c.held[id]; ok && !h.abandoned {
		if token != "" && h.rec.Token != "" && token != h.rec.Token {
			// Another submit's message for this id (one that lost the
			// race for its record): nothing to run.
			c.mu.Unlock()
			_ = msg.Ack()
			return
		}
		// This node holds the job: claimed when it was submitted here
		// (the message arrives after), or redelivered to it because an
		// in-progress signal came late. Keep the newer message alive.
		h.msg = msg
		c.mu.Unlock()
		_ = msg.InProgress()
		return
	}
	c.mu.Unlock()
	delivered := time.Now()
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	rec, rev, err := c.get(octx, id)
	switch {
	case errors.Is(err, job.ErrNotFound):
		if md, merr := msg.Metadata(); merr == nil && time.Since(md.Timestamp) < recordWait {
			// Its submit may still be writing the record.
			_ = msg.NakWithDelay(recordRetry)
			return
		}
		_ = msg.Ack() // deleted from the registry, or never written: nothing to run
		return
	case err != nil:
		log.Warn().Err(err).Msg("read a delivered job; it is redelivered")
		_ = msg.NakWithDelay(time.Second)
		return
	case token != "" && rec.Token != "" && token != rec.Token:
		// Another submit's message for this id, or one of this job's
		// from before a retried submit queued it again under a new token
		// (requeue): nothing to run.
		_ = msg.Ack()
		return
	case wantRev != 0 && wantRev != rev && rec.Rescue != wantRev:
		// A rescue of a job that was claimed otherwise, given back or
		// ended meanwhile. One that was claimed through this message
		// (rec.Rescue) is delivered again because its node stopped
		// signalling: acked here, it would stay running, in the
		// registry, on a node that no longer holds it, for good.
		_ = msg.Ack()
		return
	case terminal(rec.State):
		// Finished elsewhere, or cancelled while queued; a restarted node
		// gets here for the jobs its last life held.
		_ = msg.Ack()
		return
	}
	read := time.Now()
	c.mu.Lock()
	if h, ok := c.held[id]; ok {
		// Held meanwhile (abandoned, or a redelivery raced this one):
		// keep the newer message alive.
		h.msg = msg
		c.mu.Unlock()
		_ = msg.InProgress()
		return
	}
	c.mu.Unlock()
	c.mu.Lock()
	unsureAt, unsure := c.unsure[id]
	delete(c.unsure, id)
	c.mu.Unlock()
	if unsure && rec.State == job.Running && rec.Node == c.cfg.NodeID && rec.StartedAt.Equal(unsureAt) {
		// This node's own claim, stored while its answer and the read
		// after it were lost: the job never started here. Take the claim
		// up as it stands; another claim would count a second attempt
		// for one start.
		c.hold(octx, msg, rec, rev, delivered, read)
		return
	}
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
	rec.Direct = false // held through this message now
	rec.Rescue = wantRev
	newRev, err := c.put(octx, rec, rev)
	if err != nil {
		// The write may have been stored with its answer lost (the server
		// that took it died). Given back, the message's next delivery
		// would find the job running on this node, which does not hold
		// it, and claim it again: a second attempt counted for one start,
		// and at cluster.max_attempts a job failed that never ran. So
		// read the record and keep a claim that is this node's, as finish
		// keeps a result. octx may be spent by the wait for that answer:
		// the read and the rest of the claim get a context of their own.
		_ = msg.InProgress()
		sctx, scancel := context.WithTimeout(ctx, opTimeout)
		defer scancel()
		octx = sctx
		storedRev, ok := c.stored(octx, rec)
		if !ok {
			// Claimed by another node meanwhile, or NATS is away: ask
			// again, remembering what this claim wrote in case it was
			// stored.
			c.mu.Lock()
			if c.unsure == nil || len(c.unsure) >= maxUnsureClaims {
				c.unsure = map[string]time.Time{}
			}
			c.unsure[id] = rec.StartedAt
			c.mu.Unlock()
			_ = msg.NakWithDelay(200 * time.Millisecond)
			return
		}
		newRev = storedRev
		c.remember(rec)
	}
	if prev != "" && prev != c.cfg.NodeID {
		log.Info().Str("from", prev).Int("attempt", rec.Attempts).Msg("took over a job from a node that stopped holding it")
	}
	c.hold(octx, msg, rec, newRev, delivered, read)
}

// maxUnsureClaims bounds Cluster.unsure: claims in doubt are rare (a lost
// answer and a failed read together), and forgetting one costs only the
// extra attempt it would have saved.
const maxUnsureClaims = 1 << 12

// hold makes a job whose claim by this node the registry holds at rev
// this node's: held, its message kept alive, queued locally. A job the
// local queue refuses is given back.
func (c *Cluster) hold(octx context.Context, msg jetstream.Msg, rec *Record, newRev uint64, delivered, read time.Time) {
	id := rec.ID
	log := c.log.With().Str("job", id).Logger()
	claimed := time.Now()
	c.mu.Lock()
	c.held[id] = &held{msg: msg, rev: newRev, rec: *rec}
	c.written[id] = make(chan struct{})
	c.mu.Unlock()
	if err := c.startLocal(octx, rec); err != nil {
		log.Warn().Err(err).Msg("could not queue a claimed job locally; giving it back")
		c.drop(id)
		rec.State, rec.Node, rec.StartedAt = job.Queued, "", time.Time{}
		rec.Attempts--
		_ = c.update(octx, rec, newRev)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	var queued time.Duration
	if md, merr := msg.Metadata(); merr == nil {
		queued = delivered.Sub(md.Timestamp)
	}
	log.Debug().Float64("queued_ms", ms(queued)).Float64("read_ms", ms(read.Sub(delivered))).
		Float64("claim_ms", ms(claimed.Sub(read))).Float64("local_submit_ms", ms(time.Since(claimed))).
		Msg("claimed a delivered job")
}

// claimAtSubmit claims for this node a job that Submit places here, when
// the node has room: rec becomes the record of a job running here (attempt
// 1), and a slot is held for it. false leaves rec as it was: the job is
// queued for this node as any other.
func (c *Cluster) claimAtSubmit(rec *Record, now time.Time) bool {
	capacity := c.capacity()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.held[rec.ID]; ok || capacity-len(c.held) <= 0 {
		return false
	}
	rec.State, rec.Node, rec.StartedAt, rec.Attempts, rec.Direct = job.Running, c.cfg.NodeID, now, 1, true
	c.held[rec.ID] = &held{rec: *rec}
	c.written[rec.ID] = make(chan struct{})
	return true
}

// unclaim gives up the slot claimAtSubmit held for a job whose submit
// failed. A message of it that arrived meanwhile goes back to JetStream,
// which delivers it again to a node that finds its record (or none).
func (c *Cluster) unclaim(id string, claimed bool) {
	if !claimed {
		return
	}
	c.mu.Lock()
	h := c.held[id]
	delete(c.held, id)
	delete(c.written, id)
	c.mu.Unlock()
	if h != nil && h.msg != nil {
		_ = h.msg.Nak()
	}
	signal(c.room)
}

// runClaimed queues in the local kernel a job that Submit claimed for this
// node (claimAtSubmit), its record now stored at revision rev. If the local
// queue refuses it, the record is given back (queued, no node) with a work
// message for any node.
func (c *Cluster) runClaimed(ctx context.Context, rec *Record, rev uint64) {
	c.mu.Lock()
	h, ok := c.held[rec.ID]
	if ok {
		h.rev, h.rec.Seq = rev, rev
	}
	c.mu.Unlock()
	if !ok || h.abandoned {
		// Cut off from NATS meanwhile: the other nodes rescue the job.
		return
	}
	err := c.startLocal(ctx, rec)
	if err == nil {
		return
	}
	c.log.Warn().Err(err).Str("job", rec.ID).Msg("could not queue a job claimed at submit locally; giving it back")
	c.mu.Lock()
	msg := h.msg
	c.mu.Unlock()
	c.drop(rec.ID)
	if msg != nil {
		_ = msg.NakWithDelay(time.Second)
	}
	// Queued for any node, with a message now. Should either write fail,
	// the record still says this node runs the job, which it does not
	// hold: rescue queues it.
	back := *rec
	back.State, back.Node, back.StartedAt, back.Attempts, back.Direct = job.Queued, "", time.Time{}, 0, false
	uctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := c.put(uctx, &back, rev); err == nil {
		_ = c.publish(uctx, back.ID, back.Class, "", back.Token, 0)
	}
}

// startLocal queues a job this node claimed in its local kernel.
func (c *Cluster) startLocal(ctx context.Context, rec *Record) error {
	local := &job.Job{ID: rec.ID, Class: rec.Class, Workflow: rec.Workflow, Models: rec.Models,
		DeadlineMS: rec.DeadlineMS, Tenant: rec.Tenant, ClientID: rec.ClientID,
		// Set when the job was submitted on this node: the API derived
		// them from this workflow, and the store need not parse it again.
		Facts: rec.Facts}
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
	err := c.local.Store.Submit(ctx, local)
	if errors.Is(err, job.ErrDuplicate) {
		// A previous life of this node ran it (forgetLocal cancelled it):
		// the registry's claim is the job now.
		if old, gerr := c.local.Store.Get(rec.ID); gerr == nil && !terminal(old.State) {
			_, _ = c.local.Cancel(rec.ID)
		}
		_ = c.local.Store.Delete(rec.ID)
		err = c.local.Store.Submit(ctx, local)
	}
	if err != nil {
		return err
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
	return nil
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

// keepAlive signals "in progress" for every held job every AckWait/3. A
// node cut off from NATS for longer than AckWait has lost its jobs to
// other nodes: it cancels them here, so that its workers stop, and drops
// their results. It runs apart from the heartbeat (beat): a heartbeat
// waits up to a second and more for JetStream while a NATS server's death
// has it elect new leaders, and signals waiting behind it came up to
// AckWait/3 + 1.25 s apart, close to a short AckWait (2 s in the cluster
// tests), after which JetStream gives a held job to another node.
func (c *Cluster) keepAlive(ctx context.Context) {
	every := max(c.cfg.AckWait/3, 100*time.Millisecond)
	progress := time.NewTicker(every)
	defer progress.Stop()
	for {
		select {
		case <-ctx.Done():
			return
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
				if !h.abandoned && h.msg != nil {
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

// beat writes the node's heartbeat at once and then every nodeBeat.
func (c *Cluster) beat(ctx context.Context) {
	t := time.NewTicker(nodeBeat)
	defer t.Stop()
	c.heartbeat(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.heartbeat(ctx)
			c.followExperiment()
		}
	}
}

// followExperiment hands Local.Follow the routing experiment another live
// node runs (the one with the smallest id, should two run one), or nil
// once none does: its node's heartbeat stopped carrying it, or stopped.
// It calls Follow only when that changes; a refusal (this node lacks an
// arm's policy, or runs an experiment itself) is logged once and tried
// again when the experiment changes.
func (c *Cluster) followExperiment() {
	if c.local.Follow == nil {
		return
	}
	var lead string
	var exp json.RawMessage
	for _, n := range c.Nodes() {
		if n.ID != c.cfg.NodeID && len(n.Experiment) > 0 {
			lead, exp = n.ID, n.Experiment
			break
		}
	}
	if bytes.Equal(exp, c.followed) {
		return
	}
	c.followed = exp
	if err := c.local.Follow(exp); err != nil {
		c.log.Warn().Err(err).Str("node", lead).Msg("not taking part in the routing experiment of another node: jobs submitted here are routed by the active policy")
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
	if c.local.Leading != nil {
		info.Experiment = c.local.Leading()
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

// finish records one finished job; false means "try again later". The
// record comes first: a client waiting for the job learns that it is done
// after one replicated write. Its outputs are copied to the object store
// after (copyOutputs); a /view of them on another node meanwhile waits for
// the copy (OpenOutput), and a note in Local.PendingDir, written before the
// record, has a node that dies before the copy make it when it restarts.
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
	log := c.log.With().Str("job", j.ID).Logger()
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
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
	copying := j.State == job.Done && len(j.Outputs) > 0
	if copying {
		c.notePending(j.ID)
	}
	start := time.Now()
	_, err := c.put(octx, &rec, h.rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		if _, ok := c.stored(octx, &rec); ok {
			// An earlier try of this write was stored but its answer
			// lost (the server that took it died): the revision moved
			// on by this node's own result, which is kept, its outputs
			// copied.
			err = nil
			c.remember(&rec)
		}
	}
	switch {
	case err == nil:
		if h.msg != nil {
			if err := h.msg.Ack(); err != nil {
				log.Debug().Err(err).Msg("ack (the next delivery finds the job finished and acks it)")
			}
		}
		c.keepRecent(&rec)
		c.mu.Lock()
		delete(c.held, j.ID)
		written := c.written[j.ID]
		if !copying {
			delete(c.written, j.ID)
		}
		c.mu.Unlock()
		signal(c.room)
		log.Debug().Float64("hook_after_finish_ms", ms(h.endedAt.Sub(j.FinishedAt))).
			Float64("record_wait_ms", ms(start.Sub(h.endedAt))).Float64("record_ms", ms(time.Since(start))).
			Msg("recorded a finished job")
		if copying {
			c.copies.Add(1)
			go func() {
				defer c.copies.Done()
				c.copyOutputs(ctx, &rec, written)
			}()
		}
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists):
		// Another node claimed the job after this one stopped signalling;
		// its run is the job's now. The message is its to ack.
		log.Warn().Msg("the job was taken over by another node; this node's result is dropped")
		if copying {
			c.forgetPending(j.ID)
		}
		c.drop(j.ID)
	default:
		if c.nc.IsConnected() {
			log.Warn().Err(err).Msg("record a finished job; retrying")
		}
		return false
	}
	return true
}

// stored reports whether the registry's record of rec's job is rec as
// this node wrote it, and at which revision: another node's claim or
// result differs in its node, and this node's claims or results of two
// runs in their attempts, starting or finishing times (each write sets
// them to its own clock's reading, in nanoseconds).
func (c *Cluster) stored(ctx context.Context, rec *Record) (uint64, bool) {
	cur, rev, err := c.get(ctx, rec.ID)
	ok := err == nil && cur.Node == rec.Node && cur.State == rec.State && cur.Attempts == rec.Attempts &&
		cur.StartedAt.Equal(rec.StartedAt) && cur.FinishedAt.Equal(rec.FinishedAt)
	return rev, ok
}

// terminal reports whether a job in state st has ended.
func terminal(st job.State) bool {
	return st == job.Done || st == job.Failed || st == job.Cancelled
}
