package dispatch

import (
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
)

// sameKey batches every queued job that shares the lead's key, oldest
// first: the simplest batching policy, native so that this package's tests
// need not import internal/policy.
type sameKey struct{}

var _ decision.Batcher = sameKey{}

func (sameKey) Batch(lead decision.JobView, queued []decision.JobView, _ []decision.WorkerView) ([]string, time.Duration) {
	ids := []string{lead.ID}
	for _, j := range queued {
		if j.ID != lead.ID && j.BatchKey == lead.BatchKey {
			ids = append(ids, j.ID)
		}
	}
	return ids, 0
}

func TestBatchFollowersRunOnTheLeadsWorker(t *testing.T) {
	a, b := "checkpoints/a.safetensors", "checkpoints/b.safetensors"
	var batch []string
	var other string
	r := newRigWith(t, rigConfig{deviceMemory: 24 * gib, perDevice: 2, models: map[string]int64{a: 2 * gib, b: 2 * gib},
		policies: Options{Batcher: sameKey{}},
		before: func(r *rig) {
			// Without batching the second job of a would take the idle
			// second worker in the first round.
			for range 3 {
				batch = append(batch, r.submit(job.Batch, `{}`, a))
			}
			other = r.submit(job.Batch, `{}`, b)
		}})
	workerOf := map[string]string{}
	var order []string
	timeout := time.After(30 * time.Second)
	for finished := 0; finished < 4; {
		select {
		case e := <-r.events:
			switch e.Type {
			case job.EventStarted:
				workerOf[e.JobID] = e.Worker
				order = append(order, e.JobID)
			case job.EventFinished:
				if e.State != job.Done {
					t.Fatalf("job %s ended %s: %s", e.JobID, e.State, e.Error)
				}
				finished++
			}
		case <-timeout:
			t.Fatalf("started %v", order)
		}
	}
	for _, id := range batch[1:] {
		if workerOf[id] != workerOf[batch[0]] {
			t.Errorf("follower %s ran on %s, the lead on %s", id, workerOf[id], workerOf[batch[0]])
		}
	}
	if workerOf[other] == workerOf[batch[0]] {
		t.Errorf("the job of another model waited for the batch's worker (%s) instead of taking the idle one", workerOf[other])
	}
	// The batch's worker loaded a once: the followers found it warm.
	loads := 0
	for _, e := range r.set.Ledger(0).Snapshot() {
		if e.Key == a {
			loads++
		}
	}
	if loads != 1 {
		t.Errorf("%d reservations of %s, want 1", loads, a)
	}
}
