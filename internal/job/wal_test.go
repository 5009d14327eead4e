package job

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kiln-gpu/kiln/internal/clock"
)

// TestKilledBetweenLogAndIndex SIGKILLs a process that submits, starts and
// finishes jobs while its bbolt index is held back (holdIndexEnv), so that
// every change it acknowledged is in the log only. The bbolt file must not
// have them (the kill came between the log append and the index update),
// and reopening must bring back every acknowledged change.
func TestKilledBetweenLogAndIndex(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	path := filepath.Join(t.TempDir(), "queue.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestLogHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "KILN_JOB_LOG_HELPER=1", "KILN_JOB_DB="+path, holdIndexEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	want := map[string]State{} // each job's last acknowledged state
	var order []string
	sc := bufio.NewScanner(out)
	killed := false
	for sc.Scan() {
		st, id, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if _, seen := want[id]; !seen {
			order = append(order, id)
		}
		want[id] = State(st)
		if len(order) == 400 && !killed {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("helper exited after %d jobs without being killed", len(order))
	}

	segs, err := listSegments(path)
	if err != nil || len(segs) == 0 {
		t.Fatalf("log segments after the kill: %v, %v; want at least one", segs, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	inIndex := 0
	_ = db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketJobs); b != nil {
			inIndex = b.Stats().KeyN
		}
		return nil
	})
	_ = db.Close()
	if inIndex != 0 {
		t.Fatalf("bbolt has %d jobs; the index was held, so want 0 (the kill must fall between log and index)", inIndex)
	}

	s, err := Open(path, Config{}, clock.Real())
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	lost := 0
	for _, id := range order {
		j, err := s.Get(id)
		switch {
		case err != nil:
			lost++
			t.Errorf("acknowledged job %s lost: %v", id, err)
		// Recovery queues running jobs again; a finish committed just
		// before the kill, not yet acknowledged on stdout, is kept.
		case want[id] == Running && j.State != Queued && j.State != Done,
			want[id] != Running && j.State != want[id]:
			t.Errorf("job %s is %s after replay; last acknowledged %s", id, j.State, want[id])
		}
	}
	counts := s.Counts()
	t.Logf("%d jobs acknowledged before the kill (%d done), %d in the log's replay; lost %d", len(order), counts[Done], s.Recovered()+counts[Done], lost)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if segs, _ := listSegments(path); len(segs) != 0 {
		t.Errorf("log segments left after a clean close: %v", segs)
	}
}

// TestLogHelperProcess is the child of TestKilledBetweenLogAndIndex: it
// prints "<state> <id>" once each change has returned.
func TestLogHelperProcess(t *testing.T) {
	if os.Getenv("KILN_JOB_LOG_HELPER") != "1" {
		t.Skip("helper process for TestKilledBetweenLogAndIndex")
	}
	s, err := Open(os.Getenv("KILN_JOB_DB"), Config{}, clock.Real())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	say := func(st State, id string) {
		mu.Lock()
		fmt.Printf("%s %s\n", st, id)
		mu.Unlock()
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100000 { // bounded in case the parent never kills us
				j := newJob(Batch)
				if err := s.Submit(context.Background(), j); err != nil {
					fail(err)
				}
				say(Queued, j.ID)
				if (g+i)%2 == 0 {
					if _, err := s.Start(j.ID, "w"); err != nil {
						fail(err)
					}
					say(Running, j.ID)
					if i%4 == 0 {
						if err := errOf(s.Finish(j.ID, nil)); err != nil {
							fail(err)
						}
						say(Done, j.ID)
					}
				}
			}
		})
	}
	wg.Wait()
	os.Exit(0)
}

