package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/kiln-gpu/kiln/sdk/plugin"
)

// fsStorage serves the files under root. Keys are slash-separated paths
// relative to root; hidden files and directories are skipped.
type fsStorage struct {
	root string
	hash bool

	mu     sync.Mutex
	hashes map[string]hashed // key → digest of the file as last seen
}

type hashed struct {
	size, mtime int64
	sum         string
}

var (
	_ plugin.Storage = (*fsStorage)(nil)
	_ plugin.Putter  = (*fsStorage)(nil)
	_ plugin.Fetcher = (*fsStorage)(nil)
)

func newFS(root string, hash bool) *fsStorage {
	return &fsStorage{root: root, hash: hash, hashes: map[string]hashed{}}
}

// path maps a key to a file under root, refusing keys that leave it.
func (s *fsStorage) path(key string) (string, error) {
	if s.root == "" {
		return "", errors.New("KILN_PLUGIN_ROOT is not set")
	}
	if key == "" || strings.HasPrefix(key, "/") || strings.ContainsAny(key, "\\\x00") {
		return "", fmt.Errorf("bad key %q: %w", key, plugin.ErrNotFound)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", fmt.Errorf("bad key %q: %w", key, plugin.ErrNotFound)
		}
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

func (s *fsStorage) object(key, path string, st fs.FileInfo) (plugin.Object, error) {
	o := plugin.Object{Key: key, Size: st.Size(), ModTime: st.ModTime(), LocalPath: path,
		URI: (&url.URL{Scheme: "file", Path: filepath.ToSlash(path)}).String()}
	if !s.hash {
		return o, nil
	}
	s.mu.Lock()
	h, ok := s.hashes[key]
	s.mu.Unlock()
	if ok && h.size == st.Size() && h.mtime == st.ModTime().UnixNano() {
		o.SHA256 = h.sum
		return o, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return o, err
	}
	defer f.Close()
	d := sha256.New()
	if _, err := io.Copy(d, f); err != nil {
		return o, fmt.Errorf("hash %s: %w", key, err)
	}
	o.SHA256 = hex.EncodeToString(d.Sum(nil))
	s.mu.Lock()
	s.hashes[key] = hashed{size: st.Size(), mtime: st.ModTime().UnixNano(), sum: o.SHA256}
	s.mu.Unlock()
	return o, nil
}

// List walks root.
func (s *fsStorage) List(ctx context.Context, prefix string) ([]plugin.Object, error) {
	if s.root == "" {
		return nil, errors.New("KILN_PLUGIN_ROOT is not set")
	}
	var out []plugin.Object
	err := filepath.WalkDir(s.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if strings.HasPrefix(d.Name(), ".") && path != s.root {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(s.root, path)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		o, err := s.object(key, path, st)
		if err != nil {
			return err
		}
		out = append(out, o)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", s.root, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Stat returns one file.
func (s *fsStorage) Stat(_ context.Context, key string) (plugin.Object, error) {
	p, err := s.path(key)
	if err != nil {
		return plugin.Object{}, err
	}
	st, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !st.Mode().IsRegular()) {
		return plugin.Object{}, fmt.Errorf("stat %s: %w", key, plugin.ErrNotFound)
	}
	if err != nil {
		return plugin.Object{}, fmt.Errorf("stat %s: %w", key, err)
	}
	return s.object(key, p, st)
}

// Open returns a section of the file.
func (s *fsStorage) Open(_ context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	f, length, err := s.section(key, offset, length)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, offset, length), f}, nil
}

// section opens key's file and clamps length (<= 0: to the end) to it.
func (s *fsStorage) section(key string, offset, length int64) (*os.File, int64, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("open %s: %w", key, plugin.ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open %s: %w", key, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if offset < 0 || offset > st.Size() {
		f.Close()
		return nil, 0, fmt.Errorf("open %s: offset %d outside 0..%d", key, offset, st.Size())
	}
	if length <= 0 || offset+length > st.Size() {
		length = st.Size() - offset
	}
	return f, length, nil
}

// FetchTo copies a section of the file into the file at path. io.Copy
// between two *os.File uses copy_file_range (or splice) on Linux, so the
// bytes never pass through this process.
//
// The copy is not interrupted by ctx: it is a local file-to-file copy.
func (s *fsStorage) FetchTo(_ context.Context, key string, offset, length int64, path string) (int64, error) {
	src, length, err := s.section(key, offset, length)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	if _, err := src.Seek(offset, io.SeekStart); err != nil {
		return 0, fmt.Errorf("fetch %s: %w", key, err)
	}
	dst, err := plugin.CreateFetchFile(path)
	if err != nil {
		return 0, fmt.Errorf("fetch %s: %w", key, err)
	}
	n, err := io.Copy(dst, io.LimitReader(src, length))
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("fetch %s: %w", key, err)
	}
	return n, nil
}

// Put writes a file atomically (temp file, then rename).
func (s *fsStorage) Put(_ context.Context, key string, size int64, r io.Reader) (plugin.Object, error) {
	p, err := s.path(key)
	if err != nil {
		return plugin.Object{}, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return plugin.Object{}, fmt.Errorf("put %s: %w", key, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".put-*")
	if err != nil {
		return plugin.Object{}, fmt.Errorf("put %s: %w", key, err)
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, r)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && size > 0 && n != size {
		err = fmt.Errorf("got %d bytes, want %d", n, size)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		return plugin.Object{}, fmt.Errorf("put %s: %w", key, err)
	}
	st, err := os.Stat(p)
	if err != nil {
		return plugin.Object{}, err
	}
	return s.object(key, p, st)
}
