// Package catalog maps model ids to the files that hold them.
//
// A model id is a ComfyUI folder plus file name, e.g.
// "checkpoints/sd_xl_base_1.0.safetensors". For now the catalog reads a local
// model store laid out as ComfyUI's models directory (New), or lists storage
// backend plugins and inspects each artifact with a loader plugin
// (NewFromBackends, then Refresh); both answer the same API.
//
//	c := catalog.New("./models", costCfg)
//	e, err := c.Lookup("loras/epi_noiseoffset2.safetensors")
//	// e.Path, e.Bytes, e.Family, e.NominalBytes, e.VRAMBytes
package catalog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/modelfile"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// ErrNotFound is returned for a model id that is not in the store.
var ErrNotFound = errors.New("model not found")

// ErrBadID is returned for an id that is not a clean relative path.
var ErrBadID = errors.New("bad model id")

// Entry describes one model file.
type Entry struct {
	ID     string `json:"id"`
	Path   string `json:"path"`
	Bytes  int64  `json:"bytes"`
	Family string `json:"family"`
	// NominalBytes is the size of the real model this file stands for; it
	// differs from Bytes only for synthetic, scaled-down demo files.
	NominalBytes int64 `json:"nominal_bytes"`
	// VRAMBytes is the estimated device memory the loaded model holds; the
	// ledger reserves it before a load starts.
	VRAMBytes int64  `json:"vram_bytes"`
	Format    string `json:"format"`

	// The fields below are set by catalogs built from storage backends.

	// URI names the artifact in its backend.
	URI string `json:"uri,omitempty"`
	// SHA256 is the digest the backend reports ("" if it does not know).
	SHA256 string `json:"sha256,omitempty"`
	// Backend is the name of the storage backend that holds the artifact.
	Backend string `json:"backend,omitempty"`
	// Component is the artifact's kind (checkpoint, lora, vae, ...).
	Component string `json:"component,omitempty"`
	// Tensors is the number of tensors the loader found.
	Tensors int `json:"tensors,omitempty"`
	// DependsOn lists what must load before this artifact.
	DependsOn []string `json:"depends_on,omitempty"`
	// LoaderVRAMBytes is the loader plugin's own footprint estimate.
	LoaderVRAMBytes int64 `json:"loader_vram_bytes,omitempty"`
	// DType is the dtype that holds most of the file's tensor bytes
	// ("BF16", "F8_E4M3"), empty when the header was not read: what a
	// loader's cast on load (cost.WeightBytes) starts from.
	DType string `json:"dtype,omitempty"`
}

// mainDType returns the dtype that holds the most bytes among tensors.
func mainDType[T any](tensors []T, dtypeAndBytes func(T) (string, int64)) string {
	by := map[string]int64{}
	best := ""
	for _, t := range tensors {
		dt, n := dtypeAndBytes(t)
		by[dt] += n
		if best == "" || by[dt] > by[best] || (by[dt] == by[best] && dt < best) {
			best = dt
		}
	}
	return best
}

// Catalog resolves model ids against a directory. Safe for concurrent use.
type Catalog struct {
	dir  string
	cost cost.Config

	mu    sync.Mutex
	cache map[string]cached

	set *backendSet // nil for a directory catalog
}

type cached struct {
	entry Entry
	size  int64
	mtime int64
}

// New returns a catalog over dir.
func New(dir string, c cost.Config) *Catalog {
	return &Catalog{dir: dir, cost: c, cache: map[string]cached{}}
}

// Dir is the model store's root ("" for a catalog built from backends).
func (c *Catalog) Dir() string { return c.dir }

// CleanID checks that id is "folder/name" with no way out of the store.
func CleanID(id string) error {
	if id == "" || strings.ContainsAny(id, "\\\x00") || strings.HasPrefix(id, "/") {
		return fmt.Errorf("%w: %q", ErrBadID, id)
	}
	for _, seg := range strings.Split(id, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: %q", ErrBadID, id)
		}
	}
	if !strings.Contains(id, "/") {
		return fmt.Errorf("%w: %q has no folder", ErrBadID, id)
	}
	return nil
}

// Lookup returns the entry for id, reading the file's header the first time
// and again whenever the file changes.
func (c *Catalog) Lookup(id string) (Entry, error) {
	if err := CleanID(id); err != nil {
		return Entry{}, err
	}
	if c.set != nil {
		return c.lookupBackends(id)
	}
	path := filepath.Join(c.dir, filepath.FromSlash(id))
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Entry{}, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return Entry{}, fmt.Errorf("catalog: stat %s: %w", id, err)
	}
	if st.IsDir() {
		return Entry{}, fmt.Errorf("%w: %s is a directory", ErrNotFound, id)
	}
	c.mu.Lock()
	hit, ok := c.cache[id]
	c.mu.Unlock()
	if ok && hit.size == st.Size() && hit.mtime == st.ModTime().UnixNano() {
		return hit.entry, nil
	}
	e, err := c.inspect(id, path, st.Size())
	if err != nil {
		return Entry{}, err
	}
	c.mu.Lock()
	c.cache[id] = cached{entry: e, size: st.Size(), mtime: st.ModTime().UnixNano()}
	c.mu.Unlock()
	return e, nil
}

func (c *Catalog) inspect(id, path string, size int64) (Entry, error) {
	e := Entry{ID: id, Path: path, Bytes: size, NominalBytes: size, Family: familyOf(id), Format: "unknown"}
	f, err := os.Open(path)
	if err != nil {
		return Entry{}, fmt.Errorf("catalog: open %s: %w", id, err)
	}
	defer f.Close()
	// Files that are not safetensors (a .pth upscaler, say) are served by
	// size alone; only their VRAM estimate is coarser.
	if h, err := modelfile.ReadHeader(f, size); err == nil {
		e.Format = "safetensors"
		e.NominalBytes = h.NominalBytes()
		e.DType = mainDType(h.Tensors, func(t modelfile.Tensor) (string, int64) { return t.DType, t.Bytes() })
		if fam := h.Family(); fam != "" {
			e.Family = fam
		}
	}
	e.VRAMBytes = cost.VRAMBytes(e.Family, e.NominalBytes)
	return e, nil
}

// List walks the store and returns every model, sorted by id.
func (c *Catalog) List() ([]Entry, error) {
	if c.set != nil {
		return c.listBackends(), nil
	}
	var out []Entry
	err := filepath.WalkDir(c.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		rel, err := filepath.Rel(c.dir, path)
		if err != nil {
			return err
		}
		id := filepath.ToSlash(rel)
		if CleanID(id) != nil {
			return nil
		}
		e, err := c.Lookup(id)
		if err != nil {
			return err
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: list %s: %w", c.dir, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// familyOf guesses the cost-model family from the folder and name, for files
// whose header does not say, as the workflow parser does for a graph's models.
func familyOf(id string) string {
	folder, name, _ := strings.Cut(id, "/")
	return workflow.GuessFamily(folder, name)
}
