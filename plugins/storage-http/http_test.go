package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-gpu/kiln/sdk/plugin"
)

// TestHTTPStorage runs against a real HTTP server (net/http's FileServer,
// which answers range requests) on loopback.
func TestHTTPStorage(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 3<<20+17)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.MkdirAll(filepath.Join(dir, "checkpoints"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "checkpoints", "m.safetensors"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	var idx bytes.Buffer
	if err := writeIndex(&idx, dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idx.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	s := newHTTPStorage(srv.URL, "")
	ctx := context.Background()

	objs, err := s.List(ctx, "")
	if err != nil || len(objs) != 1 || objs[0].Size != int64(len(data)) || len(objs[0].SHA256) != 64 {
		t.Fatalf("List = %+v, %v", objs, err)
	}
	for _, tc := range []struct {
		name           string
		key            string
		offset, length int64
		want           []byte
		wantNotFound   bool
	}{
		{name: "whole", key: "checkpoints/m.safetensors", want: data},
		{name: "range", key: "checkpoints/m.safetensors", offset: 1 << 20, length: 100, want: data[1<<20 : 1<<20+100]},
		{name: "from offset", key: "checkpoints/m.safetensors", offset: 3 << 20, want: data[3<<20:]},
		{name: "head", key: "checkpoints/m.safetensors", length: 8, want: data[:8]},
		{name: "missing", key: "checkpoints/none", wantNotFound: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := s.Open(ctx, tc.key, tc.offset, tc.length)
			if tc.wantNotFound {
				if !errors.Is(err, plugin.ErrNotFound) {
					t.Fatalf("err = %v, want not found", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("read %d bytes (%v), want %d", len(got), err, len(tc.want))
			}
			checkFetchTo(t, s, tc.key, tc.offset, tc.length, tc.want)
		})
	}
	o, err := s.Stat(ctx, "checkpoints/m.safetensors")
	if err != nil || o.Size != int64(len(data)) {
		t.Fatalf("Stat = %+v, %v", o, err)
	}
}

// checkFetchTo fetches a range into a file that already holds longer, stale
// bytes (FetchTo must truncate it) and compares it with want.
func checkFetchTo(t *testing.T, f plugin.Fetcher, key string, offset, length int64, want []byte) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), ".tmp-fetch")
	if err := os.WriteFile(dst, bytes.Repeat([]byte{0xee}, len(want)+100), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := f.FetchTo(context.Background(), key, offset, length, dst)
	if err != nil {
		t.Fatalf("FetchTo: %v", err)
	}
	got, err := os.ReadFile(dst)
	if err != nil || n != int64(len(want)) || !bytes.Equal(got, want) {
		t.Fatalf("FetchTo = %d (file %d bytes, %v), want %d bytes", n, len(got), err, len(want))
	}
}

func TestFetchToRefusesUnsafePaths(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "victim")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	// The path is checked before any request: no server is needed.
	s := newHTTPStorage("http://127.0.0.1:1", "")
	for _, tc := range []struct{ name, path string }{
		{name: "relative", path: "victim"},
		{name: "symlink", path: link},
		{name: "directory", path: dir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.FetchTo(context.Background(), "a.bin", 0, 0, tc.path); err == nil {
				t.Fatalf("FetchTo(%q) succeeded, want it refused", tc.path)
			}
		})
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatalf("symlink target was written: %q", b)
	}
}
