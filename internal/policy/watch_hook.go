package policy

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// ChangeEvent is one change of a kind's active policy or of its
// parameters, as OnChange subscribers see it.
type ChangeEvent struct {
	Time time.Time
	Kind abi.Kind
	// Action is what the host did: activate, rollback, auto-rollback,
	// restore, watch-rollback (a swap of the active version), or set (new
	// parameter values of the active version, From == To).
	Action string
	// From and To are the versions before and after ("name@number").
	From, To string
	Reason   string
	// Before and After are the active version's parameter values before
	// and after a set, by name; nil for a swap.
	Before, After map[string]float64
	// FromArm is pinned to the version a swap moved away from (nil for a
	// set), for a subscriber that must ask it again (the watch's
	// placement replay): the hook runs with the host's lock held, so
	// Host.Arm, which takes it, cannot be called from there.
	FromArm *Arm
}

// changeHooks are the subscribers of each host. They live beside the Host
// rather than in it so that the hook costs host.go one line per call site.
var changeHooks sync.Map // *Host → *hookList

type hookList struct {
	mu sync.Mutex
	fs []func(ChangeEvent)
}

// OnChange adds f to the functions called after every change of an active
// policy or of its parameters (activate, set, rollback, auto-rollback,
// restore, watch-rollback). f runs synchronously, on the goroutine that
// made the change, while the host's lock is held: it must return quickly
// and must not call back into the host (hand the event to a goroutine or
// a queue instead).
func (h *Host) OnChange(f func(ChangeEvent)) {
	v, _ := changeHooks.LoadOrStore(h, &hookList{})
	l := v.(*hookList)
	l.mu.Lock()
	l.fs = append(l.fs, f)
	l.mu.Unlock()
}

// notifyChange calls the subscribers; h.mu is held.
func (h *Host) notifyChange(e ChangeEvent) {
	v, ok := changeHooks.Load(h)
	if !ok {
		return
	}
	l := v.(*hookList)
	l.mu.Lock()
	fs := slices.Clone(l.fs)
	l.mu.Unlock()
	for _, f := range fs {
		f(e)
	}
}

// swapped is swap's hook: it tells the subscribers; h.mu is held.
func (h *Host) swapped(s *slot, old, v *version, action, reason string) {
	h.notifyChange(ChangeEvent{Time: h.clk.Now(), Kind: s.kind, Action: action, From: old.ref(), To: v.ref(), Reason: reason, FromArm: h.armOf(old)})
}

// paramsSet is SetParams' hook, called just before after become v's
// values: it records the set in the kind's change log (so that `kiln
// policy list` shows what a later watch-rollback undoes) and tells the
// subscribers; h.mu is held.
func (h *Host) paramsSet(s *slot, v *version, after []float64) {
	before := *v.values.Load()
	e := ChangeEvent{Time: h.clk.Now(), Kind: s.kind, Action: "set", From: v.ref(), To: v.ref(),
		Before: map[string]float64{}, After: map[string]float64{}}
	var diff []string
	for i, p := range v.params {
		if i < len(before) && i < len(after) && before[i] != after[i] {
			e.Before[p.Name], e.After[p.Name] = before[i], after[i]
			diff = append(diff, fmt.Sprintf("%s %g → %g", p.Name, before[i], after[i]))
		}
	}
	if len(diff) == 0 {
		return // the same values again: nothing changed
	}
	slices.Sort(diff)
	e.Reason = "set " + strings.Join(diff, ", ")
	h.appendChange(s, Change{Time: e.Time, Kind: s.kind.String(), From: v.ref(), To: v.ref(), Action: "set", Reason: e.Reason})
	h.notifyChange(e)
}

// appendChange adds c to s's change log, bounded by maxChanges; h.mu is
// held.
func (h *Host) appendChange(s *slot, c Change) {
	s.changes = append(s.changes, c)
	if len(s.changes) > maxChanges {
		s.changes = slices.Delete(s.changes, 0, len(s.changes)-maxChanges)
	}
}

// ErrSuperseded is returned by WatchRollback and WatchRestoreParams when
// the watched change is no longer what is active: something changed the
// kind again, and undoing the older change would undo the newer one too.
var ErrSuperseded = errors.New("the watched change was superseded")

// WatchRollback undoes a watched activation: when kind k's active version
// is still to, the version active before it becomes active again, with
// action "watch-rollback" and reason in the change log. It is Rollback
// with a check that the change being undone is still the active one.
func (h *Host) WatchRollback(k abi.Kind, to, reason string) (VersionInfo, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.slots[k]
	if !ok {
		return VersionInfo{}, fmt.Errorf("watch rollback: unknown kind %d", k)
	}
	if cur := s.active.Load().ref(); cur != to {
		return VersionInfo{}, fmt.Errorf("watch rollback %s: active is %s, not %s: %w", k, cur, to, ErrSuperseded)
	}
	if len(s.previous) == 0 {
		return VersionInfo{}, fmt.Errorf("watch rollback %s: no previous policy: %w", k, ErrNotFound)
	}
	prev := s.previous[len(s.previous)-1]
	s.previous = s.previous[:len(s.previous)-1]
	n := len(s.previous)
	h.swap(s, prev, "watch-rollback", reason)
	// swap keeps the version it replaces for a later rollback unless the
	// action is a rollback; a watch-rollback is one, so forget it again.
	s.previous = s.previous[:n]
	s.rollbacks.Add(1)
	h.persistLocked()
	return prev.info(true), nil
}

// WatchRestoreParams undoes a watched parameter set: when kind k's active
// version is still ref and its values are still after, the values before
// are set again, with action "watch-rollback" and reason in the change
// log.
func (h *Host) WatchRestoreParams(k abi.Kind, ref string, before, after map[string]float64, reason string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.slots[k]
	if !ok {
		return fmt.Errorf("watch restore params: unknown kind %d", k)
	}
	v := s.active.Load()
	if v.ref() != ref {
		return fmt.Errorf("watch restore params %s: active is %s, not %s: %w", k, v.ref(), ref, ErrSuperseded)
	}
	cur := *v.values.Load()
	for i, p := range v.params {
		if want, ok := after[p.Name]; ok && i < len(cur) && cur[i] != want {
			return fmt.Errorf("watch restore params %s: %s is %g, not %g: %w", k, p.Name, cur[i], want, ErrSuperseded)
		}
	}
	vals, err := v.withParams(maps.Clone(before))
	if err != nil {
		return fmt.Errorf("watch restore params %s: %w", k, err)
	}
	v.values.Store(&vals)
	h.appendChange(s, Change{Time: h.clk.Now(), Kind: k.String(), From: ref, To: ref, Action: "watch-rollback", Reason: reason})
	h.log.Info().Str("kind", k.String()).Str("policy", ref).Str("action", "watch-rollback").Str("reason", reason).Msg("policy params restored")
	h.notifyChange(ChangeEvent{Time: h.clk.Now(), Kind: k, Action: "watch-rollback", From: ref, To: ref, Reason: reason,
		Before: maps.Clone(after), After: maps.Clone(before)})
	h.persistLocked()
	return nil
}
