package job

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/kiln-gpu/kiln/internal/clock"
)

// TestWithoutSyncKeepsWhatItWrote: a store opened WithoutSync (a cluster
// node's local queue) still writes every change to its log, so a store
// opened again on the same file has the jobs and their states.
func TestWithoutSyncKeepsWhatItWrote(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue.db")
	s, err := Open(path, Config{}, clock.NewFake(t0), WithoutSync())
	if err != nil {
		t.Fatal(err)
	}
	a, b := mustSubmit(t, s, Interactive), mustSubmit(t, s, Batch)
	if _, err := s.Cancel(b.ID); err != nil {
		t.Fatal(err)
	}
	s2 := reopen(t, s, path, Config{})
	if j := mustGet(t, s2, a.ID); j.State != Queued {
		t.Fatalf("job %s is %s after reopening, want queued", a.ID, j.State)
	}
	if j := mustGet(t, s2, b.ID); j.State != Cancelled {
		t.Fatalf("job %s is %s after reopening, want cancelled", b.ID, j.State)
	}
	if err := s2.Submit(context.Background(), newJob(Interactive)); err != nil {
		t.Fatal(err)
	}
}
