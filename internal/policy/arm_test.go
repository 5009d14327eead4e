package policy

import (
	"context"
	"testing"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// TestArmPinsItsVersion checks that an arm answers with its own version
// while another is active, and that the active policy is left alone.
func TestArmPinsItsVersion(t *testing.T) {
	h := newTestHost(t, Config{Scheduling: "priority"})
	jobs, workers, _ := sampleViews()
	arm, err := h.Arm(context.Background(), abi.KindScheduling, "fifo", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := arm.Scheduler().Next(jobs, workers); got != "b1" {
		t.Errorf("fifo arm chose %q, want b1 (submission order)", got)
	}
	if got, _ := h.Scheduler().Next(jobs, workers); got != "i2" {
		t.Errorf("active priority chose %q, want i2", got)
	}
	if got := h.ActiveRef(abi.KindScheduling); got != "priority@1" {
		t.Errorf("active is %s after asking an arm, want priority@1", got)
	}
	if arm.Ref() != "fifo@1" || arm.Calls() != 1 {
		t.Errorf("arm %s calls %d, want fifo@1 and 1", arm.Ref(), arm.Calls())
	}
	if arm.Balancer() != nil || arm.Evictor() != nil || arm.Batcher() != nil {
		t.Error("a scheduling arm handed out adapters of other kinds")
	}
	base, err := h.ActiveArm(abi.KindScheduling)
	if err != nil || base.Ref() != "priority@1" {
		t.Fatalf("ActiveArm = %v, %v", base, err)
	}
	if _, err := h.Arm(context.Background(), abi.KindScheduling, "no-such", 0); err == nil {
		t.Error("Arm of an unknown policy did not fail")
	}
}

// TestArmFaultDoesNotRollBack checks that a faulting candidate arm falls
// back natively and counts faults, without touching the active policy.
func TestArmFaultDoesNotRollBack(t *testing.T) {
	wasm := wasmOf(t, "hostile")
	h := newTestHost(t, Config{MaxFaults: 1})
	if _, err := h.Load(context.Background(), abi.KindScheduling, "hostile", wasm, false, "test"); err != nil {
		t.Fatal(err)
	}
	arm, err := h.Arm(context.Background(), abi.KindScheduling, "hostile", 0)
	if err != nil {
		t.Fatal(err)
	}
	before := h.ActiveRef(abi.KindScheduling)
	arm.v.values.Store(&[]float64{6}) // mode 6: an error status, a fault
	jobs, workers, _ := sampleViews()
	for range 3 {
		arm.Scheduler().Next(jobs, workers)
	}
	if arm.Faults() != 3 {
		t.Errorf("faults = %d, want 3", arm.Faults())
	}
	if got := h.ActiveRef(abi.KindScheduling); got != before {
		t.Errorf("active changed from %s to %s", before, got)
	}
}

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		in      string
		name    string
		num     int
		wantErr bool
	}{
		{in: "fifo", name: "fifo"},
		{in: "my-pol@3", name: "my-pol", num: 3},
		{in: "x@0", wantErr: true},
		{in: "x@y", wantErr: true},
		{in: "Bad", wantErr: true},
		{in: "", wantErr: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			n, v, err := ParseRef(tc.in)
			if (err != nil) != tc.wantErr || (!tc.wantErr && (n != tc.name || v != tc.num)) {
				t.Errorf("ParseRef(%q) = %q, %d, %v", tc.in, n, v, err)
			}
		})
	}
}

// TestArmWithParams checks that a tuned arm has values of its own while
// the version it copies keeps its defaults.
func TestArmWithParams(t *testing.T) {
	h := newTestHost(t, Config{Scheduling: "priority"})
	arm, err := h.ArmWithParams(context.Background(), abi.KindScheduling, "priority", 0, map[string]float64{"max_wait_ms": 5000})
	if err != nil {
		t.Fatal(err)
	}
	if got := arm.Params()["max_wait_ms"]; got != 5000 {
		t.Errorf("arm's max_wait_ms = %v, want 5000", got)
	}
	base, _ := h.ActiveArm(abi.KindScheduling)
	if got := base.Params()["max_wait_ms"]; got != 30000 {
		t.Errorf("the active version's max_wait_ms = %v, want its default 30000", got)
	}
	jobs, workers, _ := sampleViews()
	if got, _ := arm.Scheduler().Next(jobs, workers); got != "i2" {
		t.Errorf("tuned arm chose %q, want i2", got)
	}
	for _, bad := range []map[string]float64{{"no_such": 1}, {"max_wait_ms": -1}} {
		if _, err := h.ArmWithParams(context.Background(), abi.KindScheduling, "priority", 0, bad); err == nil {
			t.Errorf("ArmWithParams(%v) did not fail", bad)
		}
	}
}
