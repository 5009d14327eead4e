package policy

import (
	"context"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// counter is an eviction policy that counts its calls in state word 0,
// tags every entry with the count, evicts what is needed oldest-first, and
// reports what it was shown: enough to see where the host keeps state
// words and tags.
type counter struct{ seen *[]counterSeen }

type counterSeen struct {
	state uint64
	tags  []uint64
}

func (c counter) Evict(in *abi.EvictionInput, out *abi.EvictionOutput) abi.Status {
	seen := counterSeen{state: in.State[0]}
	for _, e := range in.Entries {
		seen.tags = append(seen.tags, e.Tag)
	}
	*c.seen = append(*c.seen, seen)
	out.State[0] = in.State[0] + 1
	for i := range in.Entries {
		out.Tags = append(out.Tags, abi.TagUpdate{Entry: uint32(i), Tag: 1000 + out.State[0]})
	}
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
	return abi.StatusOK
}

var counterLog []counterSeen

func init() {
	RegisterNative(abi.KindEviction, "test-counter", func() any { return counter{seen: &counterLog} })
}

// TestEvictionStateIsPerCache checks ABI 1.1's section 9: two caches (two
// evictors, as the VRAM and the RAM tier have) keep their own state words
// and tags, and a cache's words and tags start again at zero when another
// version decides there, including after a swap back.
func TestEvictionStateIsPerCache(t *testing.T) {
	h := newTestHost(t, Config{NativeBuiltins: true, Eviction: "test-counter"})
	vram, ram := h.NewEvictor(), h.NewEvictor()
	entries := []decision.EntryView{{Model: "a", Worker: "w0", Bytes: 1, LastUse: time.Unix(1, 0)}}
	ask := func(e *Evictor) counterSeen {
		t.Helper()
		counterLog = counterLog[:0]
		e.Victims(0, entries) // a call that evicts nothing but tags
		if len(counterLog) != 1 {
			t.Fatalf("%d calls seen, want 1", len(counterLog))
		}
		return counterLog[0]
	}
	for i := range 3 {
		if got := ask(vram); got.state != uint64(i) {
			t.Fatalf("vram call %d saw state %d, want %d", i, got.state, i)
		}
	}
	if got := ask(ram); got.state != 0 || got.tags[0] != 0 {
		t.Fatalf("ram's first call saw state %d, tag %d; want 0, 0 (its own cache)", got.state, got.tags[0])
	}
	if got := ask(vram); got.state != 3 || got.tags[0] != 1003 {
		t.Fatalf("vram's fourth call saw state %d, tag %d; want 3, 1003", got.state, got.tags[0])
	}
	// Another version decides (lru), then the counter again: its cache
	// starts from zero, and it does not read the tags it wrote before.
	if _, err := h.Activate(context.Background(), abi.KindEviction, "lru", 0, "test"); err != nil {
		t.Fatal(err)
	}
	vram.Victims(0, entries)
	if _, err := h.Activate(context.Background(), abi.KindEviction, "test-counter", 0, "test"); err != nil {
		t.Fatal(err)
	}
	if got := ask(vram); got.state != 0 || got.tags[0] != 0 {
		t.Fatalf("after a swap away and back the counter saw state %d, tag %d; want 0, 0", got.state, got.tags[0])
	}
}
