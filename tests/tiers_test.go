package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/plugin"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/tier"
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

// newTierRig builds tiers over models; evictors, when given, are the disk
// and RAM tiers' (default: the native lru built-in's, as policy.Native).
func newTierRig(t *testing.T, models string, cfg tier.Config, pcfg plugin.Config, evictors ...decision.Evictor) *tierRig {
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
	opts := tier.Options{DataDir: data, DiskEvictor: policy.Native().NewEvictor(), RAMEvictor: policy.Native().NewEvictor()}
	if len(evictors) == 2 {
		opts.DiskEvictor, opts.RAMEvictor = evictors[0], evictors[1]
	}
	m, err := tier.New(cfg, cat, opts)
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
	// InRAM, which the dispatcher's lookahead asks, sees exactly what L2
	// holds: the model just acquired and as many others as fill it.
	held := 0
	for _, id := range ids {
		if r.mgr.InRAM(id) {
			held++
		}
	}
	if ram := tierStat(r.mgr, "ram"); !r.mgr.InRAM(ids[2]) || int64(held) != ram.UsedBytes/size || r.mgr.InRAM("never/fetched.safetensors") {
		t.Errorf("InRAM: %d models held, ram uses %d bytes; ids[2] held %v", held, ram.UsedBytes, r.mgr.InRAM(ids[2]))
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
	// An Open stream resumes at the byte it had reached.
	t.Run("open", func(t *testing.T) {
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
	})
	// A FetchTo that dies half way is retried on a restarted plugin, which
	// rewrites the whole file.
	t.Run("fetch to", testTiersPluginKilledMidFetchTo)
}

func testTiersPluginKilledMidFetchTo(t *testing.T) {
	const size = 24 << 20
	models, ids := tierModels(t, 1, size)
	var requests atomic.Int64
	stalled := make(chan struct{})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	files := http.FileServer(http.Dir(models))
	// The first GET of the model sends half its bytes and stalls until the
	// plugin that asked is killed; later ones are served in full.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/"+ids[0] || r.Method != http.MethodGet || requests.Add(1) > 1 {
			files.ServeHTTP(w, r)
			return
		}
		b, _ := os.ReadFile(filepath.Join(models, ids[0]))
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b[:len(b)/2])
		w.(http.Flusher).Flush()
		close(stalled)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	writeHTTPIndex(t, models)
	h := plugin.NewHost(plugin.Config{Dir: tierPlugins(t), RestartBackoffMin: 10_000_000}, nil, zerolog.Nop())
	t.Cleanup(h.Close)
	st, err := h.Storage("http", "kiln-storage-http", map[string]string{"url": srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	cs := &countingStorage{Storage: st, fetcher: st}
	m := tierManagerOver(t, cs)
	type result struct {
		l   *tier.Lease
		err error
	}
	done := make(chan result, 1)
	go func() {
		l, err := m.Acquire(context.Background(), ids[0])
		done <- result{l, err}
	}()
	select {
	case <-stalled:
	case res := <-done:
		t.Fatalf("acquire finished before the stall: %v", res.err)
	}
	pid := st.Process().PID()
	st.Process().Kill()
	waitFor(t, defaultTierWait, "plugin process gone", func() bool { return !processAlive(pid) })
	res := <-done
	if res.err != nil {
		t.Fatalf("acquire across a plugin death: %v", res.err)
	}
	checkLease(t, res.l, filepath.Join(models, ids[0]))
	res.l.Release()
	if st.Process().Restarts() < 1 || requests.Load() < 2 {
		t.Fatalf("restarts = %d, model requests = %d; want a restart and a second request", st.Process().Restarts(), requests.Load())
	}
	if f, o := cs.fetches.Load(), cs.opens.Load(); f != 1 || o != 0 {
		t.Fatalf("FetchTo calls = %d, Open calls = %d; want 1 and 0", f, o)
	}
	if got := tierStat(m, "remote").BytesOut; got != size {
		t.Fatalf("remote bytes out = %d, want %d", got, size)
	}
}

// countingStorage counts the calls that move a model's bytes. fetcher, when
// set, is what FetchTo forwards to; a backend without FetchTo leaves it nil
// and answers ErrUnsupported, as a plugin that answers UNIMPLEMENTED does.
type countingStorage struct {
	sdk.Storage
	fetcher        sdk.Fetcher
	fetches, opens atomic.Int64
}

var _ sdk.Fetcher = (*countingStorage)(nil)

func (c *countingStorage) Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	c.opens.Add(1)
	return c.Storage.Open(ctx, key, offset, length)
}

