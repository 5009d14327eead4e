package policy

import (
	"context"
	"errors"
	"testing"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// TestWatchHook: activate, set and the watch's undo of each reach the
// subscribers and the change log, and an undo of a superseded change is
// refused rather than undoing the newer one.
func TestWatchHook(t *testing.T) {
	h := newTestHost(t, Config{Scheduling: "priority", Balancing: "affinity"})
	var got []ChangeEvent
	h.OnChange(func(e ChangeEvent) { got = append(got, e) })
	ctx := context.Background()
	k := abi.KindScheduling
	if _, err := h.Activate(ctx, k, "fifo", 0, "by hand"); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Action != "activate" || got[0].From != "priority@1" || got[0].To != "fifo@1" || got[0].Reason != "by hand" {
		t.Fatalf("after activate: events %+v", got)
	}
	if _, err := h.WatchRollback(k, "edf@1", "wrong target"); !errors.Is(err, ErrSuperseded) {
		t.Errorf("WatchRollback of a change not active: %v; want ErrSuperseded", err)
	}
	if _, err := h.WatchRollback(k, "fifo@1", "latency +40%"); err != nil {
		t.Fatal(err)
	}
	if ref := h.ActiveRef(k); ref != "priority@1" {
		t.Errorf("after watch-rollback active is %s; want priority@1", ref)
	}
	ki := kindInfo(t, h, k)
	last := ki.Changes[len(ki.Changes)-1]
	if last.Action != "watch-rollback" || last.Reason != "latency +40%" || last.From != "fifo@1" {
		t.Errorf("change log ends with %+v", last)
	}
	// A watch-rollback is a rollback: it leaves nothing to roll back to.
	if _, err := h.Rollback(k, "again"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Rollback after a watch-rollback: %v; want ErrNotFound", err)
	}

	b := abi.KindBalancing
	got = nil
	if err := h.SetParam(b, "spill", 7); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Action != "set" || got[0].After["spill"] != 7 {
		t.Fatalf("after set: events %+v", got)
	}
	before := got[0].Before["spill"]
	if err := h.SetParam(b, "spill", 7); err != nil || len(got) != 1 {
		t.Errorf("setting the same value again: err %v, %d events; want no event", err, len(got))
	}
	ref := h.ActiveRef(b)
	if err := h.WatchRestoreParams(b, ref, got[0].Before, map[string]float64{"spill": 8}, "x"); !errors.Is(err, ErrSuperseded) {
		t.Errorf("restore when the values moved on: %v; want ErrSuperseded", err)
	}
	if err := h.WatchRestoreParams(b, ref, got[0].Before, got[0].After, "load time +30%"); err != nil {
		t.Fatal(err)
	}
	arm, err := h.ActiveArm(b)
	if err != nil {
		t.Fatal(err)
	}
	if v := arm.Params()["spill"]; v != before {
		t.Errorf("after restore spill = %v; want %v", v, before)
	}
	ki = kindInfo(t, h, b)
	if n := len(ki.Changes); n < 2 || ki.Changes[n-2].Action != "set" || ki.Changes[n-1].Action != "watch-rollback" {
		t.Errorf("balancing change log %+v; want … set, watch-rollback", ki.Changes)
	}
}
