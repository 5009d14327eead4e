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
		})
	}
	o, err := s.Stat(ctx, "checkpoints/m.safetensors")
	if err != nil || o.Size != int64(len(data)) {
		t.Fatalf("Stat = %+v, %v", o, err)
	}
}
