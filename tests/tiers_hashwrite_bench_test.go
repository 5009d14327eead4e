package tests

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/plugin"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/tier"
	sdk "github.com/kiln-gpu/kiln/sdk/plugin"
)

// TestTierHashWhileWritingFigures measures the L4 → L3 fetch (the
// kiln-storage-http plugin writing the disk tier's file while the kernel
// hashes it) against `curl -o FILE` from the same local HTTP server, in six
// rounds that alternate which goes first, and prints each round's ratio and
// the median. curl -o FILE followed by reading the file back through Go's
// sha256 (kiln's hasher) is the cost of hashing after writing, what kiln
// did before. It runs only with KILN_TIER_BENCH set to
// the model size in MiB:
//
//	KILN_TIER_BENCH=512 go test -count=1 -run TestTierHashWhileWritingFigures -v ./tests/
func TestTierHashWhileWritingFigures(t *testing.T) {
	mib, _ := strconv.Atoi(os.Getenv("KILN_TIER_BENCH"))
	if mib <= 0 {
		t.Skip("set KILN_TIER_BENCH=<MiB> to run the tier benchmarks")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed: it is the baseline")
	}
	size := int64(mib) << 20
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "checkpoints"), 0o755); err != nil {
		t.Fatal(err)
	}
	id := "checkpoints/bench.bin"
	b := make([]byte, size)
	_, _ = rand.Read(b)
	if err := os.WriteFile(filepath.Join(dir, "checkpoints", "bench.bin"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	idx, err := exec.Command(filepath.Join(tierPlugins(t), "kiln-storage-http"), "index", dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	h := plugin.NewHost(plugin.Config{Dir: tierPlugins(t)}, nil, zerolog.Nop())
	defer h.Close()
	st, err := h.Storage("http", "kiln-storage-http", map[string]string{"url": srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	cat := catalog.NewFromBackends([]catalog.Backend{{Name: "http", Storage: st}}, func(string) sdk.Loader { return nil }, cost.Config{}.WithDefaults())
	if _, err := cat.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	cfg := tier.Config{Disk: tier.DiskConfig{CapacityBytes: 4 * size}, RAM: tier.RAMConfig{CapacityBytes: 4 * size}}
	rate := func(d time.Duration) float64 { return float64(size) / d.Seconds() / 1e6 }
	timed := func(name string, args ...string) time.Duration {
		start := time.Now()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		return time.Since(start)
	}
	curlFile := filepath.Join(work, "curl-baseline.bin")
	curl := func() (write, writeThenHash time.Duration) {
		write = timed("curl", "-sf", "-o", curlFile, srv.URL+"/"+id)
		start := time.Now()
		f, err := os.Open(curlFile)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := io.Copy(sha256.New(), f); err != nil {
			t.Fatal(err)
		}
		writeThenHash = write + time.Since(start)
		_ = os.Remove(curlFile)
		return write, writeThenHash
	}
	kiln := func(round int) float64 {
		// A fresh disk tier each round, so that every round fetches.
		m, err := tier.New(cfg, cat, tier.Options{DataDir: filepath.Join(work, fmt.Sprint("kiln-", round)), Log: zerolog.Nop(), DiskEvictor: policy.Native().NewEvictor(), RAMEvictor: policy.Native().NewEvictor()})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = m.Close(); _ = os.RemoveAll(m.DiskDir()) }()
		if err := m.Prefetch(context.Background(), []string{id}); err != nil {
			t.Fatal(err)
		}
		for _, s := range m.Stats() {
			if s.Name == "remote" { // the first fetch's rate, as measured by fetchL3
				return s.BandwidthBytesPerS / 1e6
			}
		}
		t.Fatal("no remote tier in Stats")
		return 0
	}
	timed("curl", "-sf", "-o", "/dev/null", srv.URL+"/"+id) // the server's file into the page cache
	var ratios, twoPass []float64
	for round := range 6 {
		var k float64
		var c, ch time.Duration
		if round%2 == 0 {
			k = kiln(round)
			c, ch = curl()
		} else {
			c, ch = curl()
			k = kiln(round)
		}
		ratios = append(ratios, k/rate(c))
		twoPass = append(twoPass, rate(ch)/rate(c))
		fmt.Printf("round %d: kiln L4->L3 (storage-http, hashed while written) %.0f MB/s; curl -o FILE %.0f MB/s; ratio %.2f; curl -o FILE then sha256 read-back %.0f MB/s (%.2f of curl)\n",
			round+1, k, rate(c), k/rate(c), rate(ch), rate(ch)/rate(c))
	}
	fmt.Printf("median over 6 rounds: kiln / curl -o FILE = %.2f (range %.2f–%.2f); write then hash / curl = %.2f\n",
		median(ratios), slices.Min(ratios), slices.Max(ratios), median(twoPass))
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
