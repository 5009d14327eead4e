package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/kernel/catalog"
	"github.com/kiln-gpu/kiln/kernel/cost"
	"github.com/kiln-gpu/kiln/kernel/plugin"
	"github.com/kiln-gpu/kiln/kernel/tier"
	sdk "github.com/kiln-gpu/kiln/sdk/plugin"
)

// tierPluginOnce builds the four plugin binaries into binDir once.
var (
	tierPluginOnce sync.Once
	tierPluginErr  error
)

func tierPlugins(t *testing.T) string {
	t.Helper()
	tierPluginOnce.Do(func() {
		for _, name := range []string{"storage-fs", "storage-http", "loader-safetensors", "loader-gguf"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "kiln-"+name), "../plugins/"+name).CombinedOutput()
			if err != nil {
				tierPluginErr = errors.New(string(out))
				return
			}
		}
	})
	if tierPluginErr != nil {
		t.Fatalf("build plugins: %v", tierPluginErr)
	}
	return binDir
}

// tierRig is a catalog over a storage-fs plugin plus a tier manager, all on
// real plugin processes.
type tierRig struct {
	host    *plugin.Host
	store   *plugin.Storage
	catalog *catalog.Catalog
	mgr     *tier.Manager
	models  string
}

// tierModels writes n random files of size bytes under checkpoints/.
func tierModels(t *testing.T, n int, size int) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "checkpoints"), 0o755); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range n {
		b := make([]byte, size)
		_, _ = rand.Read(b)
		id := "checkpoints/m" + string(rune('a'+i)) + ".bin"
		if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(id)), b, 0o644); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return dir, ids
}

func newTierRig(t *testing.T, models string, cfg tier.Config, pcfg plugin.Config) *tierRig {
	t.Helper()
	pcfg.Dir = tierPlugins(t)
	h := plugin.NewHost(pcfg, nil, zerolog.Nop())
	t.Cleanup(h.Close)
	st, err := h.Storage("models", "kiln-storage-fs", map[string]string{"root": models})
	if err != nil {
		t.Fatal(err)
	}
	ld, err := h.Loader("safetensors", "kiln-loader-safetensors", nil)
	if err != nil {
		t.Fatal(err)
	}
	cat := catalog.NewFromBackends([]catalog.Backend{{Name: "models", Storage: st}},
		catalog.ExtLoaders(map[string]sdk.Loader{".safetensors": ld}), cost.Config{}.WithDefaults())
	if _, err := cat.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	cfg.RAM.Dir = filepath.Join(data, "shm")
	m, err := tier.New(cfg, cat, tier.Options{DataDir: data})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return &tierRig{host: h, store: st, catalog: cat, mgr: m, models: models}
}

func tierStat(m *tier.Manager, name string) tier.Stats {
	for _, s := range m.Stats() {
		if s.Name == name {
			return s
		}
	}
	return tier.Stats{}
}

// checkLease compares the L2 segment with the source file.
func checkLease(t *testing.T, l *tier.Lease, src string) {
	t.Helper()
	got, err := os.ReadFile(l.Path())
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) || l.Bytes() != int64(len(want)) {
		t.Fatalf("L2 segment of %s differs from its source", l.Model())
	}
}

func TestTiersConcurrentColdRequestsMoveOneModel(t *testing.T) {
	models, ids := tierModels(t, 1, 3<<20)
	r := newTierRig(t, models, tier.Config{}, plugin.Config{})
	const n = 16
	leases := make([]*tier.Lease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			leases[i], errs[i] = r.mgr.Acquire(context.Background(), ids[0])
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		checkLease(t, leases[i], filepath.Join(models, ids[0]))
		leases[i].Release()
	}
	if got := tierStat(r.mgr, "remote").BytesOut; got != 3<<20 {
		t.Fatalf("remote bytes out = %d, want exactly one model (%d)", got, 3<<20)
	}
	if got := tierStat(r.mgr, "ram").BytesIn; got != 3<<20 {
		t.Fatalf("ram bytes in = %d, want %d", got, 3<<20)
	}
}

