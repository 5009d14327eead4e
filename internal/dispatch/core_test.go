package dispatch

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/job"
)

// fixedBatcher answers with ids whatever it is asked.
type fixedBatcher []string

func (f fixedBatcher) Batch(decision.JobView, []decision.JobView, []decision.WorkerView) ([]string, time.Duration) {
	return f, 0
}

// fixedScheduler names one job whatever it is shown.
type fixedScheduler string

func (f fixedScheduler) Next([]decision.JobView, []decision.WorkerView) (string, bool) {
	return string(f), true
}

func TestCoreChoose(t *testing.T) {
	idle := []decision.WorkerView{{ID: "w0", Idle: true, UsableVRAM: 10 * gib, FreeVRAM: 10 * gib}}
	q := []decision.JobView{
		{ID: "big", Class: job.Interactive, Seq: 1, EstimatedVRAM: 20 * gib, BatchKey: "x"},
		{ID: "a1", Class: job.Batch, Seq: 2, EstimatedVRAM: gib, BatchKey: "a"},
		{ID: "b1", Class: job.Batch, Seq: 3, EstimatedVRAM: gib, BatchKey: "b"},
		{ID: "a2", Class: job.Batch, Seq: 4, EstimatedVRAM: gib, BatchKey: "a"},
	}
	for _, tc := range []struct {
		name     string
		core     Core
		workers  []decision.WorkerView
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
		{name: "no idle worker", core: Core{}, workers: []decision.WorkerView{{ID: "w0", UsableVRAM: 10 * gib}}, ok: false, unfit: []string{"big"}},
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
		view decision.EntryView
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
		resident[m.name] = &res{view: decision.EntryView{Model: m.name, Worker: "w0", Bytes: m.bytes, Pinned: m.pinned,
			LastUse: time.Unix(int64(m.used), 0)}, r: r}
	}
	var listed []string
	room := Room{Device: 0, Ledger: led,
		List: func() ([]decision.EntryView, uint64) {
			var es []decision.EntryView
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
	// 4 GiB needs 4 − 0 free: the lru built-in evicts "old" (3 GiB), then "new".
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

// recordingPrefetcher is the lru built-in whose policy also prefetches: it answers
// with answer and keeps what it was asked.
type recordingPrefetcher struct {
	lruBuiltin
	answer  []string
	free    uint64
	wanted  []string
	bytes   []uint64
	waiting []int
}

var (
	_ decision.Evictor    = (*recordingPrefetcher)(nil)
	_ decision.Prefetcher = (*recordingPrefetcher)(nil)
)

func (p *recordingPrefetcher) PrefetchIDs(free uint64, _ []decision.EntryView, wanted []string, bytes []uint64, waiting []int) []string {
	p.free, p.wanted, p.bytes, p.waiting = free, wanted, bytes, waiting
	return p.answer
}

func TestCoreLookahead(t *testing.T) {
	q := []decision.JobView{
		{ID: "j1", Models: []string{"a", "b"}, ModelBytes: []uint64{2 * gib, gib}},
		{ID: "j2", Models: []string{"b", "b"}, ModelBytes: []uint64{gib, gib}},
		{ID: "j3", Models: []string{"c"}, ModelBytes: []uint64{3 * gib}},
		{ID: "j4", Models: []string{"d"}, ModelBytes: []uint64{gib}},
	}
	bCached := func(m string) bool { return m == "b" }
	for _, tc := range []struct {
		name    string
		cached  func(string) bool
		answer  []string
		want    []string
		wanted  []string
		bytes   []uint64
		waiting []int
		free    uint64
	}{
		// The policy sees the first 3 jobs' models in queue order, how
		// many of those jobs wait for each (j2 needs b once) and the room.
		{name: "the policy's choice, in its order", answer: []string{"c", "a"}, want: []string{"c", "a"},
			wanted: []string{"a", "b", "c"}, bytes: []uint64{2 * gib, gib, 3 * gib}, waiting: []int{1, 2, 1}, free: 5 * gib},
		{name: "made-up and repeated names dropped", answer: []string{"b", "d", "zz", "b"}, want: []string{"b"},
			wanted: []string{"a", "b", "c"}, bytes: []uint64{2 * gib, gib, 3 * gib}, waiting: []int{1, 2, 1}, free: 5 * gib},
		{name: "nothing is nothing", answer: nil, want: nil,
			wanted: []string{"a", "b", "c"}, bytes: []uint64{2 * gib, gib, 3 * gib}, waiting: []int{1, 2, 1}, free: 5 * gib},
		// A cached model is not offered, its bytes come off the room, and
		// it leads the answer; the policy may not name it again.
		{name: "cached models kept and counted", cached: bCached, answer: []string{"c", "b"}, want: []string{"b", "c"},
			wanted: []string{"a", "c"}, bytes: []uint64{2 * gib, 3 * gib}, waiting: []int{1, 1}, free: 4 * gib},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &recordingPrefetcher{answer: tc.answer}
			got := Core{Evictor: p}.Lookahead(q, 3, PrefetchRoom{Free: 5 * gib, Cached: tc.cached})
			if !slices.Equal(got, tc.want) {
				t.Errorf("Lookahead = %v, want %v", got, tc.want)
			}
			if !slices.Equal(p.wanted, tc.wanted) || !slices.Equal(p.bytes, tc.bytes) || !slices.Equal(p.waiting, tc.waiting) || p.free != tc.free {
				t.Errorf("prefetcher asked free %d, wanted %v, bytes %v, waiting %v; want %d, %v, %v, %v",
					p.free, p.wanted, p.bytes, p.waiting, tc.free, tc.wanted, tc.bytes, tc.waiting)
			}
		})
	}
	t.Run("an evictor that does not prefetch gets every model", func(t *testing.T) {
		if got := (Core{Evictor: lruBuiltin{}}).Lookahead(q, 3, PrefetchRoom{Free: gib, Cached: bCached}); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Errorf("Lookahead = %v, want [a b c]", got)
		}
	})
	t.Run("every model cached asks nothing", func(t *testing.T) {
		p := &recordingPrefetcher{answer: []string{"a"}}
		if got := (Core{Evictor: p}).Lookahead(q[1:2], 1, PrefetchRoom{Free: gib, Cached: bCached}); !slices.Equal(got, []string{"b"}) || p.wanted != nil {
			t.Errorf("Lookahead = %v (policy asked for %v), want [b] without asking", got, p.wanted)
		}
	})
}

