package policy

import (
	"testing"

	"github.com/kiln-gpu/kiln/internal/decision"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// TestConvNumbersPerDecision checks the view conversion that every adapter
// shares: models are numbered densely in first-use order and anew in each
// decision (the interner's map outlives decisions), a running job finds its
// worker's index, and batch keys start at 1 with equal keys sharing one.
func TestConvNumbersPerDecision(t *testing.T) {
	workers := []decision.WorkerView{
		{ID: "w0", Resident: []decision.ResidentModel{{Model: "a", Bytes: 1}, {Model: "b", Bytes: 2}}},
		{ID: "w1", Resident: []decision.ResidentModel{{Model: "b", Bytes: 2}}},
		{ID: "w2"},
	}
	c := getConv()
	ws := c.workerList(nil, workers)
	var j1, j2, j3 abi.Job
	c.job(&j1, &decision.JobView{Models: []string{"c", "a"}, BatchKey: "k1", Running: true, Worker: "w2"})
	c.job(&j2, &decision.JobView{Models: []string{"b"}, BatchKey: "k1", Running: true, Worker: "gone"})
	c.job(&j3, &decision.JobView{Models: []string{"c"}, BatchKey: "k2"})
	if got := [][]uint32{ws[0].Resident, ws[1].Resident}; len(got[0]) != 2 || got[0][0] != 0 || got[0][1] != 1 || got[1][0] != 1 {
		t.Errorf("residency ids = %v, want [[0 1] [1]]", got)
	}
	if j1.Models[0] != 2 || j1.Models[1] != 0 || len(c.infos) != 3 || c.infos[1].Bytes != 2 {
		t.Errorf("job models = %v, infos = %+v", j1.Models, c.infos)
	}
	if j1.Worker != 2 || j2.Worker != abi.NoWorker || j3.Worker != abi.NoWorker {
		t.Errorf("workers = %d, %d, %d; want 2, none, none", j1.Worker, j2.Worker, j3.Worker)
	}
	if j1.BatchKey != 1 || j2.BatchKey != 1 || j3.BatchKey != 2 {
		t.Errorf("batch keys = %d, %d, %d; want 1, 1, 2", j1.BatchKey, j2.BatchKey, j3.BatchKey)
	}
	putConv(c)

	// The next decision numbers from 0 again, whatever the last one saw.
	c = getConv()
	defer putConv(c)
	var j abi.Job
	c.job(&j, &decision.JobView{Models: []string{"b", "z"}, BatchKey: "k2"})
	if j.Models[0] != 0 || j.Models[1] != 1 || len(c.infos) != 2 || j.BatchKey != 1 {
		t.Errorf("second decision: models %v, %d infos, key %d; want [0 1], 2, 1", j.Models, len(c.infos), j.BatchKey)
	}
}
