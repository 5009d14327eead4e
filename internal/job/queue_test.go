package job

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSubmitAssignsFields(t *testing.T) {
	s, _, clk := openTest(t, Config{})
	clk.Advance(time.Minute)
	var prevSeq uint64
	var prevID string
	for i := range 5 {
		j := newJob(Batch)
		j.Attempts, j.Worker, j.Error, j.State = 9, "w", "x", Done // reset by Submit
		if err := s.Submit(context.Background(), j); err != nil {
			t.Fatalf("Submit: %v", err)
		}
		if len(j.ID) != 32 || j.ID <= prevID {
			t.Errorf("job %d: ID %q; want 32 hex chars sorting after %q", i, j.ID, prevID)
		}
		if j.Seq <= prevSeq {
			t.Errorf("job %d: Seq %d; want > %d", i, j.Seq, prevSeq)
		}
		if j.State != Queued || j.Attempts != 0 || j.Worker != "" || j.Error != "" || !j.CreatedAt.Equal(t0.Add(time.Minute)) {
			t.Errorf("job %d: %+v; want queued, reset, created at fake now", i, j)
		}
		got := mustGet(t, s, j.ID)
		if got.Seq != j.Seq || got.State != Queued || !got.CreatedAt.Equal(j.CreatedAt) || !bytes.Contains(got.Workflow, []byte(`"1"`)) {
			t.Errorf("Get(%s) = %+v; want the submitted job", j.ID, got)
		}
		prevSeq, prevID = j.Seq, j.ID
	}
	if got := strings.HasPrefix(prevID, fmt.Sprintf("%012x", t0.Add(time.Minute).UnixMilli())); !got {
		t.Errorf("ID %s does not start with the time in ms", prevID)
	}
}

func TestSubmitRefused(t *testing.T) {
	s, _, _ := openTest(t, Config{})
	existing := mustSubmit(t, s, Interactive)
	for _, tc := range []struct {
		name string
		job  *Job
		want error
	}{
		{name: "empty class", job: &Job{}, want: ErrBadClass},
		{name: "unknown class", job: &Job{Class: "urgent"}, want: ErrBadClass},
		{name: "id with slash", job: &Job{Class: Batch, ID: "a/b"}, want: ErrBadID},
		{name: "id too long", job: &Job{Class: Batch, ID: strings.Repeat("a", 129)}, want: ErrBadID},
		{name: "duplicate id", job: &Job{Class: Batch, ID: existing.ID}, want: ErrDuplicate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := *tc.job
			err := s.Submit(context.Background(), tc.job)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Submit = %v; want %v", err, tc.want)
			}
			if tc.job.ID != before.ID || tc.job.Seq != 0 || tc.job.State != before.State {
				t.Errorf("refused Submit changed the job: %+v", tc.job)
			}
		})
	}
	if c := s.Counts(); c[Queued] != 1 {
		t.Errorf("Counts()[queued] = %d; want 1", c[Queued])
	}
	if j := mustGet(t, s, existing.ID); j.Class != Interactive {
		t.Errorf("duplicate overwrote the job: %+v", j)
	}
}

func TestSubmitCallerID(t *testing.T) {
	s, _, _ := openTest(t, Config{})
	j := &Job{Class: Batch, ID: "3f2a-9c:client_1.x"}
	if err := s.Submit(context.Background(), j); err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if j.ID != "3f2a-9c:client_1.x" {
		t.Errorf("ID = %q; want the caller's", j.ID)
	}
}

