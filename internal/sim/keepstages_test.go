package sim

import (
	"context"
	"testing"
	"time"
)

// TestFinishedStagesAreKept: on 48 GiB GPUs, where every job of the big
// models' workload (Flux, SD3.5, SDXL) fits a device whole, the node
// admitting by stage must not reload much more than one admitting whole
// jobs. A finished stage's models unpinned at once were what the device's
// other worker evicted first, and the next job loaded them again: 2.9×
// the whole-job node's cold loads (BENCHMARKS.md, issue 16's stages). A
// job that fits whole now keeps them pinned while its stages find room,
// and any other job keeps them as evicted last (dispatch jobHold.enter).
func TestFinishedStagesAreKept(t *testing.T) {
	cold := map[bool]int64{}
	for _, whole := range []bool{false, true} {
		cfg := defaultNode(t, 48<<30)
		cfg.WholeJobAdmission = whole
		s, err := newSimulator(context.Background(), cfg.withDefaults(), bigModels(), &Trace{Requests: bigTrace(400, 0.12, 1)}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.run(context.Background()); err != nil {
			t.Fatal(err)
		}
		rep := s.report(time.Second, 1)
		s.host.Close()
		if rep.Completed != 400 {
			t.Fatalf("whole=%v: %d of 400 jobs completed", whole, rep.Completed)
		}
		cold[whole] = rep.ColdLoads
	}
	t.Logf("cold loads on 48 GiB: by stage %d, whole jobs %d", cold[false], cold[true])
	if float64(cold[false]) > 1.5*float64(cold[true]) {
		t.Errorf("by stage %d cold loads, whole jobs %d: stages reload what finished stages let go", cold[false], cold[true])
	}
}
