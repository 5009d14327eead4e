package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// TestLoadDedupesAndUnloads: identical bytes are one version; Unload
// refuses the active version and one an experiment uses, and otherwise
// drops the version, its compiled module and its module file.
func TestLoadDedupesAndUnloads(t *testing.T) {
	dir := t.TempDir()
	h, err := newHost(Config{CacheDir: testCacheDir, StateDir: dir, CallTimeout: time.Second}, zerolog.Nop(), clock.Real(), fstest.MapFS{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, k := context.Background(), abi.KindScheduling
	fifo := wasmOf(t, "scheduling.fifo")
	first, err := h.Load(ctx, k, "mine", fifo, false, "test")
	if err != nil {
		t.Fatal(err)
	}
	again, err := h.Load(ctx, k, "other-name", fifo, true, "same bytes")
	if err != nil {
		t.Fatal(err)
	}
	if !again.Reused || again.Name != "mine" || again.Version != 1 || !again.Active {
		t.Errorf("second load of the same bytes = %+v; want mine@1 reused and now active", again)
	}
	if n := len(kindInfo(t, h, k).Versions); n != 2 {
		t.Errorf("%d scheduling versions after loading the same bytes twice, want 2 (priority@1, mine@1)", n)
	}
	file := filepath.Join(dir, "modules", first.SHA256+".wasm")
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("module file: %v", err)
	}

	if _, err := h.Unload(k, "mine", 1, "test"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "active") {
		t.Errorf("unload of the active version: %v; want ErrInUse naming it active", err)
	}
	if _, err := h.Rollback(k, "test"); err != nil {
		t.Fatal(err)
	}
	h.SetInUse(func(kk abi.Kind, ref string) string {
		if kk == k && ref == "mine@1" {
			return "experiment e1"
		}
		return ""
	})
	if _, err := h.Unload(k, "mine", 1, "test"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "experiment e1") {
		t.Errorf("unload of an experiment's version: %v; want ErrInUse naming the experiment", err)
	}
	h.SetInUse(nil)
	if _, err := h.Unload(k, "mine", 9, "test"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unload of an unknown version: %v; want ErrNotFound", err)
	}
	if _, err := h.Unload(k, "mine", 1, "done"); err != nil {
		t.Fatal(err)
	}
	ki := kindInfo(t, h, k)
	for _, v := range ki.Versions {
		if v.Name == "mine" {
			t.Errorf("mine@%d still listed after its unload", v.Version)
		}
	}
	if last := ki.Changes[len(ki.Changes)-1]; last.Action != "unload" || last.From != "mine@1" {
		t.Errorf("last change %+v, want the unload of mine@1", last)
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("module file after the unload: %v; want it removed", err)
	}
	h.compiledMu.Lock()
	n := len(h.compiled)
	h.compiledMu.Unlock()
	if n != 0 {
		t.Errorf("%d compiled modules kept after the only WASM version was unloaded", n)
	}
	// Loaded again, the same bytes are a new version of the name.
	vi, err := h.Load(ctx, k, "mine", fifo, false, "back")
	if err != nil || vi.Reused || vi.Version != 1 {
		t.Errorf("load after unload = %+v, %v; want a fresh mine@1", vi, err)
	}

}

// TestGuestLogNamesPolicy: a guest's log line carries its policy's kind,
// name and version.
func TestGuestLogNamesPolicy(t *testing.T) {
	var buf syncBuffer
	h, err := newHost(Config{CacheDir: testCacheDir, CallTimeout: time.Second}, zerolog.New(&buf), clock.Real(), fstest.MapFS{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.Load(context.Background(), abi.KindScheduling, "chatty", wasmOf(t, "hostile"), true, "test"); err != nil {
		t.Fatal(err)
	}
	if err := h.SetParam(abi.KindScheduling, "mode", 8); err != nil { // modeLog
		t.Fatal(err)
	}
	jobs, workers, _ := sampleViews()
	h.Scheduler().Next(jobs, workers)
	out := buf.String()
	if !strings.Contains(out, `"policy":"scheduling.chatty@1"`) || !strings.Contains(out, "hello from the guest") {
		t.Errorf("log output %q; want the guest's line with policy scheduling.chatty@1", out)
	}
}

// syncBuffer is a bytes.Buffer safe for the host's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestUnloadReturnsMemory loads 15 versions of a Go module (other bytes
// each, so that each is compiled) and unloads each after the next is
// loaded; the process's RSS must end near where it began, where keeping
// them all grew it by ~14 MiB a version (issue 21: 262 → 470 MiB).
func TestUnloadReturnsMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles 15 Go modules")
	}
	fifo := wasmOf(t, "scheduling.fifo")
	h := newTestHost(t, Config{PoolSize: 2})
	ctx, k := context.Background(), abi.KindScheduling
	settle := func() uint64 {
		runtime.GC()
		debug.FreeOSMemory()
		return rssBytes(t)
	}
	var start uint64
	for i := range 16 {
		if _, err := h.Load(ctx, k, "churn", retag(fifo, fmt.Sprint(i)), true, "churn"); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			start = settle() // the first version's memory stays: it is active
			continue
		}
		if _, err := h.Unload(k, "churn", i, "churn"); err != nil { // the previous version
			t.Fatal(err)
		}
	}
	end := settle()
	t.Logf("RSS after the first load %d MiB, after 15 more loads and 15 unloads %d MiB", start>>20, end>>20)
	if end > start+60<<20 {
		t.Errorf("RSS grew %d MiB over 15 loads and unloads; want it returned", (end-start)>>20)
	}
}

// rssBytes reads the process's resident set size from /proc.
func rssBytes(t *testing.T) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status: cannot measure RSS here")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb uint64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb << 10
		}
	}
	t.Skip("no VmRSS in /proc/self/status")
	return 0
}
