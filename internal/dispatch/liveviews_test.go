package dispatch

import (
	"strings"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
)

// TestLiveWorkerAndEntryViewsTellTheTruth runs real jobs on a live
// dispatcher (real store, real worker processes) and checks the worker and
// cache-entry views the policies get against what happened: a worker that
// runs a job is busy and counted on its device, one that loaded a model
// lists it with its bytes, the ledger's free and usable memory and the
// device's bandwidth are there, and an entry's hits, last use, insertion
// and load time follow its uses. A field the dispatcher zeroed or filled
// with a constant fails.
func TestLiveWorkerAndEntryViewsTellTheTruth(t *testing.T) {
	const mem = 16 * gib
	a := "checkpoints/a.safetensors"
	r := newRig(t, mem, 2, map[string]int64{a: 2 * gib})
	// Both workers up first: a worker still starting is rightly not idle.
	ready := time.Now().Add(30 * time.Second)
	for r.pool.Ready() < 2 {
		if time.Now().After(ready) {
			t.Fatalf("%d of 2 workers ready", r.pool.Ready())
		}
		time.Sleep(5 * time.Millisecond)
	}
	slow := r.submit(job.Batch, `{"slow": true}`, a)
	r.waitState(slow, job.Running)
	var busyID string
	deadline := time.Now().Add(30 * time.Second)
	for busyID == "" {
		if p, ok := r.d.Progress(slow); ok && p.Phase == "running" {
			for _, w := range r.d.workerViews() {
				if !w.Idle {
					busyID = w.ID
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow job never showed a busy worker")
		}
		time.Sleep(5 * time.Millisecond)
	}
	busy := r.d.workerViews()
	if len(busy) != 2 {
		t.Fatalf("%d worker views, want 2", len(busy))
	}
	for _, w := range busy {
		if w.DeviceBusy != 1 {
			t.Errorf("worker %s: DeviceBusy %d while one job runs on its device, want 1", w.ID, w.DeviceBusy)
		}
		if d := int64(w.UsableVRAM) - mem/5*4; d < -1024 || d > 1024 {
			t.Errorf("worker %s: UsableVRAM %d, want %d (16 GiB less 20%% headroom)", w.ID, w.UsableVRAM, mem/5*4)
		}
		if w.FreeVRAM >= w.UsableVRAM {
			t.Errorf("worker %s: FreeVRAM %d not below usable %d while a 2 GiB model is resident", w.ID, w.FreeVRAM, w.UsableVRAM)
		}
		if w.H2DBytesPerS != 25e9 {
			t.Errorf("worker %s: H2DBytesPerS %d, want the device's 25e9", w.ID, w.H2DBytesPerS)
		}
		if w.ID == busyID {
			if w.Idle {
				t.Errorf("worker %s runs the slow job but is idle", w.ID)
			}
			if len(w.Resident) != 1 || w.Resident[0].Model != a || w.Resident[0].Bytes <= 0 {
				t.Errorf("worker %s: Resident %+v, want %s with its bytes", w.ID, w.Resident, a)
			}
		} else if !w.Idle || len(w.Resident) != 0 {
			t.Errorf("the other worker %s: idle %v, resident %+v; want idle and empty", w.ID, w.Idle, w.Resident)
		}
	}
	entries, _, pinned := r.d.deviceEntries(0)
	if len(entries) != 1 || !entries[0].Pinned || pinned == 0 || entries[0].Worker != busyID || entries[0].Bytes == 0 {
		t.Fatalf("entries while the job runs: %+v (pinned %d); want %s pinned on %s with its bytes", entries, pinned, a, busyID)
	}
	first := entries[0]
	if first.Inserted.IsZero() || first.LastUse.IsZero() || first.LoadCost <= 0 {
		t.Errorf("entry %+v: Inserted, LastUse and LoadCost must be set after a load", first)
	}
	// One job asked for the model, seconds ago: a count of 1 that has
	// barely decayed (half-life 30 minutes).
	if first.RecentDemand < 0.99 || first.RecentDemand > 1 {
		t.Errorf("RecentDemand %v after one job, want about 1", first.RecentDemand)
	}
	r.waitState(slow, job.Done)
	// Another job on the same model: on the worker that holds it, a hit, a
	// later use and the same insertion; on the other, a new entry.
	again := r.submit(job.Batch, `{}`, a)
	ran := r.waitState(again, job.Done).Worker
	found := false
	for _, e := range mustEntries(t, r) {
		if e.Worker != ran || e.Model != a {
			continue
		}
		found = true
		if e.Pinned {
			t.Errorf("entry %+v still pinned with no job running", e)
		}
		if e.RecentDemand < 1.98 || e.RecentDemand > 2 {
			t.Errorf("RecentDemand %v after two jobs, want about 2, whichever worker holds the copy", e.RecentDemand)
		}
		if !e.LastUse.After(first.LastUse) {
			t.Errorf("LastUse %v not after the first use %v", e.LastUse, first.LastUse)
		}
		if ran == first.Worker {
			if !e.Inserted.Equal(first.Inserted) {
				t.Errorf("Inserted moved from %v to %v on a hit", first.Inserted, e.Inserted)
			}
			if e.Hits <= first.Hits {
				t.Errorf("hits %d after a second job on the same worker, %d before", e.Hits, first.Hits)
			}
		} else if !e.Inserted.After(first.Inserted) {
			t.Errorf("a new copy on %s inserted at %v, not after the first at %v", ran, e.Inserted, first.Inserted)
		}
	}
	if !found {
		t.Errorf("no entry for %s on %s, which ran the second job", a, ran)
	}
}

func mustEntries(t *testing.T, r *rig) []decision.EntryView {
	t.Helper()
	entries, _, _ := r.d.deviceEntries(0)
	return entries
}

// TestVRAMWaitHasADeadline fills a device's memory with a job that holds
// its model while it runs and starts a second job that needs another model
// that cannot fit beside it on the device's other worker: the second job
// waits for the pinned memory at most dispatch.vram_wait, then its attempt
// goes back to the queue (it is not stuck in "loading models"), and it
// runs once the memory comes back.
func TestVRAMWaitHasADeadline(t *testing.T) {
	a, b := "checkpoints/a.safetensors", "checkpoints/b.safetensors"
	r := newRigWith(t, rigConfig{deviceMemory: 10 * gib, perDevice: 2, models: map[string]int64{a: 6 * gib, b: 6 * gib},
		policies: Options{VRAMWait: 200 * time.Millisecond}})
	holder := r.submit(job.Batch, `{"slow": true}`, a)
	r.waitState(holder, job.Running)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if p, ok := r.d.Progress(holder); ok && p.Phase == "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the holder never started running")
		}
		time.Sleep(5 * time.Millisecond)
	}
	waiter := r.submit(job.Batch, `{}`, b)
	// The waiter's first attempt gives up on the held VRAM and is
	// requeued with the reason; it does not wait for the holder's 3 s.
	requeued := false
	for ev := range r.events {
		if ev.Type == job.EventRequeued && ev.JobID == waiter {
			if !strings.Contains(ev.Error, "gave up waiting for vram") {
				t.Fatalf("requeued with %q, want the VRAM wait's deadline", ev.Error)
			}
			requeued = true
			break
		}
		if ev.JobID == holder && ev.Type == job.EventFinished {
			break
		}
	}
	if !requeued {
		t.Fatal("the waiting job was not given back to the queue before the holder finished")
	}
	// Then it ends: done once the holder let go, or failed after
	// queue.max_attempts lost attempts, with the reason — never stuck.
	deadline = time.Now().Add(30 * time.Second)
	for {
		j, err := r.store.Get(waiter)
		if err != nil {
			t.Fatal(err)
		}
		if j.State == job.Done {
			break
		}
		if j.State == job.Failed {
			if !strings.Contains(j.Error, "gave up waiting for vram") {
				t.Fatalf("waiter failed with %q", j.Error)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiter still %s after 30 s", j.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
