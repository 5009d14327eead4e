package experiment

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// A routing experiment over the whole cluster. The node it was started on
// (the controller) judges it; every other node follows it: it splits the
// jobs submitted to it between the same two routing policies, with the
// controller's shares, seed and switchback windows, and tags each job's
// record with the experiment, step and arm (Tag). The controller counts
// every tagged job that ends, wherever it was submitted and wherever it
// ran, from the cluster's registry (ObserveClusterTagged). The split
// travels in the controller's heartbeat (internal/cluster), so a follower
// starts within a heartbeat of the start or of a new canary step, and
// stops within the heartbeat's TTL of the end or of the controller's
// death.
//
// Each follower assigns its own jobs as the controller assigns its own
// (stratified by class and models, balanced on work, deterministic given
// the seed): both arms get the same mix on every node, so pooling the
// nodes' jobs keeps the arms' mixes equal.

// FollowSpec is what a follower needs of a routing experiment.
type FollowSpec struct {
	ID string `json:"id"`
	// Node is the node that runs the experiment (set by the cluster's
	// wiring: the controller does not know its node's name).
	Node string `json:"node,omitempty"`
	Type Type   `json:"type"`
	Step int    `json:"step"`
	Seed uint64 `json:"seed"`
	// Shares are the step's baseline, candidate and production shares of
	// the jobs.
	Shares [3]float64 `json:"shares"`
	// Start, Window, BurnIn and Windows are a switchback's: window i
	// starts at Start + i × Window and is routed by arm Windows[i mod n].
	Start   time.Time     `json:"start"`
	Window  time.Duration `json:"window_ns,omitempty"`
	BurnIn  time.Duration `json:"burn_in_ns,omitempty"`
	Windows []int         `json:"windows,omitempty"`
	// Arms are the baseline's and the candidate's policies.
	Arms [2]FollowArm `json:"arms"`
}

// FollowArm names one arm's routing policy as the controller pinned it. A
// follower uses its own version of the same name and number only if its
// bytes are the same (SHA): policies are loaded on each node, and numbers
// count each node's own loads.
type FollowArm struct {
	Name   string             `json:"name"`
	Number int                `json:"number"`
	SHA    string             `json:"sha,omitempty"`
	Params map[string]float64 `json:"params,omitempty"`
}

// Tag is what a job's cluster record says of the routing experiment that
// routed it: the experiment, its step, the arm, and for a switchback the
// window and whether the job was placed in its burn-in (not counted).
type Tag struct {
	ID      string `json:"id"`
	Step    int    `json:"step"`
	Arm     int    `json:"arm"`
	Window  int    `json:"window,omitempty"`
	Discard bool   `json:"discard,omitempty"`
}

// ErrFollowing refuses a new experiment on a node that follows another
// node's routing experiment: its routing is that experiment's.
var ErrFollowing = errors.New("this node follows another node's routing experiment")

// Leading is the routing experiment this node runs, as its followers need
// it; false when none runs (or another kind does).
func (c *Controller) Leading() (FollowSpec, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.run
	if a == nil || a.kind != abi.KindRouting || a.r == nil {
		return FollowSpec{}, false
	}
	r := a.r
	f := FollowSpec{ID: a.rec.ID, Type: r.typ, Step: a.rec.Step, Seed: r.seed, Shares: r.shares,
		Start: r.start, Window: r.window, BurnIn: r.burnIn, Windows: r.windows}
	for i, arm := range a.arms {
		f.Arms[i] = FollowArm{Name: arm.Name(), Number: arm.Number(), SHA: arm.SHA(), Params: arm.Params()}
	}
	return f, true
}

