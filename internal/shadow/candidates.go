package shadow

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// PolicyCandidates builds the candidates named: eviction policies by name
// ("gdsf") or version ("my-policy@2"); none names every built-in eviction
// policy. The names come from the experiments.shadow section
// (experiment.ShadowConfig), which the node passes in.
//
// A built-in gets a private policy host per ghost tier, running its native
// build (the same source as the WASM one, the same answers, no compile),
// so that its state is its own. Any other name must be a version loaded
// into the live host; it is asked through a version-pinned arm (each ghost
// its own tags; the version's state words are shared with every other user
// of that version, its other ghost tiers included — load a copy under
// another name to keep it apart from the live policy).
// live may be nil when only built-ins are named.
func PolicyCandidates(names []string, live *policy.Host, log zerolog.Logger, clk clock.Clock) []Candidate {
	if len(names) == 0 {
		names = policy.BuiltinNames(abi.KindEviction)
	}
	liveName := ""
	if live != nil {
		liveName, _, _ = strings.Cut(live.ActiveRef(abi.KindEviction), "@")
	}
	var out []Candidate
	for _, ref := range names {
		name, number, err := policy.ParseRef(ref)
		c := Candidate{Name: ref, Live: ref == liveName}
		switch {
		case err != nil:
			c.New = failing(err)
		case number == 0 && policy.Builtin(abi.KindEviction, name) != nil:
			c.New = func() (Decider, io.Closer, error) {
				h, err := policy.NewHost(policy.Config{Eviction: name, NativeBuiltins: true}, log, clk)
				if err != nil {
					return nil, nil, err
				}
				return hostDecider(h.Evictor()), h, nil
			}
		case live == nil:
			c.New = failing(fmt.Errorf("eviction policy %s is not a built-in", ref))
		default:
			c.New = func() (Decider, io.Closer, error) {
				arm, err := live.Arm(context.Background(), abi.KindEviction, name, number)
				if err != nil {
					return nil, nil, err
				}
				return hostDecider(arm.Evictor()), nil, nil
			}
		}
		out = append(out, c)
	}
	return out
}

func failing(err error) func() (Decider, io.Closer, error) {
	return func() (Decider, io.Closer, error) { return nil, nil, err }
}

// hostDecider asks a policy host's evictor; an answer from the native
// fallback means the policy faulted.
func hostDecider(e *policy.Evictor) Decider {
	return func(need uint64, entries []decision.EntryView) ([]int, error) {
		r := e.Decide(policy.EvictionRequest{Need: need, Entries: entries})
		if r.Fallback {
			return nil, errors.New("policy fault (the host answered with its native fallback)")
		}
		return r.Victims, nil
	}
}

// FromArm is a candidate asked through an experiment's version-pinned arm:
// each ghost tier gets an evictor of its own (Arm.NewEvictor), so that the
// arm's tags and ghosts for one tier never mix with another's or with the
// live caches'. A fault (the host answering with its fallback) marks the
// candidate faulted, as for any candidate.
func FromArm(name string, arm *policy.Arm) Candidate {
	return Candidate{Name: name, New: func() (Decider, io.Closer, error) {
		e := arm.NewEvictor()
		if e == nil {
			return nil, nil, fmt.Errorf("%s: not an eviction policy", arm.Ref())
		}
		return hostDecider(e), nil, nil
	}}
}