// fakePlanner is the priority built-in with a fixed plan; it keeps the running jobs
// it was shown.
type fakePlanner struct {
	priorityBuiltin
	next, preempt []string
	shown         []string
	asked         bool
}

var _ decision.Planner = (*fakePlanner)(nil)

func (p *fakePlanner) PlanIDs(_, running []decision.JobView, _ []decision.WorkerView) ([]string, []string) {
	p.asked = true
	for _, r := range running {
		p.shown = append(p.shown, r.ID)
	}
	return p.next, p.preempt
}

func TestCorePreempt(t *testing.T) {
	const minRun = 10 * time.Second
	queued := []decision.JobView{
		{ID: "i1", Class: job.Interactive, Seq: 2},
		{ID: "q1", Class: job.Batch, Seq: 3},
	}
	running := []decision.JobView{
		{ID: "b1", Class: job.Batch, Running: true, Worker: "w0", AtStepBoundary: true, RunTime: 20 * time.Second},
		{ID: "b2", Class: job.Batch, Running: true, Worker: "w1", AtStepBoundary: true, RunTime: 5 * time.Second},
		{ID: "i0", Class: job.Interactive, Running: true, Worker: "w2", AtStepBoundary: true, RunTime: time.Minute},
	}
	busy := []decision.WorkerView{{ID: "w0"}, {ID: "w1"}, {ID: "w2"}}
	oneIdle := []decision.WorkerView{{ID: "w0"}, {ID: "w1"}, {ID: "w2"}, {ID: "w3", Idle: true}}
	small := []decision.WorkerView{{ID: "w0", UsableVRAM: 10 * gib}, {ID: "w1", UsableVRAM: 10 * gib}, {ID: "w2", UsableVRAM: 10 * gib}}
	for _, tc := range []struct {
		name         string
		sched        decision.Scheduler
		queued       []decision.JobView
		workers      []decision.WorkerView
		want         Preemption
		fault, asked bool
		shown        []string
		running      []decision.JobView // default: running
	}{
		{name: "a batch job makes way for an interactive one", sched: &fakePlanner{next: []string{"i1"}, preempt: []string{"b1"}},
			want: Preemption{JobID: "b1", Worker: "w0", For: "i1"}, asked: true, shown: []string{"b1"}},
		{name: "the first allowed of several", sched: &fakePlanner{next: []string{"i1"}, preempt: []string{"b1", "b1"}},
			want: Preemption{JobID: "b1", Worker: "w0", For: "i1"}, asked: true, shown: []string{"b1"}},
		{name: "an idle worker is the answer", sched: &fakePlanner{next: []string{"i1"}, preempt: []string{"b1"}}, workers: oneIdle},
		{name: "a plan without preemptions", sched: &fakePlanner{next: []string{"i1"}}, asked: true, shown: []string{"b1"}},
		{name: "the native scheduler never preempts", sched: priorityBuiltin{}},
		{name: "no class above a running one waits", sched: &fakePlanner{next: []string{"q1"}, preempt: []string{"b1"}},
			queued: queued[1:]},
		{name: "never for a job of the same class", sched: &fakePlanner{next: []string{"q1"}, preempt: []string{"b1"}},
			asked: true, shown: []string{"b1"}},
		{name: "a job that ran less than the minimum is not shown", sched: &fakePlanner{next: []string{"i1"}, preempt: []string{"b2"}},
			fault: true, asked: true, shown: []string{"b1"}},
		{name: "a job of the same class is not shown", sched: &fakePlanner{next: []string{"i1"}, preempt: []string{"i0"}},
			fault: true, asked: true, shown: []string{"b1"}},
		{name: "a plan led by a stranger", sched: &fakePlanner{next: []string{"zz"}, preempt: []string{"b1"}},
			fault: true, asked: true, shown: []string{"b1"}},
		{name: "a preemption for nobody", sched: &fakePlanner{preempt: []string{"b1"}},
			fault: true, asked: true, shown: []string{"b1"}},
		{name: "never for a job no device can hold", sched: &fakePlanner{next: []string{"huge"}, preempt: []string{"b1"}},
			queued: []decision.JobView{{ID: "huge", Class: job.Interactive, EstimatedVRAM: 20 * gib}, queued[1]}, workers: small},
		{name: "a job in its fourth start runs to its end", sched: &fakePlanner{next: []string{"i1"}, preempt: []string{"b1"}},
			running: []decision.JobView{{ID: "b1", Class: job.Batch, Running: true, Worker: "w0", AtStepBoundary: true, RunTime: time.Minute,
				Attempts: PreemptMaxStarts + 1}}},
		{name: "a job in its third start may still make way", sched: &fakePlanner{next: []string{"i1"}, preempt: []string{"b1"}},
			running: []decision.JobView{{ID: "b1", Class: job.Batch, Running: true, Worker: "w0", AtStepBoundary: true, RunTime: time.Minute,
				Attempts: PreemptMaxStarts}},
			want: Preemption{JobID: "b1", Worker: "w0", For: "i1"}, asked: true, shown: []string{"b1"}},
		{name: "the plan's head does not fit", sched: &fakePlanner{next: []string{"huge"}, preempt: []string{"b1"}},
			queued: []decision.JobView{{ID: "huge", Class: job.Interactive, EstimatedVRAM: 20 * gib}, queued[0]}, workers: small,
			asked: true, shown: []string{"b1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, ws := queued, busy
			if tc.queued != nil {
				q = tc.queued
			}
			if tc.workers != nil {
				ws = tc.workers
			}
			run := running
			if tc.running != nil {
				run = tc.running
			}
			p, ok, fault := Core{Scheduler: tc.sched}.Preempt(q, run, ws, minRun)
			if p != tc.want || ok != (tc.want != Preemption{}) || (fault != nil) != tc.fault {
				t.Errorf("Preempt = %+v, %v, %v; want %+v, fault %v", p, ok, fault, tc.want, tc.fault)
			}
			if fp, isFake := tc.sched.(*fakePlanner); isFake && (fp.asked != tc.asked || !slices.Equal(fp.shown, tc.shown)) {
				t.Errorf("planner asked %v with running %v; want asked %v with %v", fp.asked, fp.shown, tc.asked, tc.shown)
			}
		})
	}
}

