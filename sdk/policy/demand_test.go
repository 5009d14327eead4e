package policy

import (
	"bytes"
	"slices"
	"testing"
)

// TestEvictionDemandSection: the recent demand (ABI 1.3) round-trips in its
// own section after the wanted records, counted by the body's word at 28;
// an input without it is the 1.2 layout (that word zero, no section), and
// a section whose count is neither 0 nor the entries' is refused.
func TestEvictionDemandSection(t *testing.T) {
	in := EvictionInput{Need: 1 << 30, Free: 5,
		Entries: []Entry{{Model: 0, Bytes: 1 << 30, LoadCost: 7}, {Model: 1, Bytes: 2 << 30}},
		Ghosts:  []Ghost{{Model: 2, Ago: 9}},
		Wanted:  []Wanted{{Model: 3, Bytes: 4, Waiting: 1}}}
	plain := AppendEvictionInput(nil, &in)
	in.RecentDemand = []float64{2.5, 0.125}
	withDemand := AppendEvictionInput(nil, &in)
	if len(withDemand) != len(plain)+16 {
		t.Fatalf("%d bytes with two demand values, %d without: want 16 more", len(withDemand), len(plain))
	}
	var got EvictionInput
	if err := DecodeEvictionInput(withDemand, &got); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.RecentDemand, in.RecentDemand) || got.EntryDemand(0) != 2.5 || got.EntryDemand(5) != 0 {
		t.Errorf("decoded demand %v, want %v", got.RecentDemand, in.RecentDemand)
	}
	if err := DecodeEvictionInput(plain, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.RecentDemand) != 0 || got.EntryDemand(0) != 0 {
		t.Errorf("an input without the section decoded demand %v", got.RecentDemand)
	}
	// Without the section, the encoding does not depend on the demand
	// slice: a mismatched one is left out rather than sent broken.
	in.RecentDemand = []float64{1}
	if b := AppendEvictionInput(nil, &in); !bytes.Equal(b, plain) {
		t.Errorf("a demand slice of the wrong length changed the encoding")
	}
	// A count that names neither 0 nor every entry is refused.
	bad := slices.Clone(withDemand)
	off := HeaderSize + 28
	bad[off] = 1
	if err := DecodeEvictionInput(bad, &got); err == nil {
		t.Error("a demand count of 1 for 2 entries decoded")
	}
}
