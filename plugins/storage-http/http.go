package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kiln-gpu/kiln/sdk/plugin"
)

// Index is the manifest a server publishes next to the files, since plain
// HTTP has no listing: {"objects":[{"key":..,"size":..,"sha256":..}]}.
type Index struct {
	Objects []plugin.Object `json:"objects"`
}

// httpStorage reads objects from base+"/"+key with range requests.
type httpStorage struct {
	base  string
	index string
	hc    *http.Client
}

var (
	_ plugin.Storage = (*httpStorage)(nil)
	_ plugin.Fetcher = (*httpStorage)(nil)
)

// fetchBuffer is the size of FetchTo's copy buffer: large writes keep the
// number of system calls per byte low.
const fetchBuffer = 4 << 20

func newHTTPStorage(base, index string) *httpStorage {
	if index == "" {
		index = "index.json"
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
		// Model bytes are already compressed or incompressible.
		DisableCompression: true,
		ReadBufferSize:     1 << 20,
	}
	return &httpStorage{base: strings.TrimRight(base, "/"), index: index, hc: &http.Client{Transport: tr}}
}

func (s *httpStorage) url(key string) (string, error) {
	if s.base == "" {
		return "", errors.New("KILN_PLUGIN_URL is not set")
	}
	if key == "" || strings.HasPrefix(key, "/") || strings.Contains(key, "..") {
		return "", fmt.Errorf("bad key %q: %w", key, plugin.ErrNotFound)
	}
	return s.base + "/" + key, nil
}

// List fetches the index.
func (s *httpStorage) List(ctx context.Context, prefix string) ([]plugin.Object, error) {
	u, err := s.url(s.index)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("list: GET %s: %s", u, resp.Status)
	}
	var idx Index
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&idx); err != nil {
		return nil, fmt.Errorf("list: decode %s: %w", u, err)
	}
	out := make([]plugin.Object, 0, len(idx.Objects))
	for _, o := range idx.Objects {
		if !strings.HasPrefix(o.Key, prefix) {
			continue
		}
		o.URI, _ = s.url(o.Key)
		o.LocalPath = ""
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Stat looks the key up in the index, falling back to HEAD for keys the
// index does not list.
func (s *httpStorage) Stat(ctx context.Context, key string) (plugin.Object, error) {
	if objs, err := s.List(ctx, key); err == nil {
		for _, o := range objs {
			if o.Key == key {
				return o, nil
			}
		}
	}
	u, err := s.url(key)
	if err != nil {
		return plugin.Object{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return plugin.Object{}, err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return plugin.Object{}, fmt.Errorf("stat %s: %w", key, err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return plugin.Object{}, fmt.Errorf("stat %s: %w", key, plugin.ErrNotFound)
	}
	if resp.StatusCode != http.StatusOK {
		return plugin.Object{}, fmt.Errorf("stat %s: HEAD: %s", key, resp.Status)
	}
	o := plugin.Object{Key: key, Size: resp.ContentLength, URI: u}
	if t, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		o.ModTime = t
	}
	return o, nil
}

// Open issues a range request. A server that ignores Range is accepted only
// for a read from offset 0.
func (s *httpStorage) Open(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	u, err := s.url(key)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if offset > 0 || length > 0 {
		if length > 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
		} else {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
		}
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		resp.Body.Close()
		return nil, fmt.Errorf("open %s: %w", key, plugin.ErrNotFound)
	case resp.StatusCode == http.StatusPartialContent:
	case resp.StatusCode == http.StatusOK && offset == 0:
		if length > 0 {
			return struct {
				io.Reader
				io.Closer
			}{io.LimitReader(resp.Body, length), resp.Body}, nil
		}
	default:
		resp.Body.Close()
		return nil, fmt.Errorf("open %s: GET range %d+%d: %s", key, offset, length, resp.Status)
	}
	return resp.Body, nil
}

// FetchTo writes a range request's body into the file at path with a large
// buffer, so that the bytes skip the plugin connection.
func (s *httpStorage) FetchTo(ctx context.Context, key string, offset, length int64, path string) (int64, error) {
	dst, err := plugin.CreateFetchFile(path)
	if err != nil {
		return 0, fmt.Errorf("fetch %s: %w", key, err)
	}
	defer dst.Close()
	body, err := s.Open(ctx, key, offset, length)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	// Hide ReadFrom and WriteTo so that CopyBuffer uses our buffer rather
	// than os.File's 32 KiB fallback.
	n, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{body}, make([]byte, fetchBuffer))
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("fetch %s: %w", key, err)
	}
	return n, nil
}

// writeIndex prints the index of the regular files under dir.
func writeIndex(w io.Writer, dir string) error {
	var idx Index
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), ".") || d.Name() == "index.json" {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err != nil {
			return err
		}
		idx.Objects = append(idx.Objects, plugin.Object{Key: filepath.ToSlash(rel), Size: n,
			SHA256: hex.EncodeToString(h.Sum(nil)), ModTime: st.ModTime().UTC()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("index %s: %w", dir, err)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(idx)
}
