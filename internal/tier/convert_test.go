package tier_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/plugin"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/tier"
	sdk "github.com/kiln-gpu/kiln/sdk/plugin"
)

// buildPlugins builds the storage-fs and loader-safetensors plugins into a
// temporary directory: the conversion runs in the real plugin process.
func buildPlugins(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds plugin binaries; skipped with -short")
	}
	dir := t.TempDir()
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	for _, p := range []string{"storage-fs", "loader-safetensors"} {
		cmd := exec.Command(gobin, "build", "-o", filepath.Join(dir, "kiln-"+p), "./plugins/"+p)
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", p, err, out)
		}
	}
	return dir
}

// writeF32Model writes a safetensors file of two F32 weights and a bias.
func writeF32Model(t *testing.T, path string) (weights []float32) {
	t.Helper()
	header := map[string]any{"__metadata__": map[string]string{"kiln.family": "flux"}}
	var data []byte
	add := func(name string, shape []int, n int) {
		begin := len(data)
		for i := 0; i < n; i++ {
			v := float32(math.Sin(float64(len(weights)+1)*0.37)) * 2
			weights = append(weights, v)
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
		}
		header[name] = map[string]any{"dtype": "F32", "shape": shape, "data_offsets": []int{begin, len(data)}}
	}
	add("double_blocks.0.qkv.weight", []int{64, 32}, 64*32)
	add("double_blocks.0.qkv.bias", []int{64}, 64)
	add("double_blocks.1.qkv.weight", []int{32, 32}, 32*32)
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(append(out, h...), data...), 0o644); err != nil {
		t.Fatal(err)
	}
	return weights
}

type headerEntry struct {
	DType       string  `json:"dtype"`
	DataOffsets []int64 `json:"data_offsets"`
}

func readHeader(t *testing.T, path string) map[string]json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	var h map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestAcquireConverted(t *testing.T) {
	bin := buildPlugins(t)
	models := t.TempDir()
	const id = "diffusion_models/flux-tiny.safetensors"
	writeF32Model(t, filepath.Join(models, id))
	srcBytes, _ := os.ReadFile(filepath.Join(models, id))
	srcSum := sha256.Sum256(srcBytes)

	host := plugin.NewHost(plugin.Config{Dir: bin}, clock.Real(), zerolog.Nop())
	t.Cleanup(host.Close)
	fs, err := host.Storage("models", "kiln-storage-fs", map[string]string{"root": models})
	if err != nil {
		t.Fatal(err)
	}
	ld, err := host.Loader("safetensors", "kiln-loader-safetensors", nil)
	if err != nil {
		t.Fatal(err)
	}
	cat := catalog.NewFromBackends([]catalog.Backend{{Name: "models", Storage: fs}},
		catalog.ExtLoaders(map[string]sdk.Loader{".safetensors": ld}), cost.Default())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := cat.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	cfg := tier.Config{RAM: tier.RAMConfig{Dir: filepath.Join(data, "shm")}}
	m, err := tier.New(cfg, cat, tier.Options{DataDir: data, DiskEvictor: policy.Native().NewEvictor(), RAMEvictor: policy.Native().NewEvictor()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })

	lease, err := m.AcquireConverted(ctx, id, "fp16")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(lease.Path())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(got)
	if hex.EncodeToString(sum[:]) != lease.SHA256() || int64(len(got)) != lease.Bytes() {
		t.Errorf("lease says %d bytes %s; the segment holds %d bytes %x", lease.Bytes(), lease.SHA256(), len(got), sum)
	}
	if lease.SHA256() == hex.EncodeToString(srcSum[:]) || lease.Model() != id {
		t.Errorf("lease %s for %s is the source's", lease.SHA256(), lease.Model())
	}
	// F32 data halves; the header grows a little (metadata).
	if want := len(srcBytes) / 2; len(got) > want+256 || len(got) < want-256 {
		t.Errorf("fp16 artifact %d bytes, source %d", len(got), len(srcBytes))
	}
	h := readHeader(t, lease.Path())
	for _, name := range []string{"double_blocks.0.qkv.weight", "double_blocks.0.qkv.bias", "double_blocks.1.qkv.weight"} {
		var e headerEntry
		if err := json.Unmarshal(h[name], &e); err != nil || e.DType != "F16" {
			t.Errorf("%s: %s, %v", name, h[name], err)
		}
	}
	lease.Release()

	// The artifact is content-addressed in the disk tier, with a record
	// of its source.
	if _, err := os.Stat(m.DiskPath(lease.SHA256())); err != nil {
		t.Errorf("converted artifact not in the disk tier: %v", err)
	}
	rec, ok := m.ConversionOf(hex.EncodeToString(srcSum[:]), "fp16")
	if !ok || rec.SHA256 != lease.SHA256() || rec.SourceModel != id || rec.SourceBytes != int64(len(srcBytes)) ||
		rec.Bytes != lease.Bytes() || rec.Tensors != 3 || rec.Format != "safetensors" {
		t.Fatalf("record %+v, %v", rec, ok)
	}

	// A second acquire reuses it: no second conversion.
	l2, err := m.AcquireConverted(ctx, id, "fp16")
	if err != nil {
		t.Fatal(err)
	}
	l2.Release()
	if again, _ := m.ConversionOf(hex.EncodeToString(srcSum[:]), "fp16"); !again.ConvertedAt.Equal(rec.ConvertedAt) || l2.SHA256() != rec.SHA256 {
		t.Errorf("converted twice: %+v then %+v", rec, again)
	}

	// fp8: weights become F8_E4M3 with a scale each, the bias stays F32.
	l8, err := m.AcquireConverted(ctx, id, "fp8_e4m3fn")
	if err != nil {
		t.Fatal(err)
	}
	h = readHeader(t, l8.Path())
	want := map[string]string{"double_blocks.0.qkv.weight": "F8_E4M3", "double_blocks.0.qkv.scale_weight": "F32",
		"double_blocks.0.qkv.bias": "F32", "double_blocks.1.qkv.weight": "F8_E4M3", "scaled_fp8": "F8_E4M3"}
	for name, dt := range want {
		var e headerEntry
		if err := json.Unmarshal(h[name], &e); err != nil || e.DType != dt {
			t.Errorf("fp8 %s: %s, want %s", name, h[name], dt)
		}
	}
	if l8.Bytes() >= lease.Bytes() {
		t.Errorf("fp8 artifact %d bytes is not smaller than fp16's %d", l8.Bytes(), lease.Bytes())
	}
	l8.Release()

	// After a restart the record finds the artifact on disk: nothing is
	// converted again.
	m.Close()
	m2, err := tier.New(cfg, cat, tier.Options{DataDir: data, DiskEvictor: policy.Native().NewEvictor(), RAMEvictor: policy.Native().NewEvictor()})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	l3, err := m2.AcquireConverted(ctx, id, "fp16")
	if err != nil {
		t.Fatal(err)
	}
	l3.Release()
	if again, _ := m2.ConversionOf(hex.EncodeToString(srcSum[:]), "fp16"); !again.ConvertedAt.Equal(rec.ConvertedAt) || l3.SHA256() != rec.SHA256 {
		t.Errorf("converted again after a restart: %+v then %+v", rec, again)
	}

	// Bad dtypes are refused before any work.
	if _, err := m2.AcquireConverted(ctx, id, "int4"); err == nil {
		t.Error("int4 accepted")
	}
}

