// Command hostile is a policy module that misbehaves on purpose, for the
// host's containment tests. Its "mode" parameter picks the misdeed.
package main

import (
	"github.com/kiln-gpu/kiln/sdk/policy"
)

// Modes.
const (
	modeOK = iota
	modeLoop
	modeMemory
	modePanic
	modeHuge
	modeInvalid
	modeError
	// modeGarbage allocates 256 KiB that it drops at once, every call: a
	// careless but correct policy, whose memory only the Go runtime's
	// garbage collector keeps bounded.
	modeGarbage
	// modeLog logs a line every call (not hostile: for the test that
	// guest log lines name their policy).
	modeLog
	// modeStall answers OK and does nothing: no victims, no job to
	// dispatch (a balancing answer cannot be OK without a worker, so it
	// answers NO_DECISION). Every answer is well formed; the work stalls.
	modeStall
	// modeNoDecision answers NO_DECISION to everything.
	modeNoDecision
	// modeShort names one victim, the first unpinned entry, whatever the
	// need: a valid answer that frees too little (issue 21: victims that
	// are valid but insufficient). Other kinds answer as modeOK.
	modeShort
)

type hostile struct{}

func (hostile) Params() []policy.Param {
	return []policy.Param{{Name: "mode", Type: policy.ParamInt, Default: 0, Min: 0, Max: 15}}
}

var sink [][]byte

// garbage is where modeGarbage's allocation goes, so that the compiler
// cannot keep it off the heap.
var garbage []byte

func misbehave(mode int) {
	switch mode {
	case modeLoop:
		for {
		}
	case modeMemory:
		for {
			sink = append(sink, make([]byte, 1<<20))
		}
	case modePanic:
		panic("hostile policy panics")
	case modeGarbage:
		garbage = make([]byte, 256<<10)
		garbage = nil
	case modeLog:
		policy.Log(policy.LevelWarn, "hello from the guest")
	}
}

func (hostile) Evict(in *policy.EvictionInput, out *policy.EvictionOutput) policy.Status {
	mode := int(in.Param(0, 0))
	misbehave(mode)
	switch mode {
	case modeHuge:
		out.Victims = make([]uint32, 4<<20)
	case modeInvalid:
		for i, e := range in.Entries {
			if e.Pinned {
				out.Victims = append(out.Victims, uint32(i))
			}
		}
		out.Victims = append(out.Victims, 1<<30)
	case modeError:
		return policy.StatusError
	case modeStall:
	case modeNoDecision:
		return policy.StatusNoDecision
	case modeShort:
		for i, e := range in.Entries {
			if !e.Pinned && in.Need > in.Free {
				out.Victims = append(out.Victims, uint32(i))
				break
			}
		}
	default:
		// The first unpinned entries, until the need is covered.
		free := in.Free
		for i, e := range in.Entries {
			if free >= in.Need {
				break
			}
			if !e.Pinned {
				out.Victims = append(out.Victims, uint32(i))
				free += e.Bytes
			}
		}
	}
	return policy.StatusOK
}

func (hostile) Schedule(in *policy.SchedulingInput, out *policy.SchedulingOutput) policy.Status {
	mode := int(in.Param(0, 0))
	misbehave(mode)
	if len(in.Queued) == 0 {
		return policy.StatusNoDecision
	}
	switch mode {
	case modeHuge:
		out.Dispatch = make([]uint32, 4<<20)
	case modeInvalid:
		out.Dispatch = append(out.Dispatch, 0, 0) // the same job twice
	case modeError:
		return policy.StatusError
	case modeStall:
	case modeNoDecision:
		return policy.StatusNoDecision
	default:
		out.Dispatch = append(out.Dispatch, uint32(len(in.Queued)-1))
	}
	return policy.StatusOK
}

func (hostile) Batch(in *policy.BatchingInput, out *policy.BatchingOutput) policy.Status {
	mode := int(in.Param(0, 0))
	misbehave(mode)
	switch mode {
	case modeInvalid:
		out.Batch = append(out.Batch, in.Lead+1000)
	case modeError:
		return policy.StatusError
	case modeNoDecision:
		// Running the lead alone is always progress: not a stall.
		return policy.StatusNoDecision
	default:
		out.Batch = append(out.Batch, in.Lead)
	}
	return policy.StatusOK
}

func (hostile) Balance(in *policy.BalancingInput, out *policy.BalancingOutput) policy.Status {
	mode := int(in.Param(0, 0))
	misbehave(mode)
	switch mode {
	case modeInvalid:
		for i, w := range in.Workers {
			if !w.Idle {
				out.Worker = uint32(i) // a busy worker
				return policy.StatusOK
			}
		}
		out.Worker = uint32(len(in.Workers) + 7) // an unknown one
	case modeError:
		return policy.StatusError
	case modeStall, modeNoDecision:
		return policy.StatusNoDecision
	default:
		for i := range in.Workers {
			if w := &in.Workers[i]; w.Idle && policy.Fits(&in.Job, w) {
				out.Worker = uint32(i)
				return policy.StatusOK
			}
		}
		return policy.StatusNoDecision
	}
	return policy.StatusOK
}

func (hostile) Route(in *policy.RoutingInput, out *policy.RoutingOutput) policy.Status {
	mode := int(in.Param(0, 0))
	misbehave(mode)
	switch mode {
	case modeInvalid:
		for i := range in.Nodes {
			if !in.Nodes[i].Healthy {
				out.Node = uint32(i) // an unhealthy node
				return policy.StatusOK
			}
		}
		out.Node = uint32(len(in.Nodes) + 7) // an unknown one
	case modeError:
		return policy.StatusError
	case modeStall, modeNoDecision:
		// A routing answer cannot be OK without a node: the stall is
		// NO_DECISION while a healthy node could take the job.
		return policy.StatusNoDecision
	default:
		for i := range in.Nodes {
			if policy.FitsNode(&in.Job, &in.Nodes[i]) {
				out.Node = uint32(i)
				return policy.StatusOK
			}
		}
		return policy.StatusNoDecision
	}
	return policy.StatusOK
}

func init() { policy.Serve(hostile{}) }

func main() {}
