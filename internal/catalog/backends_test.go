package catalog

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/modelfile"
	sdk "github.com/kiln-gpu/kiln/sdk/plugin"
)

// dirStorage serves a directory's files as the fs storage backend does,
// local paths included.
type dirStorage struct{ root string }

func (d dirStorage) List(ctx context.Context, prefix string) ([]sdk.Object, error) {
	var out []sdk.Object
	err := filepath.WalkDir(d.root, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		key, _ := filepath.Rel(d.root, p)
		key = filepath.ToSlash(key)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		o, err := d.Stat(ctx, key)
		out = append(out, o)
		return err
	})
	return out, err
}

func (d dirStorage) Stat(_ context.Context, key string) (sdk.Object, error) {
	fi, err := os.Stat(filepath.Join(d.root, key))
	if err != nil {
		return sdk.Object{}, err
	}
	return sdk.Object{Key: key, Size: fi.Size(), ModTime: fi.ModTime(), URI: "test://" + key, LocalPath: filepath.Join(d.root, key)}, nil
}

func (d dirStorage) Open(_ context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	f, err := os.Open(filepath.Join(d.root, key))
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	if length <= 0 {
		return f, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, length), f}, nil
}

// TestBackendSizesFilesNoLoaderReads checks that a model file whose
// extension no loader reads (.ckpt) is sized by its safetensors header when
// it has one — the synthetic stand-ins of make run and the tests do, and
// the workers report the nominal size they stand for, so sizing them by
// their few MiB on disk under-counted VRAM by gigabytes — and by its size
// when it has none (a real pickle).
func TestBackendSizesFilesNoLoaderReads(t *testing.T) {
	root := t.TempDir()
	const nominal = 2 << 30
	if err := os.MkdirAll(filepath.Join(root, "checkpoints"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := modelfile.Spec{ID: "checkpoints/v1-5-pruned-emaonly.ckpt", Family: "sd15", NominalBytes: nominal, Scale: 0.002, Seed: 1}
	if err := modelfile.SynthFile(filepath.Join(root, spec.ID), spec); err != nil {
		t.Fatal(err)
	}
	pickle := append([]byte("PK\x03\x04"), make([]byte, 1<<20)...)
	if err := os.WriteFile(filepath.Join(root, "checkpoints/real.ckpt"), pickle, 0o644); err != nil {
		t.Fatal(err)
	}
	c := NewFromBackends([]Backend{{Name: "models", Storage: dirStorage{root}}}, ExtLoaders(nil), cost.Config{})
	if _, err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	synth, err := c.Lookup(spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if synth.NominalBytes != nominal || synth.Format != "safetensors" || synth.Family != "sd15" || synth.VRAMBytes < nominal/2 {
		t.Errorf("synthetic .ckpt: nominal %d, format %s, family %s, VRAM %d; want nominal %d from its header", synth.NominalBytes, synth.Format, synth.Family, synth.VRAMBytes, int64(nominal))
	}
	real, err := c.Lookup("checkpoints/real.ckpt")
	if err != nil {
		t.Fatal(err)
	}
	if real.NominalBytes != int64(len(pickle)) || real.Format != "unknown" {
		t.Errorf("pickle .ckpt: nominal %d, format %s; want its size %d and format unknown", real.NominalBytes, real.Format, len(pickle))
	}
}
