package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-gpu/kiln/sdk/plugin"
)

func TestFSStorage(t *testing.T) {
	root := t.TempDir()
	data := bytes.Repeat([]byte("kiln"), 5000)
	if err := os.MkdirAll(filepath.Join(root, "checkpoints"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "checkpoints", "a.safetensors"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, ".hidden"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	s := newFS(root, true)
	ctx := context.Background()

	objs, err := s.List(ctx, "")
	if err != nil || len(objs) != 1 || objs[0].Key != "checkpoints/a.safetensors" || objs[0].SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("List = %+v, %v", objs, err)
	}
	for _, tc := range []struct {
		name           string
		key            string
		offset, length int64
		want           []byte
		wantNotFound   bool
	}{
		{name: "whole", key: "checkpoints/a.safetensors", want: data},
		{name: "range", key: "checkpoints/a.safetensors", offset: 4, length: 8, want: data[4:12]},
		{name: "tail", key: "checkpoints/a.safetensors", offset: 19990, want: data[19990:]},
		{name: "missing", key: "checkpoints/b.safetensors", wantNotFound: true},
		{name: "escape", key: "../etc/passwd", wantNotFound: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := s.Open(ctx, tc.key, tc.offset, tc.length)
			if tc.wantNotFound {
				if !errors.Is(err, plugin.ErrNotFound) {
					t.Fatalf("Open err = %v, want not found", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("read %d bytes, %v; want %d", len(got), err, len(tc.want))
			}
			checkFetchTo(t, s, tc.key, tc.offset, tc.length, tc.want)
		})
	}
	o, err := s.Put(ctx, "loras/new.safetensors", 3, bytes.NewReader([]byte("abc")))
	if err != nil || o.Size != 3 {
		t.Fatalf("Put = %+v, %v", o, err)
	}
	if _, err := s.Stat(ctx, "loras/new.safetensors"); err != nil {
		t.Fatal(err)
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
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "a.bin"), []byte("model bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newFS(root, false)
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
