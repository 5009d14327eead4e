package job

import (
	"errors"
	"testing"
	"time"
)

func TestHistoryLimitPrunesOldestFinishedJobs(t *testing.T) {
	s, _, _ := openTest(t, Config{HistoryLimit: 20})
	var finished []*Job
	for i := 0; i < 100; i++ {
		j := mustSubmit(t, s, Batch)
		if _, err := s.Start(j.ID, "w"); err != nil {
			t.Fatal(err)
		}
		if err := errOf(s.Finish(j.ID, nil)); err != nil {
			t.Fatal(err)
		}
		finished = append(finished, j)
	}
	queued := mustSubmit(t, s, Interactive)
	slack := Config{HistoryLimit: 20}.historySlack()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := s.Counts()
		if c[Done] <= 20+slack && !s.pruning.Load() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("finished jobs not pruned: %v", c)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The newest finished job and the queued one survive; the oldest is gone.
	mustGet(t, s, finished[len(finished)-1].ID)
	mustGet(t, s, queued.ID)
	if _, err := s.Get(finished[0].ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("oldest finished job still there: %v", err)
	}
	// An explicit prune to a smaller size, and the counts agree with the
	// index on disk after a reopen.
	n, err := s.Prune(5)
	if err != nil || s.Counts()[Done] != 5 || n == 0 {
		t.Fatalf("Prune(5) = %d, %v; counts %v", n, err, s.Counts())
	}
	all, err := s.List("", 0)
	if err != nil || len(all) != 6 {
		t.Fatalf("List after prune: %d jobs, %v", len(all), err)
	}
}

func TestHistoryLimitValidation(t *testing.T) {
	for _, tc := range []struct {
		limit int
		ok    bool
	}{{0, true}, {-1, true}, {5, true}, {-2, false}} {
		err := Config{HistoryLimit: tc.limit}.WithDefaults().Validate()
		if (err == nil) != tc.ok {
			t.Errorf("history_limit %d: %v", tc.limit, err)
		}
	}
}
