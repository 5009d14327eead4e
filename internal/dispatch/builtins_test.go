package dispatch

import (
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/policy"
)

// The fallback built-ins' native builds (policy.Native) as plain values,
// for test doubles to embed: each exposes its one method only, so that a
// double is a Planner or a Prefetcher only where the test says so.
type (
	priorityBuiltin    struct{}
	leastLoadedBuiltin struct{}
	lruBuiltin         struct{}
)

func (priorityBuiltin) Next(q []decision.JobView, w []decision.WorkerView) (string, bool) {
	return policy.Native().Scheduler().Next(q, w)
}

func (leastLoadedBuiltin) Place(j decision.JobView, w []decision.WorkerView) (string, bool) {
	return policy.Native().Balancer().Place(j, w)
}

func (lruBuiltin) Victims(need uint64, entries []decision.EntryView) []int {
	return policy.Native().NewEvictor().Victims(need, entries)
}
