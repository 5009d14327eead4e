package policy

import "testing"

// FuzzDecode feeds arbitrary bytes to every decoder: none may panic or
// allocate beyond the input's size, and whatever decodes must survive an
// encode and decode unchanged (reserved fields are ignored, so the bytes
// themselves may differ).
func FuzzDecode(f *testing.F) {
	f.Add(AppendSchedulingInput(nil, sampleScheduling()))
	f.Add(AppendEvictionInput(nil, &EvictionInput{Need: 5, Entries: []Entry{{Model: 1, Bytes: 2, Pinned: true}}, Ghosts: []Ghost{{Model: 1}}, Wanted: []Wanted{{Model: 2}}}))
	f.Add(AppendBatchingInput(nil, &BatchingInput{Lead: 0, Jobs: []Job{{Seq: 1}}}))
	f.Add(AppendBalancingInput(nil, &BalancingInput{Workers: []Worker{{Idle: true}}}))
	f.Add(AppendEvictionOutput(nil, StatusOK, &EvictionOutput{Victims: []uint32{1}, Prefetch: []uint32{0}, Tags: []TagUpdate{{Entry: 1, Tag: 9}}}))
	f.Add(AppendSchedulingOutput(nil, StatusOK, &SchedulingOutput{Dispatch: []uint32{2, 1}}))
	f.Add(AppendParams(nil, []Param{{Name: "x", Max: 1}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev EvictionInput
		if DecodeEvictionInput(b, &ev) == nil {
			var again EvictionInput
			if err := DecodeEvictionInput(AppendEvictionInput(nil, &ev), &again); err != nil || !equalish(&again, &ev) {
				t.Errorf("eviction input does not round-trip: %v", err)
			}
		}
		var sc SchedulingInput
		if DecodeSchedulingInput(b, &sc) == nil {
			var again SchedulingInput
			if err := DecodeSchedulingInput(AppendSchedulingInput(nil, &sc), &again); err != nil || !equalish(&again, &sc) {
				t.Errorf("scheduling input does not round-trip: %v", err)
			}
		}
		var ba BatchingInput
		_ = DecodeBatchingInput(b, &ba)
		var bl BalancingInput
		_ = DecodeBalancingInput(b, &bl)
		var evo EvictionOutput
		if st, err := DecodeEvictionOutput(b, &evo); err == nil {
			var again EvictionOutput
			if st2, err := DecodeEvictionOutput(AppendEvictionOutput(nil, st, &evo), &again); err != nil || st2 != st || !equalish(&again, &evo) {
				t.Errorf("eviction output does not round-trip: %v", err)
			}
		}
		var sco SchedulingOutput
		if st, err := DecodeSchedulingOutput(b, &sco); err == nil {
			var again SchedulingOutput
			if st2, err := DecodeSchedulingOutput(AppendSchedulingOutput(nil, st, &sco), &again); err != nil || st2 != st || !equalish(&again, &sco) {
				t.Errorf("scheduling output does not round-trip: %v", err)
			}
		}
		var bao BatchingOutput
		_, _ = DecodeBatchingOutput(b, &bao)
		var blo BalancingOutput
		_, _ = DecodeBalancingOutput(b, &blo)
		_, _ = DecodeParams(b)
	})
}
