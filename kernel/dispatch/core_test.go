package dispatch

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/kernel/device"
	"github.com/kiln-gpu/kiln/kernel/job"
)

// fixedBatcher answers with ids whatever it is asked.
type fixedBatcher []string

func (f fixedBatcher) Batch(JobView, []JobView, []WorkerView) ([]string, time.Duration) { return f, 0 }

// fixedScheduler names one job whatever it is shown.
type fixedScheduler string

func (f fixedScheduler) Next([]JobView, []WorkerView) (string, bool) { return string(f), true }

func TestCoreChoose(t *testing.T) {
	idle := []WorkerView{{ID: "w0", Idle: true, UsableVRAM: 10 * gib, FreeVRAM: 10 * gib}}
	q := []JobView{
		{ID: "big", Class: job.Interactive, Seq: 1, EstimatedVRAM: 20 * gib, BatchKey: "x"},
		{ID: "a1", Class: job.Batch, Seq: 2, EstimatedVRAM: gib, BatchKey: "a"},
		{ID: "b1", Class: job.Batch, Seq: 3, EstimatedVRAM: gib, BatchKey: "b"},
		{ID: "a2", Class: job.Batch, Seq: 4, EstimatedVRAM: gib, BatchKey: "a"},
	}
	for _, tc := range []struct {
		name     string
		core     Core
		workers  []WorkerView
		want     []string
		ok       bool
		unfit    []string
		schedErr bool
		batchErr bool
	}{
		{name: "unfit job set aside, next one runs alone", core: Core{}, workers: idle, want: []string{"a1"}, ok: true, unfit: []string{"big"}},
		{name: "batcher's company kept", core: Core{Batcher: fixedBatcher{"a1", "a2"}}, workers: idle, want: []string{"a1", "a2"}, ok: true, unfit: []string{"big"}},
		{name: "batch across keys refused", core: Core{Batcher: fixedBatcher{"a1", "b1"}}, workers: idle, want: []string{"a1"}, ok: true, unfit: []string{"big"}, batchErr: true},
		{name: "batch with the lead not first refused", core: Core{Batcher: fixedBatcher{"a2", "a1"}}, workers: idle, want: []string{"a1"}, ok: true, unfit: []string{"big"}, batchErr: true},
		{name: "batch repeating a job refused", core: Core{Batcher: fixedBatcher{"a1", "a2", "a2"}}, workers: idle, want: []string{"a1"}, ok: true, unfit: []string{"big"}, batchErr: true},
		{name: "scheduler naming a stranger", core: Core{Scheduler: fixedScheduler("zz")}, workers: idle, ok: false, schedErr: true},
		{name: "no idle worker", core: Core{}, workers: []WorkerView{{ID: "w0", UsableVRAM: 10 * gib}}, ok: false, unfit: []string{"big"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dec, ok := tc.core.Choose(q, tc.workers)
			var unfit []string
			for _, u := range dec.Unfit {
				unfit = append(unfit, u.JobID)
			}
			if ok != tc.ok || !slices.Equal(dec.Jobs, tc.want) || !slices.Equal(unfit, tc.unfit) ||
				(dec.SchedulerFault != nil) != tc.schedErr || (dec.BatchFault != nil) != tc.batchErr {
				t.Errorf("Choose = %+v, %v; want jobs %v ok %v unfit %v scheduler fault %v batch fault %v",
					dec, ok, tc.want, tc.ok, tc.unfit, tc.schedErr, tc.batchErr)
			}
		})
	}
}

func TestCoreReserve(t *testing.T) {
	// 10 GiB at 20 % headroom: 8 GiB usable. Two unpinned 3 GiB models and
	// a pinned 2 GiB one are resident.
	led := device.NewLedger(10*gib, 0.2)
	type res struct {
		view EntryView
		r    *device.Reservation
	}
	resident := map[string]*res{}
	for _, m := range []struct {
		name   string
		bytes  uint64
		pinned bool
		used   int
	}{{"old", 3 * gib, false, 1}, {"new", 3 * gib, false, 2}, {"busy", 2 * gib, true, 0}} {
		r, err := led.Reserve("w0", m.name, m.bytes)
		if err != nil {
			t.Fatal(err)
		}
		resident[m.name] = &res{view: EntryView{Model: m.name, Worker: "w0", Bytes: m.bytes, Pinned: m.pinned,
			LastUse: time.Unix(int64(m.used), 0)}, r: r}
	}
	var listed []string
	room := Room{Device: 0, Ledger: led,
		List: func() ([]EntryView, uint64) {
			var es []EntryView
			var pinned uint64
			listed = listed[:0]
			for name, r := range resident {
				es = append(es, r.view)
				listed = append(listed, name)
				if r.view.Pinned {
					pinned += r.view.Bytes
				}
			}
			SortEntries(es, listed)
			return es, pinned
		},
		Evict: func(i int) {
			r := resident[listed[i]]
			led.Release(r.r)
			delete(resident, listed[i])
		}}
	c := Core{}
	// 4 GiB needs 4 − 0 free: LRU evicts "old" (3 GiB), then "new".
	if _, err := c.Reserve(room, "w0", "x", 4*gib); err != nil {
		t.Fatalf("reserve 4 GiB: %v", err)
	}
	if _, ok := resident["old"]; ok {
		t.Error("the least recently used model stayed")
	}
	// Only the pinned model and x are left: more waits for the pin.
	if _, err := c.Reserve(room, "w0", "y", 3*gib); !errors.Is(err, ErrVRAMHeld) {
		t.Errorf("reserve behind a pin: %v, want ErrVRAMHeld", err)
	}
	var noRoom *NoRoomError
	if _, err := c.Reserve(room, "w0", "z", 9*gib); !errors.As(err, &noRoom) {
		t.Errorf("reserve more than the device: %v, want *NoRoomError", err)
	}
}
