package tier

import (
	"slices"
	"testing"
	"time"

	"github.com/kiln-gpu/kiln/kernel/decision"
	"github.com/kiln-gpu/kiln/kernel/policy"
)

// The tiers evict through the native build of the lru built-in when they
// are given no policy (Options.DiskEvictor, RAMEvictor).
func TestDefaultEvictorIsLRU(t *testing.T) {
	t0 := time.Unix(1000, 0)
	entries := []decision.EntryView{
		{Model: "a", Bytes: 10, LastUse: t0.Add(3 * time.Second)},
		{Model: "b", Bytes: 10, LastUse: t0.Add(1 * time.Second)},
		{Model: "c", Bytes: 10, LastUse: t0, Pinned: true},
		{Model: "d", Bytes: 10, LastUse: t0.Add(2 * time.Second)},
	}
	for _, tc := range []struct {
		name string
		need uint64
		want []int
	}{
		{name: "one", need: 5, want: []int{1}},
		{name: "two oldest unpinned", need: 15, want: []int{1, 3}},
		{name: "all unpinned", need: 30, want: []int{1, 3, 0}},
		{name: "not enough", need: 31, want: nil},
		{name: "nothing needed", need: 0, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := policy.Native().NewEvictor().Victims(tc.need, entries); !slices.Equal(got, tc.want) {
				t.Errorf("Victims(%d) = %v, want %v", tc.need, got, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{name: "defaults", cfg: Config{}.WithDefaults()},
		{name: "fill above one", cfg: Config{Disk: DiskConfig{TargetFill: 1.5}}, wantErr: true},
		{name: "backend without plugin", cfg: Config{Remote: RemoteConfig{Backends: []BackendConfig{{Name: "x"}}}}, wantErr: true},
		{name: "extension without dot", cfg: Config{Remote: RemoteConfig{Loaders: []LoaderConfig{{Plugin: "p", Extensions: []string{"gguf"}}}}}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err != nil) != tc.wantErr {
				t.Errorf("Validate() = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}