// stallingEvictor answers with a fixed list whatever it is asked.
type stallingEvictor struct{ victims []int }

func (s stallingEvictor) Victims(uint64, []decision.EntryView) []int { return s.victims }

// TestCoreReserveNeverWaitsOnAPolicy checks the floor under every evictor:
// an answer that is empty, too small or invalid while evicting unpinned
// models could make the room is replaced by LRU's, so the load proceeds
// instead of waiting for an unpin that may never come.
func TestCoreReserveNeverWaitsOnAPolicy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		victims []int
	}{
		{"no victims", nil},
		{"too few victims", []int{0}},
		{"a pinned victim", []int{2}},
		{"an unknown victim", []int{7}},
		{"a repeated victim", []int{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// 10 GiB at 20 % headroom: 8 GiB usable, all of it resident:
			// a (1 GiB) and b (5 GiB) unpinned, c (2 GiB) pinned.
			led := device.NewLedger(10*gib, 0.2)
			entries := []decision.EntryView{
				{Model: "a", Worker: "w0", Bytes: 1 * gib, LastUse: time.Unix(1, 0)},
				{Model: "b", Worker: "w0", Bytes: 5 * gib, LastUse: time.Unix(2, 0)},
				{Model: "c", Worker: "w0", Bytes: 2 * gib, Pinned: true},
			}
			held := map[string]*device.Reservation{}
			for _, e := range entries {
				r, err := led.Reserve("w0", e.Model, e.Bytes)
				if err != nil {
					t.Fatal(err)
				}
				held[e.Model] = r
			}
			var listed []string // the last List's entries, as Room.Evict indexes them
			room := Room{Device: 0, Ledger: led,
				List: func() ([]decision.EntryView, uint64) {
					var live []decision.EntryView
					listed = listed[:0]
					for _, e := range entries {
						if held[e.Model] != nil {
							live = append(live, e)
							listed = append(listed, e.Model)
						}
					}
					return live, 2 * gib
				},
				Evict: func(i int) {
					led.Release(held[listed[i]])
					held[listed[i]] = nil
				}}
			c := Core{Evictor: stallingEvictor{victims: tc.victims}}
			if _, err := c.Reserve(room, "w0", "x", 4*gib); err != nil {
				t.Fatalf("reserve 4 GiB with 6 GiB unpinned: %v; want the native policy to make room", err)
			}
			if held["c"] == nil {
				t.Error("the pinned model was evicted")
			}
		})
	}
}
