package worker

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// A worker that crashed and came back shows its restart under its own id
// and device, with its state now.
func TestCollectorPerWorker(t *testing.T) {
	p := newTestPool(t, "crash-on-run", Config{}, nil)
	l := acquire(t, p)
	if _, err := l.Worker.Run(context.Background(), wire.RunRequest{JobID: "j"}, nil); !errors.Is(err, ErrConnClosed) {
		t.Fatalf("run on a crashing worker: %v", err)
	}
	waitUntil(t, "the worker to restart", func() bool { return p.Get("w0.0").State() == Ready && p.Restarts() == 1 })
	p.Release(l, false)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(p.Collector())
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP kiln_worker_restarts_total Worker process restarts after a crash or a failed health check.
# TYPE kiln_worker_restarts_total counter
kiln_worker_restarts_total{device="0",worker="w0.0"} 1
`), "kiln_worker_restarts_total"); err != nil {
		t.Error(err)
	}
	waitUntil(t, "the state series to say ready", func() bool {
		return testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP kiln_worker_state 1 for a worker's current state (starting, ready, busy, stopping, backoff, stopped, recycling), 0 for the others.
# TYPE kiln_worker_state gauge
kiln_worker_state{device="0",state="backoff",worker="w0.0"} 0
kiln_worker_state{device="0",state="busy",worker="w0.0"} 0
kiln_worker_state{device="0",state="ready",worker="w0.0"} 1
kiln_worker_state{device="0",state="recycling",worker="w0.0"} 0
kiln_worker_state{device="0",state="starting",worker="w0.0"} 0
kiln_worker_state{device="0",state="stopped",worker="w0.0"} 0
kiln_worker_state{device="0",state="stopping",worker="w0.0"} 0
`), "kiln_worker_state") == nil
	})
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}
