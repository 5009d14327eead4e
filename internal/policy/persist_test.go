package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

func newStateHost(t *testing.T, dir string) *Host {
	t.Helper()
	h, err := newHost(Config{CacheDir: testCacheDir, StateDir: dir, CallTimeout: time.Second}, zerolog.Nop(), clock.Real(), fstest.MapFS{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := h.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return h
}

func kindInfo(t *testing.T, h *Host, k abi.Kind) KindInfo {
	t.Helper()
	for _, ki := range h.List() {
		if ki.Kind == k.String() {
			return ki
		}
	}
	t.Fatalf("no kind %s", k)
	return KindInfo{}
}

// TestStateSurvivesRestart loads modules, activates, rolls back and sets a
// parameter on one host, closes it, and checks that a second host on the
// same state dir serves the same: active policies, versions, rollback
// stack, parameters and history. A module whose saved file no longer
// matches its checksum is not restored, and the kind says why.
func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	fifo, ll := wasmOf(t, "scheduling.fifo"), wasmOf(t, "balancing.least-loaded")

	h := newStateHost(t, dir)
	if _, err := h.Load(ctx, abi.KindScheduling, "mine", fifo, true, "try fifo"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Load(ctx, abi.KindBalancing, "ll", ll, true, "v1"); err != nil {
		t.Fatal(err)
	}
	// Other bytes (a custom section more): identical bytes would be ll@1.
	llInfo, err := h.Load(ctx, abi.KindBalancing, "ll", retag(ll, "v2"), true, "v2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Rollback(abi.KindBalancing, "back to v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Activate(ctx, abi.KindEviction, "gdsf", 0, "cost-aware"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Activate(ctx, abi.KindEviction, "lru", 0, "back"); err != nil {
		t.Fatal(err)
	}
	if err := h.SetParam(abi.KindEviction, "prefetch", 0); err != nil {
		t.Fatal(err)
	}
	before := map[abi.Kind]KindInfo{}
	for _, k := range abi.Kinds {
		before[k] = kindInfo(t, h, k)
	}
	h.Close()

	h2 := newStateHost(t, dir)
	for _, k := range abi.Kinds {
		got, want := kindInfo(t, h2, k), before[k]
		if got.Active != want.Active {
			t.Errorf("%s: active %s after the restart, want %s", k, got.Active, want.Active)
		}
		if len(got.Changes) <= len(want.Changes) {
			t.Errorf("%s: %d changes after the restart, want the %d before and the restart's", k, len(got.Changes), len(want.Changes))
		}
		for i, c := range want.Changes {
			if i < len(got.Changes) && (got.Changes[i].To != c.To || got.Changes[i].Action != c.Action) {
				t.Errorf("%s: change %d is %+v, want %+v", k, i, got.Changes[i], c)
			}
		}
	}
	// One row per version: no built-in twice (the configured one and the
	// restored one), nothing loaded twice.
	for _, ki := range h2.List() {
		seen := map[string]bool{}
		for _, v := range ki.Versions {
			ref := fmt.Sprintf("%s@%d", v.Name, v.Version)
			if seen[ref] {
				t.Errorf("%s: %s listed twice after the restart", ki.Kind, ref)
			}
			seen[ref] = true
		}
	}
	bal := kindInfo(t, h2, abi.KindBalancing)
	var shas []string
	for _, v := range bal.Versions {
		if v.Name == "ll" {
			shas = append(shas, v.SHA256)
			if v.Source != SourceWASM {
				t.Errorf("ll@%d restored from %s, want wasm", v.Version, v.Source)
			}
		}
	}
	if len(shas) != 2 || shas[1] != llInfo.SHA256 {
		t.Errorf("restored ll versions with sums %v, want two of %s", shas, llInfo.SHA256)
	}
	// The rollback stack came back: rolling back from ll@1 goes to the
	// policy that served before ll@1 was first activated.
	if vi, err := h2.Rollback(abi.KindBalancing, "test"); err != nil || vi.Name != "least-loaded" {
		t.Errorf("rollback after restart = %s@%d, %v; want least-loaded", vi.Name, vi.Version, err)
	}
	ev := kindInfo(t, h2, abi.KindEviction)
	for _, v := range ev.Versions {
		if v.Name == "lru" && v.Params["prefetch"] != 0 {
			t.Errorf("lru's prefetch = %v after the restart, want 0", v.Params["prefetch"])
		}
	}
	// The restored module decides.
	jobs, workers, _ := sampleViews()
	if got, _ := h2.Scheduler().Next(jobs, workers); got == "" {
		t.Error("restored scheduling module made no decision")
	}
	if vi := kindInfo(t, h2, abi.KindScheduling).Versions; vi[len(vi)-1].Calls == 0 || vi[len(vi)-1].Faults != 0 {
		t.Errorf("restored module: %+v", vi[len(vi)-1])
	}
	h2.Close()

	// Damage the scheduling module's file: it is refused at the next start.
	sched := before[abi.KindScheduling]
	sum := sched.Versions[len(sched.Versions)-1].SHA256
	p := filepath.Join(dir, "modules", sum+".wasm")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	h3 := newStateHost(t, dir)
	defer h3.Close()
	ki := kindInfo(t, h3, abi.KindScheduling)
	if ki.Active != "priority@1" {
		t.Errorf("active %s with its module damaged, want the configured priority@1", ki.Active)
	}
	last := ki.Changes[len(ki.Changes)-1]
	if last.Action != "restore" || !strings.Contains(last.Reason, "checksum") {
		t.Errorf("last change %+v, want a restore that names the checksum", last)
	}
	if got := kindInfo(t, h3, abi.KindBalancing).Active; got != "least-loaded@1" {
		// h2's rollback was saved too.
		t.Errorf("balancing active %s, want least-loaded@1 (the rollback made before the last restart)", got)
	}
}

// TestStateFileChecksum refuses a state file whose body was edited.
func TestStateFileChecksum(t *testing.T) {
	dir := t.TempDir()
	h := newStateHost(t, dir)
	if _, err := h.Activate(context.Background(), abi.KindEviction, "gdsf", 0, "test"); err != nil {
		t.Fatal(err)
	}
	h.Close()
	p := filepath.Join(dir, "state.json")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(data), "gdsf", "s3fifo", 1)
	if edited == string(data) {
		t.Fatal("state.json does not name gdsf")
	}
	if err := os.WriteFile(p, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	h2 := newStateHost(t, dir)
	defer h2.Close()
	if got := kindInfo(t, h2, abi.KindEviction).Active; got != "lru@1" {
		t.Errorf("active %s from an edited state file, want the configured lru@1", got)
	}
}

// retag returns wasm with a custom section holding tag appended: other
// bytes, and so another version, for the same code.
func retag(wasm []byte, tag string) []byte {
	body := append(str("kiln-test"), tag...)
	return append(append([]byte(nil), wasm...), section(0, body)...)
}

// TestUnloadSurvivesRestart: an unloaded version stays unloaded after a
// restart — it is neither listed nor compiled again, and its module file
// is gone — while the versions kept are restored once each (issue 21:
// every version loaded came back, with its memory, after each restart).
func TestUnloadSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, k := context.Background(), abi.KindScheduling
	fifo := wasmOf(t, "scheduling.fifo")
	h := newStateHost(t, dir)
	var kept, dropped VersionInfo
	for i, tag := range []string{"a", "b", "c"} {
		vi, err := h.Load(ctx, k, "mine", retag(fifo, tag), true, "load "+tag)
		if err != nil {
			t.Fatal(err)
		}
		switch i {
		case 0:
			dropped = vi
		case 1:
			kept = vi
		}
	}
	if _, err := h.Unload(k, "mine", dropped.Version, "not needed"); err != nil {
		t.Fatal(err)
	}
	h.Close()

	h2 := newStateHost(t, dir)
	defer h2.Close()
	ki := kindInfo(t, h2, k)
	var mine []int
	for _, v := range ki.Versions {
		if v.Name == "mine" {
			mine = append(mine, v.Version)
		}
	}
	if fmt.Sprint(mine) != fmt.Sprintf("[%d %d]", kept.Version, kept.Version+1) {
		t.Errorf("mine versions after the restart %v; want %d and %d (%d was unloaded)", mine, kept.Version, kept.Version+1, dropped.Version)
	}
	if ki.Active != fmt.Sprintf("mine@%d", kept.Version+1) {
		t.Errorf("active %s after the restart", ki.Active)
	}
	if _, err := os.Stat(filepath.Join(dir, "modules", dropped.SHA256+".wasm")); !os.IsNotExist(err) {
		t.Errorf("the unloaded version's module file: %v; want it gone", err)
	}
	h2.compiledMu.Lock()
	n := len(h2.compiled)
	h2.compiledMu.Unlock()
	if n != 2 {
		t.Errorf("%d modules compiled after the restart, want the 2 kept versions'", n)
	}
}
