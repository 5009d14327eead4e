package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-gpu/kiln/internal/job"
)

// Audit of queued jobs. A queued record can be left with no work message,
// and then no node ever gets the job:
//
//   - a record stored late (its create's answer lost while a NATS server
//     died) after a node had acked its message as one without a record
//     (take, recordWait), when the client does not retry its submit (or
//     let the cluster name the job);
//   - a job given back by its node (runClaimed) whose publish failed;
//   - any other publish after a record write that fails with no retry.
//
// So every auditEvery (± auditJitter, that nodes started together do not
// audit together) the alive node with the smallest id reads every work
// message the stream holds (pendingWork), then the registry's queued
// records, and queues again (requeue) each one that was last written more
// than auditAge ago, was not claimed at submit (Record.Direct: those have
// rescue) and has no message. The stream is read first: a message acked
// between the two reads belongs to a job claimed meanwhile, whose record is
// then no longer queued; read the other way round, a job claimed between
// them would look queued and without a message.
//
// A job whose message is in the stream is left alone, but for a message
// that names another token than the record's, which take acks unrun; a
// rescue's message (one that names a revision) counts as the job's even
// when it may be stale. auditAge is well above recordWait and the submit's
// and give-back's time between their writes and their publishes, so a
// record whose message is on its way is not taken for one that has none;
// it also covers clocks that differ by seconds (the record's time is its
// server's).
//
// A node whose view of the heartbeats differs may audit at the same time
// as the smallest-id node: requeue is a compare-and-set on the revision
// read, so only one of them writes the new token, and a record claimed or
// changed meanwhile is left alone. A false positive (a job that did have a
// message, read as one without) costs the job only its place in the queue:
// its earlier message names an old token now and is acked unrun, and the
// new one goes to the back of the stream.
const (
	auditEvery  = 45 * time.Second
	auditJitter = 15 * time.Second
	auditAge    = 2 * time.Minute
	// auditMaxMsgs bounds the messages one audit reads; a larger stream is
	// not audited (its backlog is the cluster's problem then, and every
	// read costs a round trip to the stream's leader).
	auditMaxMsgs = 10_000
	// auditScanTime bounds the time one audit spends reading the stream;
	// an audit that runs out of it requeues nothing (a job whose message
	// it did not reach would look as one without).
	auditScanTime = 20 * time.Second
)

// auditEveryEnv is a test hook for the multi-process audit test
// (tests/TestClusterAuditRequeuesLive): a duration D has the audit run
// every D (± D/4) and requeue records older than D, so that a test sees
// one in seconds instead of minutes. Read once, from the environment only
// (not KILN_…: kiln reads those as config keys); a value that is not a
// positive duration turns nothing on; a node logs a warning at start
// while it is on (TestHooks). Nothing in kiln sets it.
const auditEveryEnv = "KILNTEST_AUDIT_EVERY"

// auditHook is auditEveryEnv's duration, 0 when off.
var auditHook = sync.OnceValue(func() time.Duration {
	d, err := time.ParseDuration(os.Getenv(auditEveryEnv))
	if err != nil || d <= 0 {
		return 0
	}
	return d
})

// auditTimings are the audit's period, jitter and age: the constants, or
// auditEveryEnv's.
func auditTimings() (every, jitter, age time.Duration) {
	if d := auditHook(); d > 0 {
		return d, d / 4, d
	}
	return auditEvery, auditJitter, auditAge
}

// errStreamTooLarge: the work stream holds more than auditMaxMsgs.
var errStreamTooLarge = errors.New("the work stream holds more messages than an audit reads")

// audit runs requeueMessageless every auditEvery (± auditJitter) on the
// alive node with the smallest id, until ctx ends.
func (c *Cluster) audit(ctx context.Context) {
	for {
		every, jitter, age := auditTimings()
		wait := every - jitter + rand.N(2*jitter)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if !c.nc.IsConnected() || !c.auditsQueue() {
			continue
		}
		if _, err := c.requeueMessageless(ctx, age); err != nil {
			c.log.Warn().Err(err).Msg("skipped the audit of queued jobs")
		}
	}
}

// auditsQueue reports whether this node is the alive node with the
// smallest id, the one that audits the queue.
func (c *Cluster) auditsQueue() bool {
	for _, n := range c.Nodes() {
		if n.ID < c.cfg.NodeID {
			return false
		}
	}
	return true
}

