package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/modelfile"
	sdk "github.com/kiln-gpu/kiln/sdk/plugin"
)

// Backend is one storage source of a catalog built from backends.
type Backend struct {
	Name    string
	Storage sdk.Storage
}

// LoaderFor returns the loader for a key (by its extension), or nil.
type LoaderFor func(key string) sdk.Loader

// headStart is the first read of an artifact's head; a loader that needs
// more says how much.
const (
	headStart = 64 << 10
	headMax   = 256 << 20
)

type backendSet struct {
	backends []Backend
	loader   LoaderFor

	refreshMu sync.Mutex // one refresh at a time
	mu        sync.RWMutex
	snapshot  map[string]Entry
	sources   map[string]Source
	inspected map[string]Entry // backend|key|size|mtime|sha → entry
}

// NewFromBackends returns a catalog built from storage backends: call
// Refresh to list them (the first one that has a key wins) and inspect each
// artifact's head with the loader for its extension.
func NewFromBackends(backends []Backend, loaders LoaderFor, c cost.Config) *Catalog {
	return &Catalog{cost: c, cache: map[string]cached{}, set: &backendSet{
		backends: backends, loader: loaders,
		snapshot: map[string]Entry{}, sources: map[string]Source{}, inspected: map[string]Entry{},
	}}
}

// RefreshResult says what a Refresh found.
type RefreshResult struct {
	Models  int      `json:"models"`
	Added   []string `json:"added"`
	Removed []string `json:"removed"`
	// Errors are per-artifact problems; those artifacts stay listed with
	// format "unknown".
	Errors []string `json:"errors,omitempty"`
}

// Refresh lists every backend again. For a directory catalog it forgets
// cached headers so that the next Lookup reads them again.
func (c *Catalog) Refresh(ctx context.Context) (RefreshResult, error) {
	if c.set == nil {
		c.mu.Lock()
		c.cache = map[string]cached{}
		c.mu.Unlock()
		l, err := c.List()
		return RefreshResult{Models: len(l)}, err
	}
	s := c.set
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	snap := map[string]Entry{}
	srcs := map[string]Source{}
	var res RefreshResult
	for _, b := range s.backends {
		objs, err := b.Storage.List(ctx, "")
		if err != nil {
			return res, fmt.Errorf("catalog: list backend %s: %w", b.Name, err)
		}
		for _, o := range objs {
			if CleanID(o.Key) != nil {
				continue
			}
			if _, dup := snap[o.Key]; dup {
				continue
			}
			e, err := c.inspectObject(ctx, b, o)
			if err != nil {
				res.Errors = append(res.Errors, fmt.Sprintf("%s: %v", o.Key, err))
			}
			snap[o.Key] = e
			srcs[o.Key] = Source{Storage: b.Storage, Backend: b.Name, Key: o.Key, Size: o.Size, SHA256: o.SHA256}
		}
	}
	s.mu.Lock()
	for id := range snap {
		if _, ok := s.snapshot[id]; !ok {
			res.Added = append(res.Added, id)
		}
	}
	for id := range s.snapshot {
		if _, ok := snap[id]; !ok {
			res.Removed = append(res.Removed, id)
		}
	}
	s.snapshot, s.sources = snap, srcs
	s.mu.Unlock()
	sort.Strings(res.Added)
	sort.Strings(res.Removed)
	res.Models = len(snap)
	return res, nil
}

