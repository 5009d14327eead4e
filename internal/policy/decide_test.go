package policy

import (
	"strings"
	"testing"
)

// TestUnique checks the answer validation every list answer goes through,
// on both sides of the stack bitset's 4,096 candidates.
func TestUnique(t *testing.T) {
	for _, n := range []int{3, 64, 4096, 10000} {
		last := uint32(n - 1)
		for _, tc := range []struct {
			ids  []uint32
			want string
		}{
			{[]uint32{0, last}, ""},
			{[]uint32{last, 0, last}, "chosen twice"},
			{[]uint32{uint32(n)}, "does not exist"},
			{make([]uint32, n+1), "for"},
		} {
			err := unique(tc.ids, n, "job")
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("n=%d, ids %v…: error %v, want %q", n, tc.ids[:min(3, len(tc.ids))], err, tc.want)
			}
		}
	}
}
