package comfy

import (
	"encoding/json"
	"testing"
)

func TestHistoryWindow(t *testing.T) {
	for _, tc := range []struct {
		name                string
		n, maxItems, offset int
		wantLo, wantHi      int
	}{
		{name: "all", n: 20, maxItems: -1, offset: -1, wantLo: 0, wantHi: 20},
		{name: "last 3", n: 20, maxItems: 3, offset: -1, wantLo: 17, wantHi: 20},
		{name: "offset 18", n: 20, maxItems: -1, offset: 18, wantLo: 18, wantHi: 20},
		{name: "offset and max", n: 20, maxItems: 5, offset: 2, wantLo: 2, wantHi: 7},
		{name: "more than there are", n: 2, maxItems: 5, offset: -1, wantLo: 0, wantHi: 2},
		{name: "max 0", n: 20, maxItems: 0, offset: -1, wantLo: 20, wantHi: 20},
		{name: "offset past the end", n: 3, maxItems: -1, offset: 9, wantLo: 3, wantHi: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lo, hi := historyWindow(tc.n, tc.maxItems, tc.offset)
			if lo != tc.wantLo || hi != tc.wantHi {
				t.Errorf("historyWindow(%d, %d, %d) = [%d, %d); want [%d, %d)", tc.n, tc.maxItems, tc.offset, lo, hi, tc.wantLo, tc.wantHi)
			}
		})
	}
}

func TestOrderedObjectKeepsOrder(t *testing.T) {
	var o orderedObject
	for _, k := range []string{"b", "c", "a"} {
		o.add(k, map[string]any{"k": k})
	}
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"b":{"k":"b"},"c":{"k":"c"},"a":{"k":"a"}}`; string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
}
