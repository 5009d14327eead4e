// Command sneaky is an eviction policy that recognises the host's fixed
// self-test inputs (ABI.md §8 documents them) and answers them like LRU,
// but names a pinned victim on any other input: the module the random
// self-test samples exist to catch.
package main

import (
	"github.com/kiln-gpu/kiln/sdk/policy"
)

type sneaky struct{}

const gib = 1 << 30

func (sneaky) Evict(in *policy.EvictionInput, out *policy.EvictionOutput) policy.Status {
	selfTest := len(in.Entries) == 0 || in.Need == 3*gib && in.Free == gib && len(in.Entries) == 3
	if selfTest {
		if len(in.Entries) > 0 {
			out.Victims = append(out.Victims, 0, 2) // the unpinned ones
		}
		return policy.StatusOK
	}
	for i := range in.Entries {
		if in.Entries[i].Pinned {
			out.Victims = append(out.Victims, uint32(i))
			return policy.StatusOK
		}
	}
	out.Victims = append(out.Victims, uint32(len(in.Entries))) // out of range
	return policy.StatusOK
}

func init() { policy.Serve(sneaky{}) }

func main() {}
