package policy

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// Arm is one loaded policy version held fixed, whatever the kind's active
// policy is: an experiment's baseline or candidate. Its adapters answer
// with that version only, and a fault falls back to the native policy
// without rolling the kind back (rolling back a candidate is the
// experiment's call, not the fault counter's).
//
// An Arm is a view of the host: it shares the version's compiled module,
// instance pool and counters, and needs no Close.
type Arm struct {
	v    *version
	view *Host

	sched Scheduler
	bal   Balancer
	batch Batcher
	evict Evictor
	route Router
}

// ParseRef splits "name" or "name@version" (version 0: the newest).
func ParseRef(ref string) (name string, number int, err error) {
	name, num, ok := strings.Cut(ref, "@")
	if !ok {
		return name, 0, checkName(name)
	}
	if number, err = strconv.Atoi(num); err != nil || number < 1 {
		return "", 0, fmt.Errorf("policy %q: version must be a positive number", ref)
	}
	return name, number, checkName(name)
}

// Arm returns a version-pinned view of name@number of kind k (number 0:
// the newest). A built-in not loaded yet is loaded, but not activated.
func (h *Host) Arm(ctx context.Context, k abi.Kind, name string, number int) (*Arm, error) {
	s, ok := h.slots[k]
	if !ok {
		return nil, fmt.Errorf("policy arm: unknown kind %d", k)
	}
	v, err := h.findOrLoadBuiltin(ctx, s, name, number)
	if err != nil {
		return nil, fmt.Errorf("policy arm: %w", err)
	}
	return h.armOf(v), nil
}

// ActiveArm returns a view pinned to kind k's active version now.
func (h *Host) ActiveArm(k abi.Kind) (*Arm, error) {
	s, ok := h.slots[k]
	if !ok {
		return nil, fmt.Errorf("policy arm: unknown kind %d", k)
	}
	return h.armOf(s.active.Load()), nil
}

// ActiveRef names kind k's active version ("name@number").
func (h *Host) ActiveRef(k abi.Kind) string {
	if s, ok := h.slots[k]; ok {
		return s.active.Load().ref()
	}
	return ""
}

// armOf builds the view: a host that shares h's runtime, config and clock
// but whose only slot holds v as its active version and has no previous
// version, so that the adapters (written against "the active version")
// ask v, and a fault is counted on v without any swap.
func (h *Host) armOf(v *version) *Arm {
	view := &Host{cfg: h.cfg, log: h.log, clk: h.clk, rt: h.rt, cache: h.cache, fsys: h.fsys, ctx: h.ctx, cancel: func() {},
		slots: map[abi.Kind]*slot{}}
	sl := &slot{kind: v.kind}
	sl.active.Store(v)
	sl.versions = []*version{v}
	view.slots[v.kind] = sl
	a := &Arm{v: v, view: view}
	a.sched = Scheduler{h: view}
	a.bal = Balancer{h: view}
	a.batch = Batcher{h: view}
	a.route = Router{h: view}
	a.evict = Evictor{h: view, tags: map[entryKey]uint64{}}
	return a
}

// Ref names the arm's version ("name@number").
func (a *Arm) Ref() string { return a.v.ref() }

// Name is the arm's policy name.
func (a *Arm) Name() string { return a.v.name }

// SHA is the SHA-256 of the version's WASM bytes ("" for a native build),
// which tells whether two nodes' versions of one name are the same policy.
func (a *Arm) SHA() string { return a.v.sha }

// Number is the arm's version number.
func (a *Arm) Number() int { return a.v.number }

// Kind is the arm's policy kind.
func (a *Arm) Kind() abi.Kind { return a.v.kind }

// Faults counts the version's failed decisions since it was loaded, as an
// arm or as the active policy.
func (a *Arm) Faults() int64 { return a.v.faults.Load() }

// Calls counts the version's decisions since it was loaded.
func (a *Arm) Calls() int64 { return a.v.calls.Load() }

// Scheduler asks the arm's version; nil unless it is a scheduling arm.
func (a *Arm) Scheduler() *Scheduler { return pick(a, abi.KindScheduling, &a.sched) }

// Balancer asks the arm's version; nil unless it is a balancing arm.
func (a *Arm) Balancer() *Balancer { return pick(a, abi.KindBalancing, &a.bal) }

// Batcher asks the arm's version; nil unless it is a batching arm.
func (a *Arm) Batcher() *Batcher { return pick(a, abi.KindBatching, &a.batch) }

// Evictor asks the arm's version; nil unless it is an eviction arm. It
// keeps its own tags and ghosts, apart from the host's evictor.
func (a *Arm) Evictor() *Evictor { return pick(a, abi.KindEviction, &a.evict) }

// NewEvictor returns a further evictor of the arm's version, with tags and
// ghosts of its own, for one more cache (a host tier): what a policy
// remembers about one cache's entries means nothing for another's, as for
// Host.NewEvictor. Nil unless it is an eviction arm.
func (a *Arm) NewEvictor() *Evictor {
	if a.v.kind != abi.KindEviction {
		return nil
	}
	return &Evictor{h: a.view, tags: map[entryKey]uint64{}}
}

// pick returns p when the arm is of kind k: the view has no slot for any
// other kind, so its adapters for them must not be reachable.
func pick[T any](a *Arm, k abi.Kind, p *T) *T {
	if a.v.kind != k {
		return nil
	}
	return p
}

// SetParam sets a tunable parameter of the arm's version, within the
// bounds it declares. The version is shared: if it is also the active
// policy, the active policy changes too.
func (a *Arm) SetParam(name string, value float64) error {
	vals, err := a.v.withParams(map[string]float64{name: value})
	if err != nil {
		return err
	}
	a.v.values.Store(&vals)
	return nil
}

// ArmWithParams is Arm with some of the version's declared parameters set
// to values of the arm's own: the arm asks a private copy of the version
// (the same compiled module and instance pool, its own parameter values,
// state words and counters), so that the baseline, which may run the same
// version, keeps its values. This is how a tuned candidate is canaried.
// Without params it is Arm.
func (h *Host) ArmWithParams(ctx context.Context, k abi.Kind, name string, number int, params map[string]float64) (*Arm, error) {
	a, err := h.Arm(ctx, k, name, number)
	if err != nil || len(params) == 0 {
		return a, err
	}
	v := a.v
	c := &version{name: v.name, number: v.number, kind: v.kind, source: v.source, sha: v.sha, loadedAt: v.loadedAt,
		mod: v.mod, params: v.params}
	if v.native != nil {
		c.native = Builtin(k, v.name)
	}
	vals, err := v.withParams(params)
	if err != nil {
		return nil, err
	}
	c.values.Store(&vals)
	return h.armOf(c), nil
}

// Params are the arm's parameter values, by name.
func (a *Arm) Params() map[string]float64 {
	vals := *a.v.values.Load()
	out := make(map[string]float64, len(a.v.params))
	for i, p := range a.v.params {
		if i < len(vals) {
			out[p.Name] = vals[i]
		}
	}
	return out
}
