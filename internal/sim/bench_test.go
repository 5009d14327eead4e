package sim

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
)

// TestBenchQuick runs the benchmark suite's short form over the shared
// traces (skipped where they are absent) and checks that every table is
// there. (Run's determinism is TestDeterminism's.)
func TestBenchQuick(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("runs about a hundred simulations")
	}
	traces := "../../../shared/traces"
	if _, err := os.Stat(traces + "/servegen"); err != nil {
		t.Skip("no shared traces")
	}
	run := func() string {
		var b strings.Builder
		err := Bench(context.Background(), BenchOptions{Baseline: testBaselines("../../configs"), Traces: os.DirFS(traces), Quick: true,
			Wall: clock.NewFake(time.Unix(0, 0))}, &b)
		if err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	a := run()
	for _, want := range []string{"### kiln-default vs naive-serverless", "### Throughput at the p95 SLO", "### Eviction policies vs the offline optimum",
		"### GPU busy at saturation", "### Lookahead prefetch and batching", "### Simulator speed", "| reason | kiln-default |", "| azure-conv |"} {
		if !strings.Contains(a, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	t.Log(a)
}
