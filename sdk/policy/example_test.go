package policy_test

import (
	"fmt"
	"time"

	"github.com/kiln-gpu/kiln/sdk/policy"
)

// Biggest evicts the largest unpinned entries first.
type Biggest struct{}

func (Biggest) Evict(in *policy.EvictionInput, out *policy.EvictionOutput) policy.Status {
	free := in.Free
	for free < in.Need {
		best := -1
		for i, e := range in.Entries {
			taken := false
			for _, v := range out.Victims {
				taken = taken || int(v) == i
			}
			if !e.Pinned && !taken && (best < 0 || e.Bytes > in.Entries[best].Bytes) {
				best = i
			}
		}
		if best < 0 {
			out.Victims = out.Victims[:0]
			return policy.StatusNoDecision
		}
		out.Victims = append(out.Victims, uint32(best))
		free += in.Entries[best].Bytes
	}
	return policy.StatusOK
}

// A policy runs natively on Go values, and behind the ABI through a Guest
// exactly as it does inside a WASM module.
func Example() {
	in := &policy.EvictionInput{Need: 3 << 30, Entries: []policy.Entry{
		{Model: 0, Bytes: 2 << 30, SinceUse: time.Minute},
		{Model: 1, Bytes: 8 << 30, Pinned: true},
		{Model: 2, Bytes: 4 << 30},
	}}
	var out policy.EvictionOutput
	fmt.Println("native:", Biggest{}.Evict(in, &out) == policy.StatusOK, out.Victims)

	g, _ := policy.NewGuest(Biggest{})
	answer := g.Call(policy.KindEviction, policy.AppendEvictionInput(nil, in))
	var decoded policy.EvictionOutput
	st, err := policy.DecodeEvictionOutput(answer, &decoded)
	fmt.Println("through the ABI:", st == policy.StatusOK, decoded.Victims, err)
	// Output:
	// native: true [2]
	// through the ABI: true [2] <nil>
}

// Parameters are declared once and arrive with every input.
func ExampleParam() {
	p := policy.Param{Name: "max_wait_ms", Type: policy.ParamInt, Default: 200, Min: 0, Max: 60000}
	fmt.Println(p.Validate())
	in := policy.Common{Params: []float64{500}}
	fmt.Println(in.Param(0, p.Default), in.Param(1, 7))
	// Output:
	// <nil>
	// 500 7
}
