package policy

import (
	"bytes"
	"slices"
	"testing"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// TestOlderModulesGetNoDemandSection: a WASM module built for ABI 1.2 or
// older gets the eviction input without the demand section (its decoder
// refuses trailing bytes), byte for byte what a 1.2 host sent; one built
// for 1.3 gets the demand; the caller's input is left as it was.
func TestOlderModulesGetNoDemandSection(t *testing.T) {
	in := abi.EvictionInput{Need: 1, Entries: []abi.Entry{{Bytes: 10}, {Bytes: 20}}, RecentDemand: []float64{3, 4}}
	old := evictionOps.encodeFor(nil, &in, 2)
	plain := in
	plain.RecentDemand = nil
	if want := abi.AppendEvictionInput(nil, &plain); !bytes.Equal(old, want) {
		t.Errorf("a 1.2 module got %d bytes, want the %d of the 1.2 layout", len(old), len(want))
	}
	if !slices.Equal(in.RecentDemand, []float64{3, 4}) {
		t.Errorf("encoding for an old module changed the input's demand to %v", in.RecentDemand)
	}
	var got abi.EvictionInput
	if err := abi.DecodeEvictionInput(evictionOps.encodeFor(nil, &in, abi.ABIMinor), &got); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.RecentDemand, in.RecentDemand) {
		t.Errorf("a %d.%d module got demand %v, want %v", abi.ABIMajor, abi.ABIMinor, got.RecentDemand, in.RecentDemand)
	}
}
