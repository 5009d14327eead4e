package job

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
)

func TestReopenRecovers(t *testing.T) {
	s, path, _ := openTest(t, Config{})
	var jobs []*Job
	for i := range 40 {
		jobs = append(jobs, mustSubmit(t, s, []Class{Interactive, Batch}[i%3/2]))
	}
	want := map[string]State{}
	for _, j := range jobs {
		want[j.ID] = Queued
	}
	for i, j := range jobs[:20] {
		must(t)(s.Start(j.ID, "w"))
		want[j.ID] = Running
		switch i % 5 {
		case 0:
			mustNil(t, errOf(s.Finish(j.ID, []Output{{Filename: "o.png"}})))
			want[j.ID] = Done
		case 1:
			mustNil(t, errOf(s.Fail(j.ID, "x")))
			want[j.ID] = Failed
		case 2:
			must(t)(s.Cancel(j.ID))
			want[j.ID] = Cancelled
		case 3: // a second attempt, left running
			must(t)(s.Requeue(j.ID, "died"))
			must(t)(s.Start(j.ID, "w2"))
		}
	}
	wantRecovered := 0
	for _, st := range want {
		if st == Queued || st == Running {
			wantRecovered++
		}
	}
	before := map[string]*Job{}
	for _, j := range jobs {
		before[j.ID] = mustGet(t, s, j.ID)
	}

	s2 := reopen(t, s, path, Config{})
	if got := s2.Recovered(); got != wantRecovered {
		t.Errorf("Recovered() = %d; want %d", got, wantRecovered)
	}
	for _, j := range jobs {
		t.Run(j.ID, func(t *testing.T) {
			b, got := before[j.ID], mustGet(t, s2, j.ID)
			wantState := want[j.ID]
			if wantState == Running {
				wantState = Queued
			}
			if got.State != wantState || got.Attempts != b.Attempts || got.Seq != b.Seq || got.Class != b.Class || !got.CreatedAt.Equal(b.CreatedAt) {
				t.Errorf("after reopen %+v; before %+v, want state %s", got, b, wantState)
			}
			if want[j.ID] == Running && (got.Worker != "" || !got.StartedAt.IsZero()) {
				t.Errorf("recovered running job keeps worker %q, started %v", got.Worker, got.StartedAt)
			}
			if want[j.ID] == Done && len(got.Outputs) != 1 {
				t.Errorf("outputs lost: %+v", got)
			}
		})
	}
	checkIndex(t, s2)
	// Sequence numbers keep growing across restarts.
	var maxSeq uint64
	for _, b := range before {
		maxSeq = max(maxSeq, b.Seq)
	}
	if j := mustSubmit(t, s2, Batch); j.Seq <= maxSeq {
		t.Errorf("new Seq %d after reopen; want > %d", j.Seq, maxSeq)
	}
	// Recovery is idempotent.
	s3 := reopen(t, s2, path, Config{})
	if got := s3.Recovered(); got != wantRecovered+1 {
		t.Errorf("second reopen: Recovered() = %d; want %d", got, wantRecovered+1)
	}
	checkIndex(t, s3)
}

// TestSeqSurvivesDelete checks that deleting the newest jobs does not make
// their sequence numbers come back.
func TestSeqSurvivesDelete(t *testing.T) {
	s, path, _ := openTest(t, Config{})
	j := mustSubmit(t, s, Batch)
	must(t)(s.Cancel(j.ID))
	mustNil(t, s.Delete(j.ID))
	s2 := reopen(t, s, path, Config{})
	if j2 := mustSubmit(t, s2, Batch); j2.Seq <= j.Seq {
		t.Errorf("Seq %d reused after delete and reopen (old %d)", j2.Seq, j.Seq)
	}
}