// TestTransitions walks every (state, action) pair of the state machine.
func TestTransitions(t *testing.T) {
	type action func(s *Store, id string) (State, error) // the state the job should then be in
	actions := map[string]action{
		"start": func(s *Store, id string) (State, error) {
			j, err := s.Start(id, "w1")
			return stateOf(j), err
		},
		"finish": func(s *Store, id string) (State, error) {
			return Done, errOf(s.Finish(id, []Output{{Node: "9", Filename: "a.png", Type: "output"}}))
		},
		"fail": func(s *Store, id string) (State, error) { return Failed, errOf(s.Fail(id, "oom")) },
		"requeue": func(s *Store, id string) (State, error) {
			j, err := s.Requeue(id, "worker died")
			return stateOf(j), err
		},
		"cancel": func(s *Store, id string) (State, error) {
			j, err := s.Cancel(id)
			return stateOf(j), err
		},
		"delete": func(s *Store, id string) (State, error) { return "", s.Delete(id) },
	}
	// setup brings a fresh job to a state.
	setup := map[State]func(t *testing.T, s *Store) string{
		Queued: func(t *testing.T, s *Store) string { return mustSubmit(t, s, Interactive).ID },
		Running: func(t *testing.T, s *Store) string {
			id := mustSubmit(t, s, Interactive).ID
			must(t)(s.Start(id, "w0"))
			return id
		},
		Done: func(t *testing.T, s *Store) string {
			id := mustSubmit(t, s, Interactive).ID
			must(t)(s.Start(id, "w0"))
			mustNil(t, errOf(s.Finish(id, nil)))
			return id
		},
		Failed: func(t *testing.T, s *Store) string {
			id := mustSubmit(t, s, Interactive).ID
			mustNil(t, errOf(s.Fail(id, "bad graph")))
			return id
		},
		Cancelled: func(t *testing.T, s *Store) string {
			id := mustSubmit(t, s, Interactive).ID
			must(t)(s.Cancel(id))
			return id
		},
	}
	// want[state][action] is the resulting state; absent means ErrBadTransition.
	// "" means the job is gone (deleted).
	want := map[State]map[string]State{
		Queued:    {"start": Running, "fail": Failed, "cancel": Cancelled},
		Running:   {"finish": Done, "fail": Failed, "requeue": Queued, "cancel": Cancelled},
		Done:      {"delete": ""},
		Failed:    {"delete": ""},
		Cancelled: {"delete": ""},
	}
	for _, from := range []State{Queued, Running, Done, Failed, Cancelled} {
		for _, name := range []string{"start", "finish", "fail", "requeue", "cancel", "delete"} {
			t.Run(fmt.Sprintf("%s/%s", from, name), func(t *testing.T) {
				s, _, _ := openTest(t, Config{})
				id := setup[from](t, s)
				before := mustGet(t, s, id)
				wantState, allowed := want[from][name]
				got, err := actions[name](s, id)
				if !allowed {
					if !errors.Is(err, ErrBadTransition) {
						t.Fatalf("%s from %s = %v; want ErrBadTransition", name, from, err)
					}
					if after := mustGet(t, s, id); after.State != from || after.Attempts != before.Attempts {
						t.Errorf("refused %s changed the job: %+v", name, after)
					}
					checkIndex(t, s)
					return
				}
				if err != nil {
					t.Fatalf("%s from %s: %v", name, from, err)
				}
				if wantState == "" {
					if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
						t.Errorf("Get after delete = %v; want ErrNotFound", err)
					}
					checkIndex(t, s)
					return
				}
				if got != wantState {
					t.Errorf("returned state %s; want %s", got, wantState)
				}
				after := mustGet(t, s, id)
				if after.State != wantState {
					t.Errorf("stored state %s; want %s", after.State, wantState)
				}
				checkTransitionFields(t, name, before, after)
				checkIndex(t, s)
			})
		}
	}
	t.Run("unknown id", func(t *testing.T) {
		s, _, _ := openTest(t, Config{})
		for name, act := range actions {
			if _, err := act(s, "nope"); !errors.Is(err, ErrNotFound) {
				t.Errorf("%s(unknown) = %v; want ErrNotFound", name, err)
			}
		}
		if _, err := s.Get("nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(unknown) = %v; want ErrNotFound", err)
		}
	})
}

func checkTransitionFields(t *testing.T, action string, before, after *Job) {
	t.Helper()
	switch action {
	case "start":
		if after.Attempts != before.Attempts+1 || after.Worker != "w1" || after.StartedAt.IsZero() {
			t.Errorf("after start: %+v", after)
		}
	case "finish":
		if after.FinishedAt.IsZero() || len(after.Outputs) != 1 || after.Outputs[0].Filename != "a.png" {
			t.Errorf("after finish: %+v", after)
		}
	case "fail":
		if after.Error != "oom" || after.FinishedAt.IsZero() {
			t.Errorf("after fail: %+v", after)
		}
	case "requeue":
		if after.Attempts != before.Attempts || after.Worker != "" || !after.StartedAt.IsZero() {
			t.Errorf("after requeue: %+v", after)
		}
	case "cancel":
		if after.FinishedAt.IsZero() {
			t.Errorf("after cancel: %+v", after)
		}
	}
}

func stateOf(j *Job) State {
	if j == nil {
		return ""
	}
	return j.State
}