func TestTiersEvictAtDiskAndRAM(t *testing.T) {
	const size = 1 << 20
	models, ids := tierModels(t, 5, size)
	cfg := tier.Config{
		Disk: tier.DiskConfig{CapacityBytes: 3 * size, TargetFill: 1},
		RAM:  tier.RAMConfig{CapacityBytes: 2 * size, TargetFill: 1},
	}
	r := newTierRig(t, models, cfg, plugin.Config{})
	for round := range 2 {
		for _, id := range ids {
			l, err := r.mgr.Acquire(context.Background(), id)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			checkLease(t, l, filepath.Join(models, id))
			l.Release()
		}
	}
	disk, ram := tierStat(r.mgr, "disk"), tierStat(r.mgr, "ram")
	if disk.Evictions == 0 || ram.Evictions == 0 || disk.UsedBytes > 3*size || ram.UsedBytes > 2*size {
		t.Fatalf("disk %+v\nram %+v", disk, ram)
	}
	// A pinned entry is never evicted: with two leases held, a third model
	// does not fit in RAM.
	a, err := r.mgr.Acquire(context.Background(), ids[0])
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.mgr.Acquire(context.Background(), ids[1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.mgr.Acquire(context.Background(), ids[2]); !errors.Is(err, tier.ErrNoRoom) {
		t.Fatalf("third acquire with RAM pinned: err = %v, want ErrNoRoom", err)
	}
	checkLease(t, a, filepath.Join(models, ids[0]))
	a.Release()
	b.Release()
	if _, err := r.mgr.Acquire(context.Background(), ids[2]); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

func TestTiersCorruptDiskFileIsRefetched(t *testing.T) {
	const size = 1 << 20
	models, ids := tierModels(t, 2, size)
	cfg := tier.Config{RAM: tier.RAMConfig{CapacityBytes: size, TargetFill: 1}}
	r := newTierRig(t, models, cfg, plugin.Config{})
	l, err := r.mgr.Acquire(context.Background(), ids[0])
	if err != nil {
		t.Fatal(err)
	}
	sum := l.SHA256()
	l.Release()
	// Push ids[0] out of RAM, then flip a byte of its disk copy.
	l2, err := r.mgr.Acquire(context.Background(), ids[1])
	if err != nil {
		t.Fatal(err)
	}
	l2.Release()
	p := r.mgr.DiskPath(sum)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff ^ 0x5a}, size/2); err != nil {
		t.Fatal(err)
	}
	f.Close()
	l, err = r.mgr.Acquire(context.Background(), ids[0])
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	checkLease(t, l, filepath.Join(models, ids[0]))
	if c := tierStat(r.mgr, "disk").Corrupt; c != 1 {
		t.Fatalf("disk corrupt = %d, want 1", c)
	}
	if got := tierStat(r.mgr, "remote").BytesOut; got != 3*size {
		t.Fatalf("remote bytes out = %d, want %d (two models and one re-fetch)", got, 3*size)
	}
}

func TestTiersPluginKilledMidTransferResumes(t *testing.T) {
	const size = 24 << 20
	models, ids := tierModels(t, 1, size)
	r := newTierRig(t, models, tier.Config{}, plugin.Config{RestartBackoffMin: 10_000_000})
	ctx := context.Background()
	rc, err := r.store.Open(ctx, ids[0], 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatal(err)
	}
	pid := r.store.Process().PID()
	r.store.Process().Kill()
	waitFor(t, defaultTierWait, "plugin process gone", func() bool { return !processAlive(pid) })
	rest, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatalf("read after kill: %v", err)
	}
	want, _ := os.ReadFile(filepath.Join(models, ids[0]))
	if !bytes.Equal(append(head, rest...), want) {
		t.Fatalf("transfer across a plugin restart returned wrong bytes (%d of %d)", len(head)+len(rest), len(want))
	}
	// An idempotent call after the death is retried on a restarted plugin.
	if _, err := r.store.Stat(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if r.store.Process().Restarts() < 1 {
		t.Fatalf("restarts = %d, want >= 1", r.store.Process().Restarts())
	}
	// And the tiers still work end to end through the restarted plugin.
	l, err := r.mgr.Acquire(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	checkLease(t, l, filepath.Join(models, ids[0]))
	l.Release()
}

func TestTiersWrongPluginChecksumRefused(t *testing.T) {
	dir := tierPlugins(t)
	bad := sha256.Sum256([]byte("not the binary"))
	for _, tc := range []struct {
		name string
		cfg  plugin.Config
	}{
		{name: "mismatch", cfg: plugin.Config{Dir: dir, SHA256: map[string]string{"kiln-storage-fs": hex.EncodeToString(bad[:])}}},
		{name: "missing with require", cfg: plugin.Config{Dir: dir, RequireSHA256: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := plugin.NewHost(tc.cfg, nil, zerolog.Nop())
			defer h.Close()
			st, err := h.Storage("models", "kiln-storage-fs", map[string]string{"root": t.TempDir()})
			if err == nil {
				_, err = st.List(context.Background(), "")
			}
			if !errors.Is(err, plugin.ErrChecksum) {
				t.Fatalf("err = %v, want ErrChecksum", err)
			}
		})
	}
	// The right checksum starts it.
	sum, err := fileSum(filepath.Join(dir, "kiln-storage-fs"))
	if err != nil {
		t.Fatal(err)
	}
	h := plugin.NewHost(plugin.Config{Dir: dir, RequireSHA256: true, SHA256: map[string]string{"kiln-storage-fs": sum}}, nil, zerolog.Nop())
	defer h.Close()
	st, err := h.Storage("models", "kiln-storage-fs", map[string]string{"root": t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.List(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
}

func fileSum(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:]), nil
}

const defaultTierWait = 10_000_000_000 // 10s, as a time.Duration