func TestRequeueMaxAttempts(t *testing.T) {
	type step string // "start", "requeue", "reopen"
	for _, tc := range []struct {
		name        string
		maxAttempts int
		steps       []step
		wantState   State
		wantAttempt int
		wantPreempt int
		wantError   string
	}{
		{name: "first death requeues", maxAttempts: 2, steps: []step{"start", "requeue"}, wantState: Queued, wantAttempt: 1},
		{name: "second death fails", maxAttempts: 2, steps: []step{"start", "requeue", "start", "requeue"},
			wantState: Failed, wantAttempt: 2, wantError: "gave up after 2 lost attempts; last: gpu fell off the bus"},
		{name: "one attempt only", maxAttempts: 1, steps: []step{"start", "requeue"},
			wantState: Failed, wantAttempt: 1, wantError: "gave up after 1 lost attempts; last: gpu fell off the bus"},
		{name: "crash counts an attempt", maxAttempts: 3, steps: []step{"start", "reopen", "start", "reopen", "start", "requeue"},
			wantState: Failed, wantAttempt: 3, wantError: "gave up after 3 lost attempts; last: gpu fell off the bus"},
		{name: "crash then requeue", maxAttempts: 3, steps: []step{"start", "reopen", "start", "requeue"},
			wantState: Queued, wantAttempt: 2},
		{name: "preemptions are not lost attempts", maxAttempts: 2,
			steps:     []step{"start", "preempt", "start", "preempt", "start", "preempt", "start", "requeue"},
			wantState: Queued, wantAttempt: 4, wantPreempt: 3},
		{name: "lost attempts still fail after a preemption", maxAttempts: 1, steps: []step{"start", "preempt", "start", "requeue"},
			wantState: Failed, wantAttempt: 2, wantPreempt: 1, wantError: "gave up after 1 lost attempts; last: gpu fell off the bus"},
		{name: "a preemption is durable", maxAttempts: 2, steps: []step{"start", "preempt", "reopen", "start", "requeue"},
			wantState: Queued, wantAttempt: 2, wantPreempt: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{MaxAttempts: tc.maxAttempts}
			s, path, _ := openTest(t, cfg)
			id := mustSubmit(t, s, Interactive).ID
			var last *Job
			for _, st := range tc.steps {
				var err error
				switch st {
				case "start":
					last, err = s.Start(id, "w")
				case "requeue":
					last, err = s.Requeue(id, "gpu fell off the bus")
				case "preempt":
					last, err = s.Preempt(id)
				case "reopen":
					s = reopen(t, s, path, cfg)
					last = mustGet(t, s, id)
				}
				if err != nil {
					t.Fatalf("%s: %v", st, err)
				}
			}
			got := mustGet(t, s, id)
			if last.State != tc.wantState || got.State != tc.wantState || got.Attempts != tc.wantAttempt ||
				got.Preemptions != tc.wantPreempt || got.Error != tc.wantError {
				t.Errorf("job = %+v (returned state %s); want state %s, attempts %d, preemptions %d, error %q",
					got, last.State, tc.wantState, tc.wantAttempt, tc.wantPreempt, tc.wantError)
			}
			checkIndex(t, s)
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	held, err := Open(filepath.Join(dir, "held.db"), Config{}, clock.Real())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for _, tc := range []struct {
		name    string
		path    string
		cfg     Config
		wantIs  error
		wantMsg string
	}{
		{name: "locked", path: filepath.Join(dir, "held.db"), wantIs: ErrLocked, wantMsg: "locked"},
		{name: "bad config", path: filepath.Join(dir, "x.db"), cfg: Config{MaxAttempts: -1}, wantMsg: "queue.max_attempts"},
		{name: "missing dir", path: filepath.Join(dir, "no", "such", "q.db"), wantMsg: "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(tc.path, tc.cfg, clock.Real(), WithLockTimeout(20*time.Millisecond))
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("Open = %v; want %v", err, tc.wantIs)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("Open = %q; want it to mention %q", err, tc.wantMsg)
			}
		})
	}
	if fi, err := os.Stat(filepath.Join(dir, "held.db")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("database file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
}

// TestCrashSafety SIGKILLs a process while it submits jobs and checks that
// every job it reported as accepted is in the database.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	path := filepath.Join(t.TempDir(), "queue.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "KILN_JOB_HELPER=1", "KILN_JOB_DB="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var accepted []string
	sc := bufio.NewScanner(out)
	killed := false
	for sc.Scan() {
		id, ok := strings.CutPrefix(sc.Text(), "accepted ")
		if !ok {
			continue
		}
		accepted = append(accepted, id)
		if len(accepted) == 300 && !killed {
			// Kill mid-stream; the lines already in the pipe still count.
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("helper exited after %d jobs without being killed", len(accepted))
	}
	s, err := Open(path, Config{}, clock.Real())
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer s.Close()
	missing := 0
	for _, id := range accepted {
		if _, err := s.Get(id); err != nil {
			missing++
			t.Errorf("accepted job %s lost: %v", id, err)
		}
	}
	t.Logf("%d jobs accepted before the kill, %d recovered, %d missing", len(accepted), s.Recovered(), missing)
	if s.Recovered() < len(accepted) {
		t.Errorf("Recovered() = %d; want ≥ %d", s.Recovered(), len(accepted))
	}
}

// TestHelperProcess is the child of TestCrashSafety: it submits jobs from
// several goroutines and prints each id once Submit has returned.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("KILN_JOB_HELPER") != "1" {
		t.Skip("helper process for TestCrashSafety")
	}
	s, err := Open(os.Getenv("KILN_JOB_DB"), Config{}, clock.Real())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100000 { // bounded in case the parent never kills us
				j := newJob(Batch)
				if err := s.Submit(context.Background(), j); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Printf("accepted %s\n", j.ID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	os.Exit(0)
}

// TestPreemptKeepsThePlace preempts the first of three batch jobs: it goes
// back to the head of its class, not behind the jobs submitted after it,
// and preempting a job that is not running changes nothing.
func TestPreemptKeepsThePlace(t *testing.T) {
	s, _, _ := openTest(t, Config{})
	a := mustSubmit(t, s, Batch).ID
	b := mustSubmit(t, s, Batch).ID
	c := mustSubmit(t, s, Batch).ID
	if _, err := s.Start(a, "w"); err != nil {
		t.Fatal(err)
	}
	if got := ids(s.Snapshot(10)); !slices.Equal(got, []string{b, c}) {
		t.Fatalf("queue while a runs = %v", got)
	}
	j, err := s.Preempt(a)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != Queued || j.Worker != "" || !j.StartedAt.IsZero() || j.Preemptions != 1 {
		t.Errorf("preempted job = %+v", j)
	}
	if got := ids(s.Snapshot(10)); !slices.Equal(got, []string{a, b, c}) {
		t.Errorf("queue after the preemption = %v, want %v", got, []string{a, b, c})
	}
	if _, err := s.Preempt(b); !errors.Is(err, ErrBadTransition) {
		t.Errorf("preempting a queued job: %v, want ErrBadTransition", err)
	}
	if got := mustGet(t, s, b); got.State != Queued || got.Preemptions != 0 {
		t.Errorf("queued job after a refused preemption = %+v", got)
	}
	checkIndex(t, s)
}