// must returns a function that fails the test on a non-nil error, for use
// as must(t)(s.Start(id, w)).
func must(t *testing.T) func(*Job, error) {
	return func(_ *Job, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

func mustNil(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// checkIndex compares the in-memory index and counts with the database.
func checkIndex(t *testing.T, s *Store) {
	t.Helper()
	all, err := s.List("", 0)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	counts := map[State]int{}
	var queued []*Job
	for _, j := range all {
		counts[j.State]++
		if j.State == Queued {
			queued = append(queued, j)
		}
	}
	slices.SortFunc(queued, CompareQueued)
	got := s.Counts()
	for _, st := range []State{Queued, Running, Done, Failed, Cancelled} {
		if got[st] != counts[st] {
			t.Errorf("Counts()[%s] = %d; database has %d", st, got[st], counts[st])
		}
	}
	if snap := s.Snapshot(0); !slices.Equal(ids(snap), ids(queued)) {
		t.Errorf("Snapshot = %v; database queue = %v", ids(snap), ids(queued))
	}
}

func TestSnapshotOrder(t *testing.T) {
	s, _, _ := openTest(t, Config{})
	b1 := mustSubmit(t, s, Batch)
	i1 := mustSubmit(t, s, Interactive)
	b2 := mustSubmit(t, s, Batch)
	i2 := mustSubmit(t, s, Interactive)
	i3 := mustSubmit(t, s, Interactive)

	// Submission order across classes: the store has no class order.
	if got, want := ids(s.Snapshot(0)), []string{b1.ID, i1.ID, b2.ID, i2.ID, i3.ID}; !slices.Equal(got, want) {
		t.Fatalf("Snapshot(0) = %v; want %v", got, want)
	}
	if got, want := ids(s.Snapshot(4)), []string{b1.ID, i1.ID, b2.ID, i2.ID}; !slices.Equal(got, want) {
		t.Errorf("Snapshot(4) = %v; want %v", got, want)
	}
	// A started job leaves; a re-queued one comes back to its place.
	must(t)(s.Start(i1.ID, "w"))
	must(t)(s.Start(i2.ID, "w"))
	must(t)(s.Start(b1.ID, "w"))
	if got, want := ids(s.Snapshot(0)), []string{b2.ID, i3.ID}; !slices.Equal(got, want) {
		t.Errorf("after Start: Snapshot = %v; want %v", got, want)
	}
	must(t)(s.Requeue(i2.ID, "died"))
	must(t)(s.Requeue(b1.ID, "died"))
	must(t)(s.Requeue(i1.ID, "died"))
	if got, want := ids(s.Snapshot(0)), []string{b1.ID, i1.ID, b2.ID, i2.ID, i3.ID}; !slices.Equal(got, want) {
		t.Errorf("after Requeue: Snapshot = %v; want %v", got, want)
	}
	snap := s.Snapshot(2)[1:]
	if snap[0].Workflow != nil || snap[0].Attempts != 1 || !slices.Equal(snap[0].Models, i1.Models) || snap[0].CreatedAt.IsZero() {
		t.Errorf("Snapshot job = %+v; want a summary without workflow, attempts 1", snap[0])
	}
	// Snapshot jobs are copies.
	snap[0].Models[0] = "mutated"
	snap[0].Class = Batch
	if again := s.Snapshot(2)[1]; again.Models[0] == "mutated" || again.Class != Interactive {
		t.Errorf("mutating a snapshot changed the store: %+v", again)
	}
	checkIndex(t, s)
}

func TestReturnedJobsAreCopies(t *testing.T) {
	s, _, _ := openTest(t, Config{})
	j := mustSubmit(t, s, Batch)
	j.Models[0] = "changed by caller after submit"
	started, err := s.Start(j.ID, "w")
	if err != nil {
		t.Fatal(err)
	}
	started.Models[0] = "x"
	started.Workflow[0] = 'X'
	got := mustGet(t, s, j.ID)
	if got.Models[0] != "checkpoints/sd15.safetensors" || len(got.Workflow) == 0 || got.Workflow[0] != '{' {
		t.Errorf("stored job changed through a returned copy: %+v", got)
	}
}

func TestNotify(t *testing.T) {
	s, _, _ := openTest(t, Config{})
	n := s.Notify()
	drain := func() bool {
		select {
		case <-n:
			return true
		default:
			return false
		}
	}
	if drain() {
		t.Fatal("signal on an empty store")
	}
	j := mustSubmit(t, s, Batch)
	mustSubmit(t, s, Batch)
	if !drain() {
		t.Error("no signal after Submit")
	}
	if drain() {
		t.Error("signals did not coalesce")
	}
	must(t)(s.Start(j.ID, "w"))
	if drain() {
		t.Error("signal after Start")
	}
	must(t)(s.Requeue(j.ID, "died"))
	if !drain() {
		t.Error("no signal after Requeue")
	}
}

func TestQueueBounds(t *testing.T) {
	ctx := context.Background()
	s, _, _ := openTest(t, Config{InteractiveLimit: 3, BatchLimit: 2})
	var inter []*Job
	for range 3 {
		inter = append(inter, mustSubmit(t, s, Interactive))
	}
	for _, tc := range []struct {
		name  string
		class Class
		want  error
	}{
		{name: "interactive full", class: Interactive, want: ErrQueueFull},
		{name: "batch unaffected 1", class: Batch},
		{name: "batch unaffected 2", class: Batch},
		{name: "batch full", class: Batch, want: ErrQueueFull},
		{name: "interactive still full", class: Interactive, want: ErrQueueFull},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Submit(ctx, newJob(tc.class)); !errors.Is(err, tc.want) {
				t.Fatalf("Submit(%s) = %v; want %v", tc.class, err, tc.want)
			}
		})
	}
	if c := s.Counts(); c[Queued] != 5 {
		t.Errorf("refused submits were written: Counts = %v", c)
	}
	// Starting a job frees a slot; re-queueing it may exceed the limit.
	must(t)(s.Start(inter[0].ID, "w"))
	mustSubmit(t, s, Interactive)
	must(t)(s.Requeue(inter[0].ID, "died"))
	if got := s.QueuedLen(Interactive); got != 4 {
		t.Errorf("QueuedLen(interactive) = %d; want 4 (re-queue ignores the limit)", got)
	}
	if err := s.Submit(ctx, newJob(Interactive)); !errors.Is(err, ErrQueueFull) {
		t.Errorf("Submit over the limit = %v; want ErrQueueFull", err)
	}
}

// TestQueueBoundsConcurrent checks the committer's exact bound: the fast
// pre-check alone would let a burst through.
func TestQueueBoundsConcurrent(t *testing.T) {
	const limit, n = 10, 200
	s, _, _ := openTest(t, Config{InteractiveLimit: limit})
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted, full := 0, 0
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			err := s.Submit(context.Background(), newJob(Interactive))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				accepted++
			case errors.Is(err, ErrQueueFull):
				full++
			default:
				t.Errorf("Submit: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	if accepted != limit || full != n-limit {
		t.Errorf("accepted %d, refused %d; want %d, %d", accepted, full, limit, n-limit)
	}
	checkIndex(t, s)
}

// TestGroupCommit checks that concurrent submissions share commits. While
// one commit syncs, the others wait in the committer's queue and go into
// the next commit together, so this holds without any delay in the design.
func TestGroupCommit(t *testing.T) {
	const n = 1000
	s, _, _ := openTest(t, Config{})
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			if err := s.Submit(context.Background(), newJob(Batch)); err != nil {
				t.Errorf("Submit: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	st := s.Stats()
	t.Logf("%d jobs in %d commits (largest %d, %.3f fsyncs/job)", st.JobsCommitted, st.Commits, st.MaxBatch, st.FsyncsPerJob)
	if st.JobsCommitted != n || st.QueuedByClass[Batch] != n || st.States[Queued] != n {
		t.Fatalf("Stats = %+v; want %d jobs queued", st, n)
	}
	if st.Commits >= n/2 {
		t.Errorf("%d commits for %d jobs; want < %d", st.Commits, n, n/2)
	}
}

func TestListAndDelete(t *testing.T) {
	s, _, _ := openTest(t, Config{})
	var all []*Job
	for i := range 6 {
		all = append(all, mustSubmit(t, s, []Class{Interactive, Batch}[i%2]))
	}
	must(t)(s.Start(all[1].ID, "w"))
	mustNil(t, errOf(s.Fail(all[2].ID, "x")))
	must(t)(s.Start(all[3].ID, "w"))
	mustNil(t, errOf(s.Finish(all[3].ID, nil)))
	must(t)(s.Cancel(all[4].ID))
	for _, tc := range []struct {
		state State
		limit int
		want  []*Job
	}{
		{state: "", want: []*Job{all[5], all[4], all[3], all[2], all[1], all[0]}},
		{state: "", limit: 2, want: []*Job{all[5], all[4]}},
		{state: Queued, want: []*Job{all[5], all[0]}},
		{state: Running, want: []*Job{all[1]}},
		{state: Failed, want: []*Job{all[2]}},
		{state: Done, want: []*Job{all[3]}},
		{state: Cancelled, want: []*Job{all[4]}},
	} {
		t.Run(fmt.Sprintf("%s/%d", tc.state, tc.limit), func(t *testing.T) {
			got, err := s.List(tc.state, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(got), ids(tc.want)) {
				t.Errorf("List(%q, %d) = %v; want %v", tc.state, tc.limit, ids(got), ids(tc.want))
			}
		})
	}
	if _, err := s.List("bogus", 0); err == nil {
		t.Error("List(bogus) succeeded")
	}
	for _, j := range all[2:5] {
		mustNil(t, s.Delete(j.ID))
	}
	if got, _ := s.List("", 0); len(got) != 3 {
		t.Errorf("after deleting 3 of 6: %d jobs", len(got))
	}
	if c := s.Counts(); c[Done]+c[Failed]+c[Cancelled] != 0 || c[Queued] != 2 || c[Running] != 1 {
		t.Errorf("Counts after delete = %v", c)
	}
	checkIndex(t, s)
}

func TestClosed(t *testing.T) {
	s, _, _ := openTest(t, Config{})
	j := mustSubmit(t, s, Batch)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if err := s.Submit(context.Background(), newJob(Batch)); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Close = %v; want ErrClosed", err)
	}
	if _, err := s.Start(j.ID, "w"); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v; want ErrClosed", err)
	}
	if _, err := s.Get(j.ID); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close = %v; want ErrClosed", err)
	}
}

