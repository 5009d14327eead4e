package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// modules maps "kind.name" (and "hostile") to built WASM files; it is empty
// when the modules could not be built, and tests that need them skip.
var (
	modules    = map[string]string{}
	modulesErr error
	buildTook  time.Duration
	// testCacheDir is wazero's compilation cache shared by the tests' hosts.
	testCacheDir string
)

func TestMain(m *testing.M) {
	start := time.Now()
	modulesErr = buildModules()
	buildTook = time.Since(start)
	os.Exit(m.Run())
}

// repoRoot is two directories up from this package.
func repoRoot() string { abs, _ := filepath.Abs("../.."); return abs }

// buildModules builds every built-in policy and the hostile test module
// with GOOS=wasip1, into a cache directory keyed by a hash of every Go
// source they can depend on, so that only the first run pays for it.
func buildModules() error {
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		return fmt.Errorf("no go tool to build WASM modules: %w", err)
	}
	root := repoRoot()
	targets := map[string]string{"hostile": "./internal/policy/testdata/hostile", "sneaky": "./internal/policy/testdata/sneaky"}
	for _, k := range abi.Kinds {
		for _, n := range BuiltinNames(k) {
			dir := "./policies/" + k.String() + "/" + n + "/wasm"
			if _, err := os.Stat(filepath.Join(root, dir)); err != nil {
				continue // a native-only policy a test registered (RegisterNative)
			}
			targets[k.String()+"."+n] = dir
		}
	}
	h := sha256.New()
	fmt.Fprintln(h, runtime.Version())
	for _, dir := range []string{"sdk/policy", "policies", "internal/policy/testdata/hostile", "internal/policy/testdata/sneaky", "go.mod"} {
		_ = filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !(strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "go.mod")) {
				return nil
			}
			f, err := os.Open(p)
			if err == nil {
				fmt.Fprintln(h, p)
				_, _ = io.Copy(h, f)
				f.Close()
			}
			return nil
		})
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	testCacheDir = filepath.Join(cache, "kiln-policy-test", "wazero")
	dir := filepath.Join(cache, "kiln-policy-test", hex.EncodeToString(h.Sum(nil))[:16])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	now := time.Now()
	_ = os.Chtimes(dir, now, now) // in use: see below
	// Builds for older sources are dead weight, but only once they are a
	// day old: the hash covers the checkout's paths, so two checkouts
	// tested at once (a clone beside the working tree) each have a
	// directory, and removing the other's made its tests fail mid-run.
	if old, err := os.ReadDir(filepath.Dir(dir)); err == nil {
		for _, e := range old {
			info, err := e.Info()
			if err != nil || !e.IsDir() || e.Name() == "wazero" || e.Name() == filepath.Base(dir) || time.Since(info.ModTime()) < 24*time.Hour {
				continue
			}
			_ = os.RemoveAll(filepath.Join(filepath.Dir(dir), e.Name()))
		}
	}
	names := make([]string, 0, len(targets))
	for n := range targets {
		names = append(names, n)
	}
	sort.Strings(names)
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, max(2, runtime.NumCPU()))
	var wg sync.WaitGroup
	for _, n := range names {
		out := filepath.Join(dir, n+".wasm")
		if _, err := os.Stat(out); err == nil {
			modules[n] = out
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			tmp := out + ".tmp"
			cmd := exec.Command(gobin, "build", "-buildmode=c-shared", "-trimpath", "-ldflags=-s -w", "-o", tmp, targets[n])
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
			b, err := cmd.CombinedOutput()
			if err == nil {
				err = os.Rename(tmp, out)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("build %s: %v\n%s", n, err, b)
				}
				return
			}
			modules[n] = out
		}()
	}
	wg.Wait()
	return firstErr
}

// module returns a built module's bytes or skips the test.
func wasmOf(t testing.TB, name string) []byte {
	t.Helper()
	p, ok := modules[name]
	if !ok {
		t.Skipf("WASM module %s not built: %v", name, modulesErr)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestModulesBuilt(t *testing.T) {
	if modulesErr != nil {
		t.Fatalf("building the WASM modules failed: %v", modulesErr)
	}
	t.Logf("%d modules ready in %s", len(modules), buildTook)
}
