package dispatch_test

import (
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/dispatch"
	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/policy"
)

// TestBuiltinPriorityPreemptsThroughTheDispatcher runs the built-in
// priority policy, through the policy host's adapter and the experiment
// router as a node wires them, in a live dispatcher: once the interactive
// job has waited past max_wait_ms (30s) and the batch job has run past
// preempt_min_run, the batch job makes way, runs again after the
// interactive job and finishes once. Short of max_wait_ms the batch job,
// which here never ends by itself, keeps the worker and the test times out.
func TestBuiltinPriorityPreemptsThroughTheDispatcher(t *testing.T) {
	pcfg := policy.Config{Scheduling: "priority", NativeBuiltins: true}
	host, err := policy.NewHost(pcfg.WithDefaults(), zerolog.Nop(), clock.Real())
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	router := experiment.NewRouter(experiment.Policies{Scheduler: host.Scheduler(), Balancer: host.Balancer(),
		Batcher: host.Batcher(), Evictor: host.Evictor()})
	order, b := dispatch.RunPreemption(t, router, 31*time.Second)
	want := []string{"started batch", "preempted batch", "started inter", "finished inter", "started batch", "finished batch"}
	if !slices.Equal(order, want) {
		t.Errorf("events %v\nwant   %v", order, want)
	}
	if b.State != job.Done || b.Attempts != 2 || b.Preemptions != 1 {
		t.Errorf("batch job: state %s, attempts %d, preemptions %d; want done, 2, 1", b.State, b.Attempts, b.Preemptions)
	}
}