func TestSubmitCancelledContext(t *testing.T) {
	s, _, _ := openTest(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// With the committer's queue free, Submit may still hand the job over;
	// either way the outcome must be consistent with the store.
	j := newJob(Batch)
	err := s.Submit(ctx, j)
	switch {
	case err == nil:
		mustGet(t, s, j.ID)
	case errors.Is(err, context.Canceled):
		if c := s.Counts(); c[Queued] != 0 {
			t.Errorf("cancelled Submit wrote a job: %v", c)
		}
	default:
		t.Errorf("Submit = %v", err)
	}
}

// TestConcurrentUse runs submitters and a dispatcher-like loop at the same
// time (run with -race) and checks that memory and disk agree afterwards.
func TestConcurrentUse(t *testing.T) {
	s, _, _ := openTest(t, Config{MaxAttempts: 2})
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				if err := s.Submit(ctx, newJob([]Class{Interactive, Batch}[(w+i)%2])); err != nil {
					t.Errorf("Submit: %v", err)
					return
				}
			}
		})
	}
	var dispatchers sync.WaitGroup
	for d := range 3 {
		dispatchers.Go(func() {
			r := rand.New(rand.NewPCG(uint64(d), 1))
			for ctx.Err() == nil {
				snap := s.Snapshot(4)
				if len(snap) == 0 {
					select {
					case <-s.Notify():
					case <-ctx.Done():
					}
					continue
				}
				j, err := s.Start(snap[r.IntN(len(snap))].ID, fmt.Sprintf("w%d", d))
				if errors.Is(err, ErrBadTransition) || errors.Is(err, ErrNotFound) {
					continue // another dispatcher took it
				}
				if err != nil {
					t.Errorf("Start: %v", err)
					return
				}
				switch r.IntN(4) {
				case 0:
					err = errOf(s.Finish(j.ID, nil))
				case 1:
					_, err = s.Requeue(j.ID, "died")
				case 2:
					_, err = s.Cancel(j.ID)
				case 3:
					err = errOf(s.Fail(j.ID, "bad"))
				}
				if err != nil {
					t.Errorf("after Start: %v", err)
				}
			}
		})
	}
	wg.Wait()
	// Wait (with a deadline) for the dispatchers to drain the queue.
	deadline := time.Now().Add(20 * time.Second)
	finished := func() int { c := s.Counts(); return c[Done] + c[Failed] + c[Cancelled] }
	for finished() < 200 && time.Now().Before(deadline) {
		select {
		case <-s.Notify():
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop()
	dispatchers.Wait()
	checkIndex(t, s)
	c := s.Counts()
	if c[Queued] != 0 || c[Running] != 0 || c[Done]+c[Failed]+c[Cancelled] != 200 {
		t.Errorf("Counts = %v; want 200 finished jobs", c)
	}
}
