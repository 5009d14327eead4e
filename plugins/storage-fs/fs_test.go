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
