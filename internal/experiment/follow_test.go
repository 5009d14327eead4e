package experiment

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/job"
)

// TestFollowRoutingExperiment: a routing experiment started on one node is
// followed by another: the follower routes the jobs submitted to it by
// the controller's arms, in the controller's shares, tags each, and the
// controller counts the follower's tagged jobs for their arms when they
// end — and counts nothing of another experiment's or step's tags. A
// follower refuses experiments of its own, and stops with the leader.
func TestFollowRoutingExperiment(t *testing.T) {
	ctx := context.Background()
	lead := newDriver(t, defaultWorkload(), 7, "priority", testConfig(), "")
	follower := newDriver(t, defaultWorkload(), 8, "priority", testConfig(), "")
	if _, ok := lead.ctl.Leading(); ok {
		t.Fatal("Leading with no experiment running")
	}
	rec, err := lead.ctl.Start(ctx, Spec{Kind: "routing", Policy: "random", Type: AB})
	if err != nil {
		t.Fatal(err)
	}
	spec, ok := lead.ctl.Leading()
	if !ok || spec.ID != rec.ID || spec.Shares[Candidate] != 0.5 || spec.Arms[Candidate].Name != "random" {
		t.Fatalf("Leading = %+v, %v; want %s at 50%% with random as the candidate", spec, ok, rec.ID)
	}
	if err := follower.ctl.FollowRouting(ctx, &spec); err != nil {
		t.Fatal(err)
	}
	if got := follower.ctl.FollowedRouting(); got != rec.ID {
		t.Fatalf("FollowedRouting = %q, want %s", got, rec.ID)
	}
	if _, err := follower.ctl.Start(ctx, Spec{Kind: "routing", Policy: "random", Type: AB}); !errors.Is(err, ErrBusy) {
		t.Errorf("a follower started an experiment of its own: %v", err)
	}
	if d := follower.router.nodeSplit(); d != nil {
		t.Error("following a routing experiment splits the node's own decisions")
	}

	split := follower.router.RouteSplit(fixedRouter("base"))
	var tags []Tag
	var per [2]int
	for i := range 40 {
		id := fmt.Sprintf("f%03d", i)
		req := decision.RouteRequest{Job: decision.JobView{ID: id, Class: job.Batch, EstimatedCost: 1},
			Nodes: []decision.NodeView{{ID: "n1", Healthy: true, Workers: 1}, {ID: "n2", Healthy: true, Workers: 1}}}
		if node, ok := split.Route(req); !ok || node == "base" {
			t.Fatalf("the follower routed job %s to %q, %v: not by an arm", id, node, ok)
		}
		tag, ok := follower.router.Tag(id)
		if !ok || tag.ID != rec.ID || tag.Step != 0 {
			t.Fatalf("job %s: Tag = %+v, %v; want a tag of %s step 0", id, tag, ok, rec.ID)
		}
		tags = append(tags, tag)
		per[tag.Arm]++
	}
	if per[Baseline] != 20 || per[Candidate] != 20 {
		t.Errorf("the follower's 40 jobs went %v to the baseline and candidate; want 20 and 20 (the leader's shares)", per)
	}

	// The leader counts them when the registry says they ended.
	now := lead.clk.Now()
	for i, tag := range tags {
		j := &job.Job{ID: fmt.Sprintf("f%03d", i), Class: job.Batch, State: job.Done,
			CreatedAt: now.Add(-3 * time.Second), StartedAt: now.Add(-2 * time.Second), FinishedAt: now}
		lead.ctl.ObserveClusterTagged(j, &tag)
	}
	stale := Tag{ID: "exp-other", Arm: Candidate}
	lead.ctl.ObserveClusterTagged(&job.Job{ID: "x1", State: job.Done, CreatedAt: now.Add(-time.Second), FinishedAt: now}, &stale)
	later := Tag{ID: rec.ID, Step: 3, Arm: Candidate}
	lead.ctl.ObserveClusterTagged(&job.Job{ID: "x2", State: job.Done, CreatedAt: now.Add(-time.Second), FinishedAt: now}, &later)
	lead.ctl.mu.Lock()
	counted := [2]int{lead.ctl.run.step[Baseline].n, lead.ctl.run.step[Candidate].n}
	lead.ctl.mu.Unlock()
	if counted != per {
		t.Errorf("the leader counted %v of the follower's jobs (baseline, candidate), want %v; another experiment's or step's tags must count nothing", counted, per)
	}

	// The leader's end: the follower's next heartbeat has no experiment.
	if err := follower.ctl.FollowRouting(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if follower.router.Active() || follower.ctl.FollowedRouting() != "" {
		t.Error("the follower still splits after the experiment ended")
	}
	if node, ok := split.Route(decision.RouteRequest{Job: decision.JobView{ID: "after"}}); !ok || node != "base" {
		t.Errorf("after the end, routed to %q; want the active policy's", node)
	}
}

// TestFollowRoutingRefusals: a node running its own experiment does not
// follow another's, and a follower whose version of an arm has other
// bytes than the leader's refuses to take part rather than split its jobs
// between policies that are not the experiment's.
func TestFollowRoutingRefusals(t *testing.T) {
	ctx := context.Background()
	lead := newDriver(t, defaultWorkload(), 7, "priority", testConfig(), "")
	other := newDriver(t, defaultWorkload(), 9, "priority", testConfig(), "")
	if _, err := lead.ctl.Start(ctx, Spec{Kind: "routing", Policy: "random", Type: AB}); err != nil {
		t.Fatal(err)
	}
	spec, _ := lead.ctl.Leading()
	if _, err := other.ctl.Start(ctx, Spec{Kind: "routing", Policy: "least-loaded", Type: AB}); err != nil {
		t.Fatal(err)
	}
	if err := other.ctl.FollowRouting(ctx, &spec); !errors.Is(err, ErrBusy) {
		t.Errorf("a node running its own experiment followed another: %v", err)
	}
	third := newDriver(t, defaultWorkload(), 10, "priority", testConfig(), "")
	bad := spec
	bad.Arms[Candidate].SHA = "0000"
	if err := third.ctl.FollowRouting(ctx, &bad); err == nil || third.router.Active() {
		t.Errorf("followed with a candidate of other bytes: %v", err)
	}
}

// TestFollowRoutingSwitchback: a follower of a routing switchback routes
// each job by the arm of the window it is placed in — the leader's
// windows, counted from the leader's start — and tags it with that window;
// a job placed in a window's burn-in is tagged to be discarded, and the
// leader counts it as discarded, not for its arm.
func TestFollowRoutingSwitchback(t *testing.T) {
	ctx := context.Background()
	lead := newDriver(t, defaultWorkload(), 7, "priority", testConfig(), "")
	follower := newDriver(t, defaultWorkload(), 8, "priority", testConfig(), "")
	rec, err := lead.ctl.Start(ctx, Spec{Kind: "routing", Policy: "random", Type: Switchback,
		Window: Duration(2 * time.Minute), BurnIn: Duration(20 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	spec, ok := lead.ctl.Leading()
	if !ok || spec.Type != Switchback || spec.Window != 2*time.Minute || len(spec.Windows) == 0 {
		t.Fatalf("Leading = %+v, %v; want the switchback's windows", spec, ok)
	}
	if err := follower.ctl.FollowRouting(ctx, &spec); err != nil {
		t.Fatal(err)
	}
	split := follower.router.RouteSplit(fixedRouter("base"))
	route := func(id string) Tag {
		t.Helper()
		req := decision.RouteRequest{Job: decision.JobView{ID: id, Class: job.Batch, EstimatedCost: 1},
			Nodes: []decision.NodeView{{ID: "n1", Healthy: true, Workers: 1}, {ID: "n2", Healthy: true, Workers: 1}}}
		if _, ok := split.Route(req); !ok {
			t.Fatalf("job %s not routed", id)
		}
		tag, ok := follower.router.Tag(id)
		if !ok || tag.ID != rec.ID {
			t.Fatalf("job %s: Tag = %+v, %v", id, tag, ok)
		}
		return tag
	}
	var counted [2]int
	discarded := 0
	var at time.Duration // the follower's clock, from epoch
	setTo := func(d time.Duration) { follower.clk.Advance(d - at); at = d }
	for w := range 6 {
		// Both drivers' fake clocks start at the same instant: the
		// follower's window w is the leader's.
		base := time.Duration(w) * 2 * time.Minute
		setTo(base + 5*time.Second) // in the burn-in
		burn := route(fmt.Sprintf("b%d", w))
		setTo(base + time.Minute)
		tag := route(fmt.Sprintf("j%d", w))
		want := spec.Windows[w%len(spec.Windows)]
		if tag.Window != w || tag.Arm != want || tag.Discard || !burn.Discard || burn.Window != w {
			t.Fatalf("window %d: tags %+v (burn-in %+v); want window %d, arm %d, the burn-in's discarded", w, tag, burn, w, want)
		}
		now := epoch.Add(base + 90*time.Second)
		for _, x := range []Tag{burn, tag} {
			j := &job.Job{ID: fmt.Sprintf("%v", x), Class: job.Batch, State: job.Done,
				CreatedAt: now.Add(-20 * time.Second), StartedAt: now.Add(-10 * time.Second), FinishedAt: now}
			lead.ctl.ObserveClusterTagged(j, &x)
		}
		counted[want]++
		discarded++
	}
	lead.ctl.mu.Lock()
	got := [2]int{lead.ctl.run.step[Baseline].n, lead.ctl.run.step[Candidate].n}
	gotDiscarded := lead.ctl.run.step[Baseline].discarded + lead.ctl.run.step[Candidate].discarded
	lead.ctl.mu.Unlock()
	if got != counted || gotDiscarded != discarded {
		t.Errorf("leader counted %v and discarded %d; want %v and %d", got, gotDiscarded, counted, discarded)
	}
}

// TestFollowRoutingCanarySteps: a follower takes a canary's next step
// (its new shares) when the leader's heartbeat carries it, and the leader
// counts a follower's job only for the step that routed it, as it counts
// its own.
func TestFollowRoutingCanarySteps(t *testing.T) {
	ctx := context.Background()
	lead := newDriver(t, defaultWorkload(), 7, "priority", testConfig(), "")
	follower := newDriver(t, defaultWorkload(), 8, "priority", testConfig(), "")
	if _, err := lead.ctl.Start(ctx, Spec{Kind: "routing", Policy: "random", Type: Canary, Steps: []int{10, 50, 100}}); err != nil {
		t.Fatal(err)
	}
	first, _ := lead.ctl.Leading()
	if err := follower.ctl.FollowRouting(ctx, &first); err != nil {
		t.Fatal(err)
	}
	route := func(id string) (Tag, bool) {
		req := decision.RouteRequest{Job: decision.JobView{ID: id, Class: job.Batch, EstimatedCost: 1},
			Nodes: []decision.NodeView{{ID: "n1", Healthy: true, Workers: 1}, {ID: "n2", Healthy: true, Workers: 1}}}
		follower.router.RouteSplit(fixedRouter("base")).Route(req)
		return follower.router.Tag(id)
	}
	shareOf := func(prefix string) float64 {
		tagged := 0
		for i := range 100 {
			if tag, ok := route(fmt.Sprintf("%s%d", prefix, i)); ok && tag.Arm == Candidate {
				tagged++
			}
		}
		return float64(tagged) / 100
	}
	if got := shareOf("s0-"); got < 0.05 || got > 0.15 {
		t.Fatalf("step 0 (10%%): the follower gave the candidate %.2f of its jobs", got)
	}
	var old Tag
	oldID := ""
	for i := 0; oldID == "" && i < 100; i++ {
		if tag, ok := route(fmt.Sprintf("old%d", i)); ok {
			old, oldID = tag, fmt.Sprintf("old%d", i)
		}
	}
	if oldID == "" || old.Step != 0 {
		t.Fatalf("no job of step 0 tagged for an arm (%+v)", old)
	}

	lead.ctl.mu.Lock()
	lead.ctl.startStep(lead.ctl.run, lead.clk.Now(), 1, nil)
	lead.ctl.mu.Unlock()
	second, _ := lead.ctl.Leading()
	if second.Step != 1 || second.Shares[Candidate] != 0.5 {
		t.Fatalf("the leader's next step: %+v", second)
	}
	if err := follower.ctl.FollowRouting(ctx, &second); err != nil {
		t.Fatal(err)
	}
	if got := shareOf("s1-"); got < 0.4 || got > 0.6 {
		t.Fatalf("step 1 (50%%): the follower gave the candidate %.2f of its jobs", got)
	}
	now := lead.clk.Now()
	j := &job.Job{ID: oldID, Class: job.Batch, State: job.Done, CreatedAt: now.Add(-time.Second), FinishedAt: now}
	lead.ctl.ObserveClusterTagged(j, &old)
	lead.ctl.mu.Lock()
	n := lead.ctl.run.step[Baseline].n + lead.ctl.run.step[Candidate].n
	lead.ctl.mu.Unlock()
	if n != 0 {
		t.Errorf("the leader counted a job of step 0 in step 1 (%d counted)", n)
	}
}
