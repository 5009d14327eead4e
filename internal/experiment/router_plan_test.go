package experiment

import (
	"slices"
	"testing"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// planningScheduler is the priority built-in that plans to preempt "b1"
// whatever it is shown.
type planningScheduler struct{ decision.Scheduler }

func (planningScheduler) PlanIDs(queued, _ []decision.JobView, _ []decision.WorkerView) ([]string, []string) {
	return []string{queued[0].ID}, []string{"b1"}
}

// prefetchingEvictor is the lru built-in that prefetches the last wanted
// model.
type prefetchingEvictor struct{ decision.Evictor }

func (prefetchingEvictor) PrefetchIDs(_ uint64, _ []decision.EntryView, wanted []string, _ []uint64, _ []int) []string {
	return wanted[len(wanted)-1:]
}

var (
	_ decision.Planner    = planningScheduler{}
	_ decision.Prefetcher = prefetchingEvictor{}
)

// TestRouterForwardsPlansAndPrefetches checks that the router, which the
// dispatcher holds in place of the host's adapters, passes preemption plans
// and prefetch choices through when no experiment runs; that it changes
// nothing for policies that make neither (no plan, every wanted model);
// and that it plans no preemption while an experiment runs.
func TestRouterForwardsPlansAndPrefetches(t *testing.T) {
	queued := []decision.JobView{{ID: "i1"}}
	wanted := []string{"a", "b"}
	plan := func(rt *Router) []string {
		_, preempt := rt.PlanIDs(queued, nil, nil)
		return preempt
	}
	prefetch := func(rt *Router) []string { return rt.PrefetchIDs(0, nil, wanted, []uint64{1, 1}, []int{1, 1}) }

	rt := NewRouter(Policies{Scheduler: planningScheduler{policy.Native().Scheduler()}, Evictor: prefetchingEvictor{policy.Native().NewEvictor()}})
	if got := plan(rt); !slices.Equal(got, []string{"b1"}) {
		t.Errorf("PlanIDs preempts %v, want the policy's [b1]", got)
	}
	if got := prefetch(rt); !slices.Equal(got, []string{"b"}) {
		t.Errorf("PrefetchIDs = %v, want the policy's [b]", got)
	}

	// The built-ins wrapped so that only their Next and Victims show: a
	// scheduler without plans, an evictor that does not prefetch.
	plain := NewRouter(Policies{Scheduler: struct{ decision.Scheduler }{policy.Native().Scheduler()},
		Evictor: struct{ decision.Evictor }{policy.Native().NewEvictor()}})
	if got := plan(plain); got != nil {
		t.Errorf("PlanIDs over a scheduler without plans preempts %v", got)
	}
	if got := prefetch(plain); !slices.Equal(got, wanted) {
		t.Errorf("PrefetchIDs over an evictor that does not prefetch = %v, want every wanted model %v", got, wanted)
	}

	// A balancing canary: no preemption may cross its groups, and the
	// eviction policy's prefetch is still the active one's.
	rt.set(&routing{kind: abi.KindBalancing, typ: Canary})
	if got := plan(rt); got != nil {
		t.Errorf("PlanIDs during an experiment preempts %v", got)
	}
	if got := prefetch(rt); !slices.Equal(got, []string{"b"}) {
		t.Errorf("PrefetchIDs during a balancing experiment = %v, want [b]", got)
	}
}
