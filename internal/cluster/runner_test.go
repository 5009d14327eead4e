package cluster

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kiln-gpu/kiln/internal/job"
)

// TestFinishKeepsAResultWhoseAnswerWasLost: a node's write of a finished
// job can be stored while its answer is lost (the NATS server that took
// it died); the node tries again, and that try's compare-and-set fails on
// the revision its own first write made. The result is the node's, not
// another node's: it is kept (answered from memory, outputs copied to the
// object store) instead of dropped as "taken over by another node", which
// left the job's outputs on this node alone.
func TestFinishKeepsAResultWhoseAnswerWasLost(t *testing.T) {
	here, _, _ := testWorkNodes(t)
	ctx := context.Background()
	here.local.OutputDir = t.TempDir()
	want := []byte("the bytes of a.png")
	if err := os.MkdirAll(filepath.Join(here.local.OutputDir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(here.local.OutputDir, "sub", "a.png"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	const id = "lost-answer"
	rec := Record{Job: job.Job{ID: id, Class: job.Batch, State: job.Running, Attempts: 1, Workflow: json.RawMessage(`{}`),
		CreatedAt: time.Now().UTC(), StartedAt: time.Now().UTC()}, Node: "here", Token: "t1", Direct: true}
	data, _ := json.Marshal(&rec)
	rev, err := here.jobs.Create(ctx, key(id), data)
	if err != nil {
		t.Fatal(err)
	}
	written := make(chan struct{})
	close(written) // the API has finished the files
	here.held[id] = &held{rev: rev, rec: rec}
	here.written[id] = written

	j := rec.Job
	j.State, j.FinishedAt, j.Worker = job.Done, time.Now(), "w0"
	j.Outputs = []job.Output{{Filename: "a.png", Subfolder: "sub", Type: "output"}}
	// The first try, as finish writes it, stored; its answer never came.
	first := rec
	first.State, first.Outputs, first.Worker, first.FinishedAt = j.State, j.Outputs, j.Worker, j.FinishedAt
	data, _ = json.Marshal(&first)
	if _, err := here.jobs.Update(ctx, key(id), data, rev); err != nil {
		t.Fatal(err)
	}

	if !here.finish(ctx, &j) {
		t.Fatal("finish asks to be tried again")
	}
	here.copies.Wait()
	if here.recentRecord(id) == nil {
		t.Fatal("the node dropped its own result as another node's")
	}
	obj, err := here.outputs.Get(ctx, outputName("output", "sub", "a.png"))
	if err != nil {
		t.Fatalf("the job's output was not copied to the object store: %v", err)
	}
	got, _ := io.ReadAll(obj)
	obj.Close()
	if string(got) != string(want) {
		t.Fatalf("the copy reads %q, want %q", got, want)
	}
	if got := recordOf(t, here, id); got != "done on here, attempt 1" {
		t.Fatalf("the registry has the job %s; want done on here, attempt 1", got)
	}
}

// TestInProgressSignalsDoNotWaitForTheHeartbeat: a held job's message is
// kept alive every AckWait/3 however long the node's heartbeat takes (a
// heartbeat's write waits up to a second and more for JetStream while a
// NATS server's death has it elect new leaders; here a slow Local.State
// stands for it). When the signals waited behind the heartbeat, JetStream
// gave the job to another node after AckWait while this one ran it.
func TestInProgressSignalsDoNotWaitForTheHeartbeat(t *testing.T) {
	here, _, cons := testWorkNodes(t)
	ctx, cancel := context.WithCancel(context.Background())
	var err error
	if here.nodes, err = here.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: nodesBucket, TTL: nodeTTL}); err != nil {
		t.Fatal(err)
	}
	const id = "held-1"
	msg := queueDelivered(t, here, cons, id)
	here.take(ctx, msg)
	if got := recordOf(t, here, id); got != "running on here, attempt 1" {
		t.Fatalf("after the take: %s; want running on here, attempt 1", got)
	}
	slow := here.cfg.AckWait + 500*time.Millisecond
	here.local.State = func() NodeState { time.Sleep(slow); return NodeState{} }
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){here.keepAlive, here.beat} {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	defer func() { cancel(); wg.Wait() }()
	if again := nextWork(t, cons, 3*here.cfg.AckWait); again != nil {
		t.Fatalf("the held job's message was delivered again while its node ran it (%s): its in-progress signals waited for the heartbeat", again.Data())
	}
}

// lostAnswerKV stores the first Update it is asked for and answers it
// with a timeout, as when the NATS server that took the write died before
// its answer came; onLost, if set, runs then.
type lostAnswerKV struct {
	jetstream.KeyValue
	lost   bool
	onLost func()
}

var _ jetstream.KeyValue = (*lostAnswerKV)(nil)

func (kv *lostAnswerKV) Update(ctx context.Context, k string, value []byte, rev uint64) (uint64, error) {
	n, err := kv.KeyValue.Update(ctx, k, value, rev)
	if err != nil || kv.lost {
		return n, err
	}
	kv.lost = true
	if kv.onLost != nil {
		kv.onLost()
	}
	return 0, nats.ErrTimeout
}

// TestClaimWhoseAnswerWasLostCountsOneAttempt: a node's claim of a
// delivered job can be stored while its answer is lost. The node used to
// give the message back; its next delivery found the job running on that
// node, which did not hold it, and claimed it again: two attempts counted
// for one start (a job may start cluster.max_attempts times), and the job
// waited for the redelivery meanwhile. The node now reads the record,
// recognises its own claim and runs the job.
func TestClaimWhoseAnswerWasLostCountsOneAttempt(t *testing.T) {
	here, _, cons := testWorkNodes(t)
	ctx := context.Background()
	const id = "lost-claim"
	msg := queueDelivered(t, here, cons, id)
	here.jobs = &lostAnswerKV{KeyValue: here.jobs}
	here.take(ctx, msg)
	if !holds(here, id) {
		t.Fatal("the node does not hold the job whose claim it stored")
	}
	if j, err := here.local.Store.Get(id); err != nil || j.State != job.Queued {
		t.Fatalf("the job in the node's local queue: %+v, %v; want queued", j, err)
	}
	// Nobody signals the message here: it comes again after ack_wait,
	// and the node that holds the job keeps it without a new claim.
	if again := nextWork(t, cons, 3*here.cfg.AckWait); again != nil {
		here.take(ctx, again)
	}
	if got := recordOf(t, here, id); got != "running on here, attempt 1" {
		t.Fatalf("the registry has the job %s; want running on here, attempt 1", got)
	}
}

// TestClaimInDoubtCountsOneAttempt: a claim whose answer is lost and whose
// read-back fails too leaves the node unsure whether it was stored; it
// gives the message back. Its next delivery finds the record running on
// this node since the instant that claim wrote: the node takes the claim
// up, attempt 1, instead of claiming again (attempt 2 for one start).
func TestClaimInDoubtCountsOneAttempt(t *testing.T) {
	here, _, cons := testWorkNodes(t)
	ctx := context.Background()
	const id = "doubt-claim"
	msg := queueDelivered(t, here, cons, id)
	// NATS goes away with the lost answer: the read-back fails too.
	away, cancel := context.WithCancel(ctx)
	here.jobs = &lostAnswerKV{KeyValue: here.jobs, onLost: cancel}
	here.take(away, msg)
	if holds(here, id) {
		t.Fatal("the node holds a job whose claim it could not confirm")
	}
	again := nextWork(t, cons, 5*time.Second)
	if again == nil {
		t.Fatal("the message given back was not delivered again")
	}
	here.take(ctx, again)
	if !holds(here, id) {
		t.Fatal("the node does not hold the job after its redelivery")
	}
	if got := recordOf(t, here, id); got != "running on here, attempt 1" {
		t.Fatalf("the registry has the job %s; want running on here, attempt 1 (one start)", got)
	}
}

// queueDelivered creates job id queued (token t1), publishes its work
// message and returns the message as the node's consumer delivers it.
func queueDelivered(t *testing.T, here *Cluster, cons jetstream.Consumer, id string) jetstream.Msg {
	t.Helper()
	createQueued(t, here, id, "t1")
	if err := here.publish(context.Background(), id, job.Batch, "", "t1", 0); err != nil {
		t.Fatal(err)
	}
	msg := nextWork(t, cons, 5*time.Second)
	if msg == nil {
		t.Fatal("no work message")
	}
	return msg
}

// holds reports whether the node holds job id (it claimed it and has not
// finished it).
func holds(c *Cluster, id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.held[id]
	return ok
}