// FollowRouting makes this node split the jobs submitted to it as f says (nil:
// stop following). Calling it again with the same experiment and step
// changes nothing; a new step installs the new shares. It refuses while
// this node runs an experiment of its own, and when this node lacks
// either arm's policy with the controller's bytes.
func (c *Controller) FollowRouting(ctx context.Context, f *FollowSpec) error {
	if f == nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.following = nil
		if cur := c.router.cur.Load(); cur != nil && cur.follows != "" {
			c.router.set(nil)
			c.log.Info().Str("experiment", cur.follows).Msg("stopped following the cluster's routing experiment")
		}
		return nil
	}
	if f.Type == Switchback && (f.Window <= 0 || len(f.Windows) == 0) {
		return fmt.Errorf("%w: switchback without windows", ErrInvalid)
	}
	if cur := c.router.cur.Load(); cur != nil && cur.follows == f.ID && cur.step == f.Step {
		return nil
	}
	// The arms are pinned without the controller's lock, as Start pins
	// its own: a built-in not loaded yet is compiled first.
	var arms [2]*policy.Arm
	for i, fa := range f.Arms {
		if c.host == nil {
			return errors.New("experiments: no policy host")
		}
		arm, err := c.host.ArmWithParams(ctx, abi.KindRouting, fa.Name, fa.Number, fa.Params)
		if err != nil {
			return fmt.Errorf("%s arm %s@%d: %w", armNames[i], fa.Name, fa.Number, err)
		}
		if fa.SHA != "" && arm.SHA() != fa.SHA {
			return fmt.Errorf("%s arm %s@%d: this node's version has other bytes than the controller's (load the same policy here)", armNames[i], fa.Name, fa.Number)
		}
		arms[i] = arm
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.run != nil {
		return fmt.Errorf("%w: %s runs here", ErrBusy, c.run.rec.ID)
	}
	cur := c.router.cur.Load()
	following := cur != nil && cur.follows != ""
	r := &routing{kind: abi.KindRouting, typ: f.Type, unit: Traffic, seed: f.Seed, arms: arms,
		shares: f.Shares, share: f.Shares[Candidate], start: f.Start, window: f.Window, burnIn: f.BurnIn,
		windows: f.Windows, now: c.clk.Now, placed: map[string]placement{},
		assign: map[string]int8{}, byClass: map[job.Class]*classWork{}, byModels: map[string]*[3]float64{},
		exp: f.ID, step: f.Step, follows: f.ID}
	if f.Type == Switchback {
		r.unit = Windows
	}
	c.router.set(r)
	spec := *f
	c.following = &spec
	if !following || cur.follows != f.ID {
		c.log.Info().Str("experiment", f.ID).Str("type", string(f.Type)).Str("candidate", arms[Candidate].Ref()).
			Str("baseline", arms[Baseline].Ref()).Msg("following the cluster's routing experiment: jobs submitted here are split between its arms")
	}
	return nil
}

// FollowedRouting names the routing experiment this node follows ("" if none).
func (c *Controller) FollowedRouting() string {
	if r := c.router.cur.Load(); r != nil {
		return r.follows
	}
	return ""
}

// Following is what GET /v1/experiments says of the routing experiment of
// another node that this node follows.
type Following struct {
	Experiment string `json:"experiment"`
	Node       string `json:"node,omitempty"`
	Type       Type   `json:"type"`
	Step       int    `json:"step"`
	// Candidate and Baseline name the arms' routing policies.
	Candidate string `json:"candidate"`
	Baseline  string `json:"baseline"`
	// Share is the candidate's share of this node's jobs, in percent.
	Share int `json:"share"`
}

// FollowingNow describes the routing experiment this node follows; false
// when it follows none.
func (c *Controller) FollowingNow() (Following, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.router.cur.Load()
	if r == nil || r.follows == "" || c.following == nil {
		return Following{}, false
	}
	f := c.following
	return Following{Experiment: f.ID, Node: f.Node, Type: f.Type, Step: f.Step,
		Candidate: r.arms[Candidate].Ref(), Baseline: r.arms[Baseline].Ref(),
		Share: int(f.Shares[Candidate]*100 + 0.5)}, true
}

// Tag is the routing experiment's tag of job id, which the router routed
// by an arm of it: for the job's cluster record. false when no routing
// experiment runs or follows here, or the job went to production (a
// canary step's rest, not counted).
func (rt *Router) Tag(id string) (Tag, bool) {
	r := rt.cur.Load()
	if r == nil || r.kind != abi.KindRouting || r.exp == "" {
		return Tag{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.typ == Switchback {
		p, ok := r.placed[id]
		if r.follows != "" {
			delete(r.placed, id) // a follower counts nothing itself
		}
		return Tag{ID: r.exp, Step: r.step, Arm: p.arm, Window: p.window, Discard: p.discard}, ok
	}
	g, ok := r.assign[id]
	if r.follows != "" {
		delete(r.assign, id)
	}
	if !ok || int(g) == Production {
		return Tag{}, false
	}
	return Tag{ID: r.exp, Step: r.step, Arm: int(g)}, true
}

// ObserveClusterTagged counts a job of the cluster's registry that ended,
// on whichever node: by its record's tag when it has one (a job any node
// routed by an arm of the experiment running here), else as
// ObserveCluster does (a job this node routed, before tags).
func (c *Controller) ObserveClusterTagged(j *job.Job, tag *Tag) {
	if tag == nil {
		c.ObserveCluster(j)
		return
	}
	if !c.router.routingExperiment() {
		return
	}
	o, ok := ObservationOf(j, time.Time{})
	if !ok {
		return
	}
	c.observeTagged(o, *tag)
}

// observeTagged is Observe for a job whose arm its tag gives.
func (c *Controller) observeTagged(o Observation, tag Tag) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.run
	if a == nil || a.r == nil || a.rec.ID != tag.ID || a.rec.Step != tag.Step ||
		tag.Arm < 0 || tag.Arm >= len(a.step) {
		return // another experiment's or step's job: that split's, not this one's
	}
	// The controller's own assignment of the job, if it made it, is done.
	a.r.mu.Lock()
	delete(a.r.assign, o.JobID)
	delete(a.r.placed, o.JobID)
	a.r.mu.Unlock()
	if tag.Discard {
		a.step[tag.Arm].discarded++
		return
	}
	c.observeLocked(a, placement{arm: tag.Arm, window: tag.Window}, o)
}
