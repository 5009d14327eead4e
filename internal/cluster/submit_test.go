package cluster

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/job"
)

// TestResubmitQueuesAJobWhoseMessageIsGone: a client's retry of a job
// that is still queued gives the job a work message of its own, and runs it
// once. Its first message may be gone: a record whose create was stored
// late (its answer lost while a NATS server died) after a node had acked
// the message as one without a record. The retry used to publish that
// message again under the same message id, which JetStream drops as a
// duplicate for dedupWindow after the first, without an error: the job
// stayed queued for good. When the first message is still queued, both are
// delivered and the job still runs once: the retry's message names a new
// token, and the first one is acked unrun.
func TestResubmitQueuesAJobWhoseMessageIsGone(t *testing.T) {
	for _, tc := range []struct {
		name     string
		consumed bool // the first message was acked before the record was there
	}{
		{"first message consumed", true},
		{"first message still queued", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			here, b, cons := testWorkNodes(t)
			ctx := context.Background()
			const id = "prompt-1"
			if err := here.publish(ctx, id, job.Batch, "", "t1", 0); err != nil {
				t.Fatal(err)
			}
			if tc.consumed {
				msg := nextWork(t, cons, 5*time.Second)
				if msg == nil {
					t.Fatal("no work message")
				}
				if err := msg.DoubleAck(ctx); err != nil {
					t.Fatal(err)
				}
			}
			createQueued(t, here, id, "t1")

			got, existed, err := here.Submit(ctx, &job.Job{ID: id, Class: job.Batch, Workflow: json.RawMessage(`{}`)})
			if err != nil || !existed || got.State != job.Queued {
				t.Fatalf("the retry's submit: %+v, existed %v, %v; want the queued job, existed", got, existed, err)
			}
			if n := requeuedMetric(t, here, requeueResubmit); n != 1 {
				t.Fatalf("kiln_cluster_jobs_requeued_total{reason=%q} = %v after one retry of a queued job", requeueResubmit, n)
			}
			// Every message of the job (the retry's submit queues one of
			// its own too, for the record it did not create), to the two
			// nodes in turn. The messages are all in the stream: a fetch
			// that waits half a second for one more ends before a claimed
			// one comes again (ack_wait 1 s).
			nodes := []*Cluster{b, here}
			n := 0
			for ; ; n++ {
				msg := nextWork(t, cons, 500*time.Millisecond)
				if msg == nil {
					break
				}
				nodes[n%2].take(ctx, msg)
			}
			if n == 0 {
				t.Fatal("the retry queued no work message for a job that has none")
			}
			if got := recordOf(t, here, id); got != "running on b, attempt 1" && got != "running on here, attempt 1" {
				t.Fatalf("after its %d messages were delivered: %s; want running, attempt 1", n, got)
			}
		})
	}
}
