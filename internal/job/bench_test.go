package job

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// benchStore opens a store whose limits do not get in the way of b.N.
func benchStore(b *testing.B) *Store {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "queue.db"), Config{InteractiveLimit: 1 << 30, BatchLimit: 1 << 30}, clock.Real())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

func reportSubmit(b *testing.B, s *Store, before Stats) {
	st := s.Stats()
	jobs := float64(st.JobsCommitted - before.JobsCommitted)
	if jobs == 0 {
		return
	}
	b.ReportMetric(float64(st.SubmitCommits-before.SubmitCommits)/jobs, "fsyncs/job")
	b.ReportMetric(jobs/b.Elapsed().Seconds(), "jobs/s")
}

// BenchmarkSubmitSerial is the baseline: one submitter, so every job pays a
// commit of its own.
func BenchmarkSubmitSerial(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	before := s.Stats()
	for b.Loop() {
		if err := s.Submit(ctx, newJob(Batch)); err != nil {
			b.Fatal(err)
		}
	}
	reportSubmit(b, s, before)
}

// BenchmarkSubmitParallel submits from many goroutines (64 per GOMAXPROCS),
// as an API server under load does; group commit shares each fsync. The
// jobs come without Facts, so the store parses each workflow (a graph
// without outputs, which does not parse: the job keeps none).
func BenchmarkSubmitParallel(b *testing.B) { benchmarkSubmitParallel(b, nil) }

// BenchmarkSubmitParallelParsed is BenchmarkSubmitParallel with the jobs
// handed over as the API hands them, with the Facts of its one parse: the
// store's own cost.
func BenchmarkSubmitParallelParsed(b *testing.B) {
	benchmarkSubmitParallel(b, &workflow.Facts{Outputs: []string{"9"}})
}

func benchmarkSubmitParallel(b *testing.B, facts *workflow.Facts) {
	s := benchStore(b)
	ctx := context.Background()
	before := s.Stats()
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			j := newJob(Batch)
			j.Facts = facts
			if err := s.Submit(ctx, j); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	reportSubmit(b, s, before)
}
