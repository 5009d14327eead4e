package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/job"
)

// testWorkNodes returns two nodes, "here" and "b", on one in-process
// JetStream server (testJetStream) with the work stream, each with a local
// job.Store and one ready worker but none of its loops running, and the
// shared batch consumer, whose ack_wait is 1 s: a message that nobody
// signals for a second is delivered again.
func testWorkNodes(t *testing.T) (here, b *Cluster, cons jetstream.Consumer) {
	t.Helper()
	here = testJetStream(t)
	here.cfg.AckWait = time.Second
	ctx := context.Background()
	if _, err := here.js.CreateStream(ctx, jetstream.StreamConfig{Name: workStream, Subjects: []string{workSubject + ">"},
		Retention: jetstream.WorkQueuePolicy, Duplicates: dedupWindow}); err != nil {
		t.Fatal(err)
	}
	cons, err := here.js.CreateOrUpdateConsumer(ctx, workStream, here.consumerConfig("kiln-batch", workSubject+string(job.Batch)))
	if err != nil {
		t.Fatal(err)
	}
	b = &Cluster{cfg: here.cfg, nc: here.nc, js: here.js, jobs: here.jobs, outputs: here.outputs, log: zerolog.Nop(),
		held: map[string]*held{}, written: map[string]chan struct{}{}, recent: map[string]*Record{},
		view: map[string]*Record{}, directs: map[string]*Record{}}
	b.cfg.NodeID = "b"
	for _, c := range []*Cluster{here, b} {
		st, err := job.Open(filepath.Join(t.TempDir(), "queue.db"), job.Config{}.WithDefaults(), clock.Real())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		c.local = Local{Store: st, Cancel: st.Cancel, ReadyWorkers: func() int { return 1 }}
	}
	return here, b, cons
}

// nextWork fetches the next work message of cons, waiting up to wait;
// nil when none came.
func nextWork(t *testing.T, cons jetstream.Consumer, wait time.Duration) jetstream.Msg {
	t.Helper()
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		t.Fatal(err)
	}
	for msg := range batch.Messages() {
		return msg
	}
	return nil
}

// createDirect writes the record of a job that node "gone" claimed when
// it was submitted there (Record.Direct, no work message) and puts it in
// c's view, and returns its revision.
func createDirect(t *testing.T, c *Cluster, id string) uint64 {
	t.Helper()
	rec := Record{Job: job.Job{ID: id, Class: job.Batch, State: job.Running, Attempts: 1, Workflow: json.RawMessage(`{}`),
		CreatedAt: time.Now().UTC(), StartedAt: time.Now().UTC()}, Node: "gone", Target: "gone", Token: "t1", Direct: true}
	data, _ := json.Marshal(&rec)
	rev, err := c.jobs.Create(context.Background(), key(id), data)
	if err != nil {
		t.Fatal(err)
	}
	rec.Seq = rev
	c.remember(&rec)
	return rev
}

// createQueued writes the record of a queued batch job id of token, as a
// submit whose work message is the test's business, and returns it with
// its revision.
func createQueued(t *testing.T, c *Cluster, id, token string) *Record {
	t.Helper()
	rec := Record{Job: job.Job{ID: id, Class: job.Batch, State: job.Queued, Workflow: json.RawMessage(`{}`),
		CreatedAt: time.Now().UTC()}, Token: token}
	data, _ := json.Marshal(&rec)
	rev, err := c.jobs.Create(context.Background(), key(id), data)
	if err != nil {
		t.Fatal(err)
	}
	rec.Seq = rev
	return &rec
}

// recordOf is a job's record as the registry's leader has it, in words.
func recordOf(t *testing.T, c *Cluster, id string) string {
	t.Helper()
	rec, _, err := c.get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s on %s, attempt %d", rec.State, rec.Node, rec.Attempts)
}

// TestRescuedJobOutlivesItsRescuer: a job that its node claimed when it
// was submitted there, rescued after that node died, is held by the node
// that claimed it through the rescue's message, and that message is the
// job's only one. When that node stops signalling too (it died, or was cut
// off from NATS for ack_wait and stopped the job), JetStream delivers the
// message again and the node that pulls it claims the job and runs it. It
// used to ack the message as "a rescue of a job that was claimed
// meanwhile" (the record's revision had moved on, by the claim made
// through that very message), leaving the job running, in the registry, on
// a node that did not hold it, for good.
func TestRescuedJobOutlivesItsRescuer(t *testing.T) {
	here, b, cons := testWorkNodes(t)
	ctx := context.Background()
	const id = "direct-1"
	createDirect(t, here, id)
	here.started = time.Now().Add(-time.Minute) // "gone" has been silent since
	here.rescue(ctx)

	msg := nextWork(t, cons, 5*time.Second)
	if msg == nil {
		t.Fatal("the rescue queued no work message")
	}
	if n := requeuedMetric(t, here, requeueRescue); n != 1 {
		t.Fatalf("kiln_cluster_jobs_requeued_total{reason=%q} = %v after one rescue", requeueRescue, n)
	}
	b.take(ctx, msg)
	if got := recordOf(t, here, id); got != "running on b, attempt 2" {
		t.Fatalf("after b pulled the rescue: %s; want running on b, attempt 2", got)
	}
	// b now dies: it signals nothing more, and the message comes again
	// after ack_wait.
	again := nextWork(t, cons, 5*time.Second)
	if again == nil {
		t.Fatal("the rescue's message was not delivered again after b stopped signalling")
	}
	here.take(ctx, again)
	if got := recordOf(t, here, id); got != "running on here, attempt 3" {
		t.Fatalf("after b died holding the rescued job: %s; want running on here, attempt 3 (nothing else would run it)", got)
	}
	if !holds(here, id) {
		t.Fatal("the node that claimed the job again does not hold it")
	}
	if j, err := here.local.Store.Get(id); err != nil || j.State != job.Queued {
		t.Fatalf("the job in the local queue of the node that claimed it again: %+v, %v; want queued", j, err)
	}
}

// TestStaleRescueIsDropped: a rescue's message for a job that no longer
// needs it (its node gave it back to the queue with a message of its own,
// as runClaimed does when its local queue refuses it, or it ended) is
// acked without claiming the job, so that the job starts once.
func TestStaleRescueIsDropped(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Record)
	}{
		{"given back", func(r *Record) {
			r.State, r.Node, r.StartedAt, r.Attempts, r.Direct = job.Queued, "", time.Time{}, 0, false
		}},
		{"ended", func(r *Record) { r.State, r.FinishedAt = job.Done, time.Now().UTC() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			here, _, cons := testWorkNodes(t)
			ctx := context.Background()
			const id = "direct-2"
			rev := createDirect(t, here, id)
			here.started = time.Now().Add(-time.Minute)
			here.rescue(ctx)
			rec, _, err := here.get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			tc.edit(rec)
			newRev, err := here.put(ctx, rec, rev)
			if err != nil {
				t.Fatal(err)
			}
			msg := nextWork(t, cons, 5*time.Second)
			if msg == nil {
				t.Fatal("the rescue queued no work message")
			}
			here.take(ctx, msg)
			after, afterRev, err := here.get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if afterRev != newRev {
				t.Fatalf("after the stale rescue was pulled: %s on %q at revision %d; want %s at %d, untouched", after.State, after.Node, afterRev, rec.State, newRev)
			}
			if again := nextWork(t, cons, 2*here.cfg.AckWait); again != nil {
				t.Fatalf("the stale rescue was not acked: delivered again (%s)", again.Data())
			}
		})
	}
}
