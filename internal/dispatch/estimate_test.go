package dispatch

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// recordingBalancer is the least-loaded built-in that keeps the views of its last call.
type recordingBalancer struct {
	leastLoadedBuiltin
	mu      sync.Mutex
	job     decision.JobView
	workers []decision.WorkerView
}

func (b *recordingBalancer) Place(j decision.JobView, ws []decision.WorkerView) (string, bool) {
	b.mu.Lock()
	b.job, b.workers = j, slices.Clone(ws)
	b.mu.Unlock()
	return b.leastLoadedBuiltin.Place(j, ws)
}

// sdxlGraph is a ComfyUI graph sampling 35 steps at 1024×768, batch 2,
// on an SDXL checkpoint: what the cost model prices a job by.
const sdxlGraph = `{"4":{"class_type":"CheckpointLoaderSimple","inputs":{"ckpt_name":"sd_xl_base_1.0.safetensors"}},` +
	`"5":{"class_type":"EmptyLatentImage","inputs":{"width":1024,"height":768,"batch_size":2}},` +
	`"3":{"class_type":"KSampler","inputs":{"steps":35,"model":["4",0],"latent_image":["5",0]}},` +
	`"9":{"class_type":"SaveImage","inputs":{"images":["3",0]}}}`

// TestViewsCarryCostEstimates checks what the live dispatcher tells edf and
// affinity: a queued job's estimated run time from the cost model and its
// graph (which the queue's snapshots do not carry), and a busy worker's
// expected wait, its running job's estimate less the time it has run (on
// the dispatcher's clock).
func TestViewsCarryCostEstimates(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	bal := &recordingBalancer{}
	const model = "checkpoints/sd_xl_base_1.0.safetensors"
	r := newRigWith(t, rigConfig{deviceMemory: 24 * gib, perDevice: 2, models: map[string]int64{model: 2 * gib},
		policies: Options{Balancer: bal, Clock: clk}})
	gate := filepath.Join(t.TempDir(), "gate")
	first := r.submit(job.Batch, `{"gate":"`+gate+`"}`, model)
	// Its first progress report means the dispatcher holds it as running,
	// with its start time taken: only then does the clock move.
	r.waitRunning(first)
	clk.Advance(time.Second)

	// The first job's graph names no sampler: an SDXL job is priced at the
	// default 20 steps at 1024²; the second's at what its graph says.
	c := cost.Default()
	firstEst := c.JobEstimate(cost.TextToImage("sdxl", 20, 1024, 1024, 1), cost.Device{})
	secondEst := c.JobEstimate(cost.TextToImage("sdxl", 35, 1024, 768, 2), cost.Device{})
	if firstEst <= time.Second || firstEst == secondEst {
		t.Fatalf("estimates %v and %v do not tell the cases apart", firstEst, secondEst)
	}
	second := r.submit(job.Batch, sdxlGraph, model)
	r.waitState(second, job.Done)
	bal.mu.Lock()
	defer bal.mu.Unlock()
	if bal.job.ID != second || bal.job.EstimatedCost != secondEst {
		t.Errorf("placed %s with estimate %v; want %s, %v", bal.job.ID, bal.job.EstimatedCost, second, secondEst)
	}
	var busy, idle int
	for _, w := range bal.workers {
		switch {
		case !w.Idle && w.EstimatedWait == firstEst-time.Second:
			busy++
		case w.Idle && w.EstimatedWait == 0:
			idle++
		default:
			t.Errorf("worker %s: idle %v, wait %v; want a busy worker waiting %v or an idle one", w.ID, w.Idle, w.EstimatedWait, firstEst-time.Second)
		}
	}
	if busy != 1 || idle != 1 {
		t.Errorf("%d busy and %d idle workers, want 1 and 1", busy, idle)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r.waitState(first, job.Done)
}

// TestEstimateReadsTheGraph prices a job from its graph's sampler: steps
// and size as the graph says (the Facts the store hands over with the
// job), not the defaults.
func TestEstimateReadsTheGraph(t *testing.T) {
	const model = "checkpoints/sd_xl_base_1.0.safetensors"
	r := newRig(t, 24*gib, 1, map[string]int64{model: 2 * gib})
	g, err := workflow.Parse([]byte(sdxlGraph), workflow.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	j := &job.Job{ID: "j1", Workflow: []byte(sdxlGraph), Models: []string{model}, Facts: g.Facts()}
	got := r.d.estimates.of(r.d, j)
	want := cost.Default().JobEstimate(cost.TextToImage("sdxl", 35, 1024, 768, 2), cost.Device{})
	if got != want {
		t.Errorf("estimate %v, want %v (35 steps at 1024×768, batch 2)", got, want)
	}
}

// TestBusyWaitCountsBatchFollowers: a worker running a batch is expected
// to be free once its running job and the followers claimed for it have
// run for their estimates.
func TestBusyWaitCountsBatchFollowers(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	bal := &recordingBalancer{}
	a, b := "checkpoints/sd_xl_base_1.0.safetensors", "checkpoints/sd_xl_refiner_1.0.safetensors"
	gate := filepath.Join(t.TempDir(), "gate")
	var lead string
	r := newRigWith(t, rigConfig{deviceMemory: 24 * gib, perDevice: 2, models: map[string]int64{a: 2 * gib, b: 2 * gib},
		policies: Options{Balancer: bal, Batcher: sameKey{}, Clock: clk},
		before: func(r *rig) {
			lead = r.submit(job.Batch, `{"gate":"`+gate+`"}`, a)
			r.submit(job.Batch, `{}`, a) // its follower
		}})
	r.waitRunning(lead)
	clk.Advance(time.Second)
	est := cost.Default().JobEstimate(cost.TextToImage("sdxl", 20, 1024, 1024, 1), cost.Device{})
	other := r.submit(job.Batch, `{}`, b)
	r.waitState(other, job.Done)
	bal.mu.Lock()
	var waits []time.Duration
	for _, w := range bal.workers {
		if !w.Idle {
			waits = append(waits, w.EstimatedWait)
		}
	}
	bal.mu.Unlock()
	if want := 2*est - time.Second; len(waits) != 1 || waits[0] != want {
		t.Errorf("busy workers' waits %v, want one of %v (the lead's rest and its follower)", waits, want)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r.waitState(lead, job.Done)
}