// requeueMessageless queues again every queued job that has no work
// message in the stream and was last written at least minAge ago (see
// above), and returns how many it queued again. It queues nothing when the
// stream could not be read whole.
func (c *Cluster) requeueMessageless(ctx context.Context, minAge time.Duration) (int, error) {
	pending, err := c.pendingWork(ctx)
	if err != nil {
		return 0, err
	}
	// The view gives the candidates; each is read again below, after the
	// stream, which is what the order above needs.
	var ids []string
	c.viewMu.RLock()
	for id, r := range c.view {
		if r.State == job.Queued && !r.Direct && !hasMessage(pending[id], r.Token) {
			ids = append(ids, id)
		}
	}
	c.viewMu.RUnlock()
	n := 0
	for _, id := range ids {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		gctx, cancel := context.WithTimeout(ctx, opTimeout)
		// Any replica's copy will do: one that lags gives a revision
		// that the compare-and-set of requeue finds moved on.
		e, err := c.jobs.Get(gctx, key(id))
		cancel()
		if err != nil {
			continue // deleted, or NATS is away: the next audit sees
		}
		var rec Record
		if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &rec) != nil {
			continue
		}
		age := time.Since(e.Created())
		if rec.State != job.Queued || rec.Direct || age < minAge || hasMessage(pending[id], rec.Token) {
			continue
		}
		if rec.Seq == 0 {
			rec.Seq = e.Revision()
		}
		old := rec.Token
		rctx, cancel := context.WithTimeout(ctx, opTimeout)
		err = c.requeue(rctx, &rec, e.Revision())
		cancel()
		switch {
		case err != nil:
			c.log.Warn().Err(err).Str("job", id).Msg("could not queue again a queued job that has no work message")
		case rec.Token != old || old == "":
			n++
			c.requeued.noMessage.Add(1)
			c.log.Warn().Str("job", id).Dur("since_write", age).Str("reason", "no_message").
				Msg("queued again a queued job that had no work message")
		}
	}
	return n, nil
}

// hasMessage reports whether the tokens of a job's messages in the stream
// hold one that take would claim the job through, for a record of token.
// Only a message naming another token (of both non-empty) is surely acked
// unrun (take).
func hasMessage(tokens []string, token string) bool {
	for _, t := range tokens {
		if t == "" || token == "" || t == token {
			return true
		}
	}
	return false
}

// pendingWork reads every message of the work stream, by sequence and
// without consuming any (a work queue's consumers take what they read), and
// returns the tokens of each job's messages (an empty one for a message
// that names none). It fails, rather than return part, when the stream
// holds more than auditMaxMsgs or reading it takes more than auditScanTime.
func (c *Cluster) pendingWork(ctx context.Context) (map[string][]string, error) {
	ictx, cancel := context.WithTimeout(ctx, opTimeout)
	st, err := c.js.Stream(ictx, workStream)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("cluster: audit: read stream %s: %w", workStream, err)
	}
	state := st.CachedInfo().State
	if state.Msgs > auditMaxMsgs {
		return nil, fmt.Errorf("cluster: audit: %d messages (at most %d): %w", state.Msgs, auditMaxMsgs, errStreamTooLarge)
	}
	pending := map[string][]string{}
	if state.Msgs == 0 {
		return pending, nil
	}
	deadline := time.Now().Add(auditScanTime)
	seq := state.FirstSeq
	// Messages published after the stream's info are not read: a record
	// written with them is younger than auditAge. next_by_subj skips the
	// sequences of messages acked since (a work queue deletes them).
	for read := 0; seq <= state.LastSeq; read++ {
		if read > auditMaxMsgs || time.Now().After(deadline) {
			return nil, fmt.Errorf("cluster: audit: read %d messages of %s in %v, not all", read, workStream, auditScanTime)
		}
		gctx, cancel := context.WithTimeout(ctx, opTimeout)
		m, err := st.GetMsg(gctx, seq, jetstream.WithGetMsgSubject(workSubject+">"))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("cluster: audit: read message %d of %s: %w", seq, workStream, err)
		}
		if m.Sequence > state.LastSeq {
			break
		}
		id, token, _ := parseWorkMessage(m.Data)
		pending[id] = append(pending[id], token)
		seq = m.Sequence + 1
	}
	return pending, nil
}
