package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-gpu/kiln/internal/job"
)

// TestAuditRequeuesAQueuedJobWithoutAMessage: the audit of queued jobs
// gives a queued job that has no work message in the stream a new token and
// a message naming it, through which a node claims and runs it once; a job
// whose message is still in the stream keeps its token and its message. A
// message that names another token than the record's is acked unrun
// (take), so it counts as none. Without the audit the job with no message
// stayed queued for good: a record stored late after a node had acked its
// message as one without a record, or a give-back whose publish failed.
func TestAuditRequeuesAQueuedJobWithoutAMessage(t *testing.T) {
	for _, tc := range []struct {
		name         string
		messageToken string // the token of the job's message in the stream; "" for none
		wantRequeued bool
	}{
		{name: "no message", wantRequeued: true},
		{name: "a message of another token", messageToken: "t0", wantRequeued: true},
		{name: "its message pending", messageToken: "t1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			here, _, cons := testWorkNodes(t)
			ctx := context.Background()
			const id = "prompt-1"
			if tc.messageToken != "" {
				if err := here.publish(ctx, id, job.Batch, "", tc.messageToken, 0); err != nil {
					t.Fatal(err)
				}
			}
			here.remember(createQueued(t, here, id, "t1"))

			n, err := here.requeueMessageless(ctx, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := n == 1; got != tc.wantRequeued {
				t.Fatalf("the audit queued %d jobs again; want requeued %v", n, tc.wantRequeued)
			}
			if got := requeuedMetric(t, here, requeueNoMessage); got != float64(n) {
				t.Fatalf("kiln_cluster_jobs_requeued_total{reason=%q} = %v after %d requeues", requeueNoMessage, got, n)
			}
			after, _, err := here.get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if changed := after.Token != "t1"; changed != tc.wantRequeued || after.State != job.Queued {
				t.Fatalf("after the audit: %s, token %q; want queued, token changed %v", after.State, after.Token, tc.wantRequeued)
			}
			// Every message of the job, to this node: the job runs once.
			var tokens []string
			for {
				msg := nextWork(t, cons, 500*time.Millisecond)
				if msg == nil {
					break
				}
				_, token, _ := parseWorkMessage(msg.Data())
				tokens = append(tokens, token)
				here.take(ctx, msg)
			}
			if !hasMessage(tokens, after.Token) {
				t.Fatalf("messages of tokens %q in the stream; want one of the record's %q", tokens, after.Token)
			}
			if got := recordOf(t, here, id); got != "running on here, attempt 1" {
				t.Fatalf("after its messages %q were delivered: %s; want running on here, attempt 1", tokens, got)
			}
		})
	}
}

// TestAuditLeavesAYoungRecordAlone: a queued record written less than the
// audit's age ago may have its message on the way (a submit publishes it
// concurrently with the record, a give-back after it): it is not queued
// again.
func TestAuditLeavesAYoungRecordAlone(t *testing.T) {
	here, _, _ := testWorkNodes(t)
	ctx := context.Background()
	const id = "prompt-1"
	here.remember(createQueued(t, here, id, "t1"))
	if n, err := here.requeueMessageless(ctx, auditAge); err != nil || n != 0 {
		t.Fatalf("the audit queued %d jobs again, %v; want none", n, err)
	}
	if after, _, err := here.get(ctx, id); err != nil || after.Token != "t1" {
		t.Fatalf("after the audit: %+v, %v; want token t1", after, err)
	}
}

// TestPendingWorkReadsEveryMessageLeft: the audit's read of the stream
// finds each message still in it, past the gaps that acked messages leave
// in a work queue's sequences, and consumes none.
func TestPendingWorkReadsEveryMessageLeft(t *testing.T) {
	here, _, cons := testWorkNodes(t)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		if err := here.publish(ctx, id, job.Batch, "", "t-"+id, 0); err != nil {
			t.Fatal(err)
		}
	}
	first, second := nextWork(t, cons, 5*time.Second), nextWork(t, cons, 5*time.Second)
	if first == nil || second == nil {
		t.Fatal("no work message")
	}
	if err := second.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.Nak(); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second read finds what the first left
		got, err := here.pendingWork(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || !hasMessage(got["a"], "t-a") || !hasMessage(got["c"], "t-c") {
			t.Fatalf("pendingWork = %v; want a (t-a) and c (t-c)", got)
		}
	}
}

// requeuedMetric reads kiln_cluster_jobs_requeued_total{reason} from c's
// collector, as Prometheus would.
func requeuedMetric(t *testing.T, c *Cluster, reason string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if mf.GetName() == "kiln_cluster_jobs_requeued_total" && l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no kiln_cluster_jobs_requeued_total{reason=%q}", reason)
	return 0
}
