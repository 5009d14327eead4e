package job

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/kiln-gpu/kiln/internal/clock"
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
// as an API server under load does; group commit shares each fsync.
func BenchmarkSubmitParallel(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	before := s.Stats()
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Submit(ctx, newJob(Batch)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	reportSubmit(b, s, before)
}
