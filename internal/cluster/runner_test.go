package cluster

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

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
