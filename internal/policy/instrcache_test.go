package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// TestInstrumentVersionPinned pins what instrument writes for two fixed
// modules. When it fails, instrument's output has changed: bump
// instrumentVersion, so that no kiln takes another's instrumented modules
// from a shared cache, and then update the sums here.
func TestInstrumentVersionPinned(t *testing.T) {
	want := map[bool]string{
		false: "938c1b8b13cf7b1cd32d0611042fd8304ee4a24d865d2211c51871d371966669",
		true:  "4b51fd560082b5f9810983ff030c379faa801c1230e3a92ffb71be3351723a7a",
	}
	for withStart, sum := range want {
		code, err := instrument(spinModule(withStart))
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.Sum256(code)
		if hex.EncodeToString(got[:]) != sum {
			t.Errorf("instrument(spin, start %v) has sha256 %x, pinned %s for instrumentVersion %d", withStart, got, sum, instrumentVersion)
		}
	}
}

// TestInstrumentedCache loads a module into hosts that share a cache dir:
// the first leaves the instrumented module there, checksummed; a damaged
// file is recomputed and rewritten, never compiled.
func TestInstrumentedCache(t *testing.T) {
	wasm := wasmOf(t, "scheduling.fifo")
	dir := t.TempDir()
	sum := sha256.Sum256(wasm)
	path := filepath.Join(dir, "kiln-instrumented", fmt.Sprintf("v%d-%x.wasm", instrumentVersion, sum))
	load := func() {
		t.Helper()
		h, err := newHost(Config{CacheDir: dir, CallTimeout: time.Second}, zerolog.Nop(), clock.Real(), fstest.MapFS{})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if _, err := h.Load(context.Background(), abi.KindScheduling, "fifo", wasm, true, "test"); err != nil {
			t.Fatal(err)
		}
	}
	want, err := instrument(wasm)
	if err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if s := sha256.Sum256(want); !bytes.Equal(b[:sha256.Size], s[:]) || !bytes.Equal(b[sha256.Size:], want) {
			t.Errorf("cached file is not the checksummed instrumented module (%d bytes)", len(b))
		}
	}
	load()
	check()
	b, _ := os.ReadFile(path)
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	load()
	check()
}