func TestAcquireConvertedWithoutConverter(t *testing.T) {
	models := t.TempDir()
	const id = "checkpoints/tiny.safetensors"
	writeF32Model(t, filepath.Join(models, id))
	cat := catalog.New(models, cost.Default())
	data := t.TempDir()
	m, err := tier.New(tier.Config{RAM: tier.RAMConfig{Dir: filepath.Join(data, "shm")}}, cat, tier.Options{DataDir: data, DiskEvictor: policy.Native().NewEvictor(), RAMEvictor: policy.Native().NewEvictor()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	_, err = m.AcquireConverted(context.Background(), id, "fp16")
	if !errors.Is(err, tier.ErrNoConverter) {
		t.Errorf("err = %v, want ErrNoConverter", err)
	}
}

func TestConvertConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     tier.ConvertConfig
		wantErr bool
	}{
		{name: "empty", cfg: tier.ConvertConfig{}},
		{name: "family", cfg: tier.ConvertConfig{Rules: []tier.ConvertRule{{Family: "flux", DType: "fp8_e4m3fn"}}, ToFit: "fp8_e4m3fn"}},
		{name: "model", cfg: tier.ConvertConfig{Rules: []tier.ConvertRule{{Model: "checkpoints/x.safetensors", DType: "fp16"}}}},
		{name: "both", cfg: tier.ConvertConfig{Rules: []tier.ConvertRule{{Model: "a", Family: "flux", DType: "fp16"}}}, wantErr: true},
		{name: "neither", cfg: tier.ConvertConfig{Rules: []tier.ConvertRule{{DType: "fp16"}}}, wantErr: true},
		{name: "bad dtype", cfg: tier.ConvertConfig{Rules: []tier.ConvertRule{{Family: "flux", DType: "fp4"}}}, wantErr: true},
		{name: "bad to_fit", cfg: tier.ConvertConfig{ToFit: "F8_E4M3"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err != nil) != tc.wantErr {
				t.Errorf("Validate() = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
	c := tier.ConvertConfig{Rules: []tier.ConvertRule{{Model: "diffusion_models/a.safetensors", DType: "bf16"}, {Family: "flux", DType: "fp8_e4m3fn"}}}
	if got := c.Target("diffusion_models/a.safetensors", "flux"); got != "bf16" {
		t.Errorf("model rule first: %q", got)
	}
	if got := c.Target("diffusion_models/b.safetensors", "FLUX"); got != "fp8_e4m3fn" {
		t.Errorf("family rule: %q", got)
	}
	if got := c.Target("checkpoints/sd15.safetensors", "sd15"); got != "" {
		t.Errorf("no rule: %q", got)
	}
}