// TestReadsSeeTheLog holds the index back and checks that every read (Get,
// List with and without a state, the history prune) sees the changes that
// are in the log only, merged with those bbolt has; then that a torn record
// at the log's tail costs nothing acknowledged.
func TestReadsSeeTheLog(t *testing.T) {
	s, path, _ := openTest(t, Config{HistoryLimit: -1})
	var older []*Job // indexed before the hold
	for range 4 {
		older = append(older, mustSubmit(t, s, Batch))
	}
	s = reopen(t, s, path, Config{HistoryLimit: -1})
	t.Setenv(holdIndexEnv, "1")
	s = reopen(t, s, path, Config{HistoryLimit: -1})

	must(t)(s.Start(older[0].ID, "w"))
	mustNil(t, errOf(s.Finish(older[0].ID, nil)))
	var newer []*Job // in the log only
	for range 3 {
		newer = append(newer, mustSubmit(t, s, Batch))
	}
	must(t)(s.Start(newer[1].ID, "w"))
	mustNil(t, errOf(s.Finish(newer[1].ID, nil)))
	mustNil(t, s.Delete(older[0].ID))

	check := func(s *Store, when string) {
		t.Helper()
		if j := mustGet(t, s, newer[1].ID); j.State != Done {
			t.Errorf("%s: Get(%s).State = %s; want done", when, newer[1].ID, j.State)
		}
		if _, err := s.Get(older[0].ID); err == nil {
			t.Errorf("%s: deleted job %s still found", when, older[0].ID)
		}
		all, err := s.List("", 0)
		if err != nil {
			t.Fatal(err)
		}
		// Newest first: newer[2], newer[1], newer[0], older[3], older[2], older[1].
		wantAll := []string{newer[2].ID, newer[1].ID, newer[0].ID, older[3].ID, older[2].ID, older[1].ID}
		if got := ids(all); strings.Join(got, ",") != strings.Join(wantAll, ",") {
			t.Errorf("%s: List() = %v; want %v", when, got, wantAll)
		}
		done, _ := s.List(Done, 0)
		if got := ids(done); len(got) != 1 || got[0] != newer[1].ID {
			t.Errorf("%s: List(done) = %v; want [%s]", when, got, newer[1].ID)
		}
		two, _ := s.List(Queued, 2)
		if got := ids(two); len(got) != 2 || got[0] != newer[2].ID || got[1] != newer[0].ID {
			t.Errorf("%s: List(queued, 2) = %v; want [%s %s]", when, got, newer[2].ID, newer[0].ID)
		}
	}
	check(s, "index held")

	// A crash mid-append: a partial record after the last good one.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs, err := listSegments(path)
	if err != nil || len(segs) == 0 {
		t.Fatalf("segments: %v, %v", segs, err)
	}
	last := segs[len(segs)-1]
	recs, err := readSegment(last, true)
	if err != nil || len(recs) == 0 {
		t.Fatalf("records of %s: %d, %v", last.path, len(recs), err)
	}
	end := int64(walHeaderBytes)
	for i := range recs {
		end += int64(len(appendRecord(nil, &recs[i])))
	}
	torn := appendRecord(nil, &logRecord{lsn: recs[len(recs)-1].lsn + 1, seq: 999, state: 'q', id: "torn", data: []byte(`{"id":"torn"}`)})
	f, err := os.OpenFile(last.path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(torn[:len(torn)-3], end); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()

	os.Unsetenv(holdIndexEnv)
	s2, err := Open(path, Config{HistoryLimit: -1}, clock.NewFake(t0))
	if err != nil {
		t.Fatalf("reopen with a torn tail: %v", err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	check(s2, "replayed")
	if _, err := s2.Get("torn"); err == nil {
		t.Error("the torn record was replayed")
	}
	if n, err := s2.Prune(0); err != nil || n != 1 {
		t.Errorf("Prune(0) = %d, %v; want the 1 finished job", n, err)
	}
}

// TestTransitionsSeeTheirOwnPast checks that a commit sees the change
// before it even when the indexer applies that change to bbolt while the
// batch is being applied. The hook holds each batch between its bbolt
// snapshot and its lookups for longer than the indexer's interval, so the
// indexer applies the previous change meanwhile and tries to retire it from
// the overlay; were it allowed to, the batch would find the job in neither
// and act on its older state (start: "not found"; preempt: "queued →
// queued").
func TestTransitionsSeeTheirOwnPast(t *testing.T) {
	s, _, _ := openTest(t, Config{})
	testHookAfterSnapshot = func() { time.Sleep(3 * indexInterval) }
	t.Cleanup(func() { testHookAfterSnapshot = nil })
	for i := range 5 {
		id := mustSubmit(t, s, Batch).ID
		if _, err := s.Start(id, "w"); err != nil {
			t.Fatalf("life %d: start: %v", i, err)
		}
		if _, err := s.Preempt(id); err != nil {
			t.Fatalf("life %d: preempt: %v", i, err)
		}
		if _, err := s.Start(id, "w"); err != nil {
			t.Fatalf("life %d: start again: %v", i, err)
		}
		if err := errOf(s.Finish(id, nil)); err != nil {
			t.Fatalf("life %d: finish: %v", i, err)
		}
	}
}