func (c *countingStorage) FetchTo(ctx context.Context, key string, offset, length int64, path string) (int64, error) {
	c.fetches.Add(1)
	if c.fetcher == nil {
		return 0, fmt.Errorf("fetch %s: %w", key, sdk.ErrUnsupported)
	}
	return c.fetcher.FetchTo(ctx, key, offset, length, path)
}

// streamOnly hides every method but those of sdk.Storage: a backend that
// has never heard of FetchTo.
type streamOnly struct{ sdk.Storage }

// tierManagerOver returns a tier manager over a catalog of one backend.
func tierManagerOver(t *testing.T, st sdk.Storage) *tier.Manager {
	t.Helper()
	cat := catalog.NewFromBackends([]catalog.Backend{{Name: "models", Storage: st}},
		func(string) sdk.Loader { return nil }, cost.Config{}.WithDefaults())
	if _, err := cat.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	m, err := tier.New(tier.Config{RAM: tier.RAMConfig{Dir: filepath.Join(data, "shm")}}, cat, tier.Options{DataDir: data, DiskEvictor: policy.Native().NewEvictor(), RAMEvictor: policy.Native().NewEvictor()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// writeHTTPIndex writes the index.json storage-http lists dir with.
func writeHTTPIndex(t *testing.T, dir string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(tierPlugins(t), "kiln-storage-http"), "index", dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestTiersFetchToSkipsThePluginConnection checks that both storage plugins
// write models straight into the disk tier, and that a backend without
// FetchTo still works through Open.
func TestTiersFetchToSkipsThePluginConnection(t *testing.T) {
	const size = 5<<20 + 123
	models, ids := tierModels(t, 1, size)
	writeHTTPIndex(t, models)
	srv := httptest.NewServer(http.FileServer(http.Dir(models)))
	t.Cleanup(srv.Close)
	h := plugin.NewHost(plugin.Config{Dir: tierPlugins(t)}, nil, zerolog.Nop())
	t.Cleanup(h.Close)
	fsStore, err := h.Storage("fs", "kiln-storage-fs", map[string]string{"root": models})
	if err != nil {
		t.Fatal(err)
	}
	httpStore, err := h.Storage("http", "kiln-storage-http", map[string]string{"url": srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name        string
		store       *countingStorage
		hideFetchTo bool
		wantFetches int64
		wantOpens   int64
	}{
		{name: "storage-fs", store: &countingStorage{Storage: fsStore, fetcher: fsStore}, wantFetches: 1},
		{name: "storage-http", store: &countingStorage{Storage: httpStore, fetcher: httpStore}, wantFetches: 1},
		{name: "plugin answers unsupported", store: &countingStorage{Storage: httpStore}, wantFetches: 1, wantOpens: 1},
		{name: "backend without FetchTo", store: &countingStorage{Storage: fsStore}, hideFetchTo: true, wantOpens: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st sdk.Storage = tc.store
			if tc.hideFetchTo {
				st = streamOnly{tc.store}
			}
			m := tierManagerOver(t, st)
			l, err := m.Acquire(context.Background(), ids[0])
			if err != nil {
				t.Fatal(err)
			}
			checkLease(t, l, filepath.Join(models, ids[0]))
			l.Release()
			if f, o := tc.store.fetches.Load(), tc.store.opens.Load(); f != tc.wantFetches || o != tc.wantOpens {
				t.Fatalf("FetchTo calls = %d, Open calls = %d; want %d and %d", f, o, tc.wantFetches, tc.wantOpens)
			}
			if got := tierStat(m, "remote").BytesOut; got != size {
				t.Fatalf("remote bytes out = %d, want %d", got, size)
			}
		})
	}
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
