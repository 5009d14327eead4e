package comfy

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/kiln-gpu/kiln/internal/job"
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

// TestQueueSnapshot checks that a prompt changing state while /queue reads
// the store is listed once, never in neither list: each case is one
// transition placed between two of queueSnapshot's three reads.
func TestQueueSnapshot(t *testing.T) {
	a, b := &job.Job{ID: "a"}, &job.Job{ID: "b"} // b stays queued throughout
	for _, tc := range []struct {
		name        string
		reads       [3][]*job.Job // running, queued, running
		wantRunning []string
		wantQueued  []string
	}{
		{"a starts between the first two reads", [3][]*job.Job{{}, {b}, {a}}, []string{"a"}, []string{"b"}},
		{"a starts between the last two reads", [3][]*job.Job{{}, {a, b}, {a}}, []string{"a"}, []string{"b"}},
		{"a is requeued between the first two reads", [3][]*job.Job{{a}, {a, b}, {}}, []string{"a"}, []string{"b"}},
		{"a is requeued between the last two reads", [3][]*job.Job{{a}, {b}, {}}, []string{"a"}, []string{"b"}},
		{"nothing changes", [3][]*job.Job{{a}, {b}, {a}}, []string{"a"}, []string{"b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			call := 0
			running, queued, err := queueSnapshot(func(state job.State) ([]*job.Job, error) {
				want := job.Running
				if call == 1 {
					want = job.Queued
				}
				if state != want {
					t.Fatalf("read %d of state %s, want %s", call, state, want)
				}
				call++
				return tc.reads[call-1], nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := ids(running), tc.wantRunning; !slices.Equal(got, want) {
				t.Errorf("running %v, want %v", got, want)
			}
			if got, want := ids(queued), tc.wantQueued; !slices.Equal(got, want) {
				t.Errorf("queued %v, want %v", got, want)
			}
		})
	}
}

func ids(jobs []*job.Job) []string {
	out := []string{}
	for _, j := range jobs {
		out = append(out, j.ID)
	}
	return out
}
