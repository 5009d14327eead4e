package dispatch

import (
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/kernel/job"
)

// LiveJob is one job for RunLiveOrder: its class and models.
type LiveJob struct {
	Class  job.Class
	Models []string
}

// RunLiveOrder runs jobs through a live Dispatcher with the given policies
// on one device with one worker process (the stub worker of these tests),
// all of them queued before the dispatcher starts, and returns the order in
// which they started, as indices into jobs. It is exported for the
// simulator agreement test (package dispatch_test), which cannot import
// package sim from here.
func RunLiveOrder(t *testing.T, deviceMemory uint64, models map[string]int64, policies Options, jobs []LiveJob) []int {
	t.Helper()
	index := map[string]int{}
	r := newRigWith(t, rigConfig{deviceMemory: deviceMemory, perDevice: 1, models: models, policies: policies,
		before: func(r *rig) {
			for i, j := range jobs {
				index[r.submit(j.Class, `{}`, j.Models...)] = i
			}
		}})
	var order []int
	finished := 0
	timeout := time.After(60 * time.Second)
	for finished < len(jobs) {
		select {
		case e := <-r.events:
			switch e.Type {
			case EventStarted:
				order = append(order, index[e.JobID])
			case EventFinished:
				finished++
			}
		case <-timeout:
			t.Fatalf("%d of %d jobs finished; started %v", finished, len(jobs), order)
		}
	}
	return order
}