// inspectObject reads an artifact's head through the backend and asks the
// loader for its metadata; results are cached per (backend, key, size,
// mtime, sha256).
func (c *Catalog) inspectObject(ctx context.Context, b Backend, o sdk.Object) (Entry, error) {
	s := c.set
	ck := fmt.Sprintf("%s|%s|%d|%d|%s", b.Name, o.Key, o.Size, o.ModTime.UnixNano(), o.SHA256)
	s.mu.RLock()
	e, ok := s.inspected[ck]
	s.mu.RUnlock()
	if ok {
		return e, nil
	}
	e = Entry{ID: o.Key, Path: o.LocalPath, Bytes: o.Size, NominalBytes: o.Size, Family: familyOf(o.Key),
		Format: "unknown", URI: o.URI, SHA256: o.SHA256, Backend: b.Name, Component: sdk.ComponentOf(o.Key)}
	var ierr error
	if l := s.loader(o.Key); l != nil && o.Size > 0 {
		mi, err := inspect(ctx, b.Storage, l, o)
		if err != nil {
			ierr = err
		} else {
			e.Format, e.Tensors, e.DependsOn = mi.Format, len(mi.Tensors), mi.DependsOn
			e.DType = mainDType(mi.Tensors, func(t sdk.Tensor) (string, int64) { return t.DType, t.End - t.Begin })
			if mi.Component != "" {
				e.Component = mi.Component
			}
			if mi.NominalBytes > 0 {
				e.NominalBytes = mi.NominalBytes
			}
			if mi.Family != "" {
				e.Family = mi.Family
			}
			e.LoaderVRAMBytes = mi.VRAMBytes
		}
	}
	if s.loader(o.Key) == nil && o.Size > 0 && o.LocalPath != "" {
		// No loader reads this extension (a .ckpt, a .pth): a file that is
		// safetensors inside, as kiln's synthetic stand-ins for such
		// models are, is sized by its header, as the directory catalog
		// and the workers size it; anything else (a pickle) by its size.
		// Only a local file is read for this: a remote one would cost the
		// backend a ranged read per refresh for a format no loader claims.
		if h, err := readLocalHeader(o.LocalPath, o.Size); err == nil {
			e.Format, e.NominalBytes, e.Tensors = "safetensors", h.NominalBytes(), len(h.Tensors)
			e.DType = mainDType(h.Tensors, func(t modelfile.Tensor) (string, int64) { return t.DType, t.Bytes() })
			if fam := h.Family(); fam != "" {
				e.Family = fam
			}
		}
	}
	e.VRAMBytes = cost.VRAMBytes(e.Family, e.NominalBytes)
	if ierr == nil {
		s.mu.Lock()
		s.inspected[ck] = e
		s.mu.Unlock()
	}
	return e, ierr
}

func inspect(ctx context.Context, st sdk.Storage, l sdk.Loader, o sdk.Object) (sdk.ModelInfo, error) {
	n := min(int64(headStart), o.Size)
	for range 6 {
		rc, err := st.Open(ctx, o.Key, 0, n)
		if err != nil {
			return sdk.ModelInfo{}, err
		}
		head, err := io.ReadAll(io.LimitReader(rc, n))
		rc.Close()
		if err != nil {
			return sdk.ModelInfo{}, err
		}
		mi, err := l.Inspect(ctx, sdk.InspectRequest{Key: o.Key, Size: o.Size, Head: head})
		if err != nil {
			return sdk.ModelInfo{}, err
		}
		if mi.NeedBytes <= int64(len(head)) {
			return mi, nil
		}
		if mi.NeedBytes > headMax || int64(len(head)) >= o.Size {
			return sdk.ModelInfo{}, fmt.Errorf("inspect %s: header of %d bytes is too large", o.Key, mi.NeedBytes)
		}
		n = min(mi.NeedBytes, o.Size)
	}
	return sdk.ModelInfo{}, fmt.Errorf("inspect %s: loader keeps asking for more bytes", o.Key)
}

func (c *Catalog) lookupBackends(id string) (Entry, error) {
	c.set.mu.RLock()
	e, ok := c.set.snapshot[id]
	c.set.mu.RUnlock()
	if !ok {
		return Entry{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return e, nil
}

func (c *Catalog) listBackends() []Entry {
	c.set.mu.RLock()
	out := make([]Entry, 0, len(c.set.snapshot))
	for _, e := range c.set.snapshot {
		out = append(out, e)
	}
	c.set.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Resolve implements tier.Resolver: where the model's bytes are in L4.
func (c *Catalog) Resolve(_ context.Context, id string) (Source, error) {
	if err := CleanID(id); err != nil {
		return Source{}, err
	}
	if c.set == nil {
		return Source{}, errors.New("catalog: a directory catalog has no storage backends")
	}
	c.set.mu.RLock()
	src, ok := c.set.sources[id]
	c.set.mu.RUnlock()
	if !ok {
		return Source{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return src, nil
}

// ExtLoaders maps extensions (".safetensors") to loaders for NewFromBackends.
func ExtLoaders(m map[string]sdk.Loader) LoaderFor {
	return func(key string) sdk.Loader { return m[strings.ToLower(path.Ext(key))] }
}

// readLocalHeader reads the safetensors header of a local file of size
// bytes.
func readLocalHeader(path string, size int64) (*modelfile.Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return modelfile.ReadHeader(f, size)
}
