package job

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// countingRand is a deterministic, non-thread-safe id source: each Read
// writes a fresh counter value, big-endian, at the end of p. The store must
// serialise its reads.
type countingRand struct{ n uint64 }

func (r *countingRand) Read(p []byte) (int, error) {
	r.n++
	clear(p)
	for i, v := len(p)-1, r.n; i >= 0 && v > 0; i, v = i-1, v>>8 {
		p[i] = byte(v)
	}
	return len(p), nil
}

// openTest opens a store in a fresh temporary directory with a fake clock.
func openTest(t testing.TB, cfg Config) (*Store, string, *clock.Fake) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "queue.db")
	clk := clock.NewFake(t0)
	s, err := Open(path, cfg, clk, WithRand(&countingRand{}))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path, clk
}

func reopen(t testing.TB, s *Store, path string, cfg Config) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s2, err := Open(path, cfg, clock.NewFake(t0.Add(time.Hour)))
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	return s2
}

func newJob(class Class) *Job {
	return &Job{
		Class:    class,
		Workflow: json.RawMessage(`{"1":{"class_type":"KSampler","inputs":{"steps":20}}}`),
		Models:   []string{"checkpoints/sd15.safetensors"},
	}
}

func mustSubmit(t testing.TB, s *Store, class Class) *Job {
	t.Helper()
	j := newJob(class)
	if err := s.Submit(context.Background(), j); err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return j
}

func mustGet(t testing.TB, s *Store, id string) *Job {
	t.Helper()
	j, err := s.Get(id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return j
}

func ids(jobs []*Job) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = j.ID
	}
	return out
}

// errOf keeps the error of a transition that returns the committed job.
func errOf(_ *Job, err error) error { return err }
