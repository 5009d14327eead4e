package api

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/modelfile"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// benchServer is an API over a real store and a real (tiny) model store,
// without workers: what POST /v1/jobs costs in-process.
func benchServer(b *testing.B) (*Server, []byte) {
	b.Helper()
	dir := b.TempDir()
	wf, err := os.ReadFile("../../examples/workflows/salad-comfyui-api__sd1.5-txt2img.api.json")
	if err != nil {
		b.Fatal(err)
	}
	g, err := workflow.Parse(wf, workflow.Limits{}.WithDefaults())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := modelfile.SynthStore(filepath.Join(dir, "models"), g.Models(), 0.0001, 1); err != nil {
		b.Fatal(err)
	}
	store, err := job.Open(filepath.Join(dir, "queue.db"), job.Config{BatchLimit: 1 << 30}.WithDefaults(), clock.Real())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	s := New(Config{}, Deps{
		Store: store, Catalog: catalog.New(filepath.Join(dir, "models"), cost.Default()),
		Limits: workflow.Limits{}.WithDefaults(), Log: zerolog.Nop(),
	})
	body := append(append([]byte(`{"class": "batch", "workflow": `), wf...), '}')
	return s, body
}

func benchmarkSubmit(b *testing.B, path string, want int) {
	s, body := benchServer(b)
	h := s.Handler()
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	// Many requests in flight, as from many HTTP clients: this is what
	// group commit needs to share fsyncs.
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != want {
				b.Fatalf("HTTP %d: %s", rec.Code, rec.Body.String())
			}
		}
	})
}

// BenchmarkSubmitDryRun is the baseline: parsing and validation only.
func BenchmarkSubmitDryRun(b *testing.B) { benchmarkSubmit(b, "/v1/jobs?dry_run=1", http.StatusOK) }

// BenchmarkSubmitDurable adds the group-committed, fsynced store write.
func BenchmarkSubmitDurable(b *testing.B) { benchmarkSubmit(b, "/v1/jobs", http.StatusAccepted) }
