package dispatch

import (
	"slices"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
)

// The dispatcher's defaults are the native builds of the fallback
// built-ins (policy.Native). These tables pinned the hand-written policies
// they replaced; they hold for the built-ins, so a default that drifts
// from what the dispatcher was built on fails here.

func TestDefaultSchedulerIsPriorityFIFO(t *testing.T) {
	for _, tc := range []struct {
		name   string
		queued []decision.JobView
		want   string
		wantOK bool
	}{
		{name: "empty", wantOK: false},
		{name: "oldest batch", queued: []decision.JobView{{ID: "b2", Class: job.Batch, Seq: 2}, {ID: "b1", Class: job.Batch, Seq: 1}}, want: "b1", wantOK: true},
		{name: "interactive first", queued: []decision.JobView{{ID: "b1", Class: job.Batch, Seq: 1}, {ID: "i9", Class: job.Interactive, Seq: 9}}, want: "i9", wantOK: true},
		{name: "oldest interactive", queued: []decision.JobView{{ID: "i5", Class: job.Interactive, Seq: 5}, {ID: "i3", Class: job.Interactive, Seq: 3}}, want: "i3", wantOK: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := priorityBuiltin{}.Next(tc.queued, nil)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("Next = %q, %v; want %q, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestDefaultBalancerIsLeastLoaded(t *testing.T) {
	const gib = 1 << 30
	jobView := decision.JobView{ID: "j", Models: []string{"checkpoints/a"}, EstimatedVRAM: 7 * gib}
	for _, tc := range []struct {
		name    string
		workers []decision.WorkerView
		want    string
		wantOK  bool
	}{
		{name: "none idle", workers: []decision.WorkerView{{ID: "w0.0", Idle: false}}, wantOK: false},
		{name: "fewest busy on device", workers: []decision.WorkerView{
			{ID: "w0.0", Device: 0, Idle: true, DeviceBusy: 1, UsableVRAM: 20 * gib},
			{ID: "w1.0", Device: 1, Idle: true, DeviceBusy: 0, UsableVRAM: 20 * gib},
		}, want: "w1.0", wantOK: true},
		{name: "resident model breaks the tie", workers: []decision.WorkerView{
			{ID: "w0.0", Idle: true, UsableVRAM: 20 * gib, FreeVRAM: 20 * gib},
			{ID: "w1.0", Device: 1, Idle: true, UsableVRAM: 20 * gib, Resident: []decision.ResidentModel{{Model: "checkpoints/a", Bytes: 7 * gib}}},
		}, want: "w1.0", wantOK: true},
		{name: "more free VRAM next", workers: []decision.WorkerView{
			{ID: "w0.0", Idle: true, UsableVRAM: 20 * gib, FreeVRAM: 2 * gib},
			{ID: "w1.0", Device: 1, Idle: true, UsableVRAM: 20 * gib, FreeVRAM: 9 * gib},
		}, want: "w1.0", wantOK: true},
		{name: "degraded last", workers: []decision.WorkerView{
			{ID: "w0.0", Idle: true, UsableVRAM: 20 * gib, Degraded: true},
			{ID: "w1.0", Device: 1, Idle: true, DeviceBusy: 1, UsableVRAM: 20 * gib},
		}, want: "w1.0", wantOK: true},
		{name: "device too small", workers: []decision.WorkerView{{ID: "w0.0", Idle: true, UsableVRAM: 4 * gib}}, wantOK: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := leastLoadedBuiltin{}.Place(jobView, tc.workers)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("Place = %q, %v; want %q, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestDefaultEvictorIsLRU(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	entries := []decision.EntryView{
		{Model: "new", Bytes: 4, LastUse: t0.Add(3 * time.Second)},
		{Model: "old", Bytes: 4, LastUse: t0.Add(1 * time.Second)},
		{Model: "pinned-oldest", Bytes: 100, LastUse: t0, Pinned: true},
		{Model: "mid", Bytes: 4, LastUse: t0.Add(2 * time.Second)},
	}
	for _, tc := range []struct {
		name string
		need uint64
		want []int
	}{
		{name: "one is enough", need: 3, want: []int{1}},
		{name: "oldest first", need: 8, want: []int{1, 3}},
		{name: "all unpinned", need: 12, want: []int{1, 3, 0}},
		{name: "pinned never", need: 13, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := (lruBuiltin{}).Victims(tc.need, entries); !slices.Equal(got, tc.want) {
				t.Errorf("Victims(%d) = %v, want %v", tc.need, got, tc.want)
			}
		})
	}
}
