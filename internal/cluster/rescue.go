package cluster

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
)

// Rescue. A job claimed by the node that accepted it (Record.Direct) has
// no work message for JetStream to give to another node when that node
// dies: its replicated record is its only copy. Every node therefore looks
// through the direct jobs that have not ended (rescue, every adoptEvery)
// and queues a work message, on the shared subject, for each whose node
//
//   - is this node, which does not hold it: a previous life of this node
//     claimed it (forgetLocal stopped the local copy) or a submit that
//     failed after its record was written did;
//   - or has not been heard from (no heartbeat) for as long as JetStream
//     waits for an unacknowledged message (cluster.ack_wait, at least the
//     heartbeat's TTL), and does not answer on aliveSubject: it died or is
//     cut off, as JetStream would judge a node holding a message.
//
// The message names the record's revision (workMessage); the node that
// pulls it claims the job only if the record is still at that revision, so
// that rescues by several nodes, or one from a view that lagged, run
// nothing twice. Once claimed through it, the message is the job's only
// one and the record says so (Record.Rescue): a delivery of it after that
// (the claiming node died, or was cut off and stopped the job, or its
// claim was stored but the answer lost) claims the job again, as any
// message does. A node cut off from NATS stops its jobs after ack_wait
// (keepAlive), as it does for the jobs it holds through messages.

// aliveSubject + node is answered by that node while it is connected.
const aliveSubject = "kiln.alive."

// aliveTimeout bounds the wait for a node's answer on aliveSubject.
const aliveTimeout = time.Second

// indexDirect keeps c.directs in step with the view; r nil removes id.
// The caller holds viewMu.
func (c *Cluster) indexDirect(id string, r *Record) {
	if r != nil && r.Direct && !terminal(r.State) {
		c.directs[id] = r
		return
	}
	delete(c.directs, id)
}

// answerAlive answers aliveSubject for this node.
func (c *Cluster) answerAlive(m *nats.Msg) { _ = m.Respond([]byte(c.cfg.NodeID)) }

// rescue queues the direct jobs of dead nodes and this node's own that it
// does not hold (see above).
func (c *Cluster) rescue(ctx context.Context) {
	silence := max(c.cfg.AckWait, nodeTTL)
	now := time.Now()
	var todo []Record
	silent := map[string]bool{}
	c.viewMu.RLock()
	for _, r := range c.directs {
		if r.Node == c.cfg.NodeID {
			todo = append(todo, *r)
			continue
		}
		last := c.started
		if n, ok := c.nodeView[r.Node]; ok && n.arrived.After(last) {
			last = n.arrived
		}
		if now.Sub(last) >= silence {
			silent[r.Node] = true
			todo = append(todo, *r)
		}
	}
	c.viewMu.RUnlock()
	if len(todo) == 0 {
		return
	}
	for node := range silent {
		actx, cancel := context.WithTimeout(ctx, aliveTimeout)
		_, err := c.nc.RequestWithContext(actx, aliveSubject+node, nil)
		cancel()
		if err == nil {
			silent[node] = false // connected: it rescues its own
		}
	}
	for _, r := range todo {
		if r.Node == c.cfg.NodeID {
			c.mu.Lock()
			_, held := c.held[r.ID]
			c.mu.Unlock()
			if held {
				continue
			}
		} else if !silent[r.Node] {
			continue
		}
		// The leader's record, not the view's: the rescue names its
		// revision, and a job that moved on needs none.
		gctx, cancel := context.WithTimeout(ctx, opTimeout)
		rec, rev, err := c.get(gctx, r.ID)
		if err == nil && rec.Direct && !terminal(rec.State) && rec.Node == r.Node {
			if err := c.publish(gctx, rec.ID, rec.Class, "", rec.Token, rev); err == nil {
				c.requeued.rescue.Add(1)
				c.log.Info().Str("job", rec.ID).Str("node", rec.Node).Msg("queued a job again that its node claimed when it was submitted and no longer holds")
			}
		}
		cancel()
	}
}
