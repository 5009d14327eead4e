package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-gpu/kiln/sdk/plugin"
)

// ggufFile writes a small real GGUF v3 file: two metadata entries (one an
// array), two tensors (F32 [4,2], Q8_0 [64]) and their aligned data.
func ggufFile(t testing.TB) []byte {
	t.Helper()
	var b bytes.Buffer
	w := func(v any) { _ = binary.Write(&b, binary.LittleEndian, v) }
	str := func(s string) { w(uint64(len(s))); b.WriteString(s) }
	b.WriteString("GGUF")
	w(uint32(3))
	w(uint64(2)) // tensors
	w(uint64(3)) // metadata
	str("general.architecture")
	w(uint32(8))
	str("llama")
	str("general.alignment")
	w(uint32(4))
	w(uint32(32))
	str("tokenizer.ggml.tokens")
	w(uint32(9))
	w(uint32(8))
	w(uint64(2))
	str("a")
	str("b")
	str("tok.weight")
	w(uint32(2))
	w(uint64(4))
	w(uint64(2))
	w(uint32(0)) // F32
	w(uint64(0))
	str("blk.0.q")
	w(uint32(1))
	w(uint64(64))
	w(uint32(8)) // Q8_0: 2 blocks of 34 bytes
	w(uint64(32))
	for b.Len()%32 != 0 {
		b.WriteByte(0)
	}
	b.Write(make([]byte, 32+68))
	return b.Bytes()
}

func TestParse(t *testing.T) {
	g := ggufFile(t)
	for _, tc := range []struct {
		name     string
		head     []byte
		size     int64
		wantErr  bool
		wantNeed bool
	}{
		{name: "good", head: g, size: int64(len(g))},
		{name: "truncated head", head: g[:40], size: int64(len(g)), wantNeed: true},
		{name: "truncated file", head: g[:40], size: 40, wantErr: true},
		{name: "bad magic", head: append([]byte("GGUX"), g[4:]...), size: int64(len(g)), wantErr: true},
		{name: "file too short for data", head: g[:len(g)-1], size: int64(len(g) - 1), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mi, err := parse("llm/tiny.gguf", tc.head, tc.size)
			if (err != nil) != tc.wantErr || (mi.NeedBytes > 0) != tc.wantNeed {
				t.Fatalf("parse = %+v, %v", mi, err)
			}
			if tc.name != "good" {
				return
			}
			if mi.Format != "gguf" || mi.Family != "llama" || len(mi.Tensors) != 2 || mi.Component != "llm" ||
				mi.Tensors[1].DType != "Q8_0" || mi.Tensors[1].End-mi.Tensors[1].Begin != 68 || mi.Metadata["tokenizer.ggml.tokens"] != "[2]" {
				t.Errorf("info = %+v", mi)
			}
		})
	}
}

func TestInspectPath(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := os.WriteFile(p, ggufFile(t), 0o644); err != nil {
		t.Fatal(err)
	}
	mi, err := loader{}.Inspect(context.Background(), plugin.InspectRequest{Key: "llm/tiny.gguf", Path: p})
	if err != nil || len(mi.Tensors) != 2 {
		t.Fatalf("Inspect = %+v, %v", mi, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(ggufFile(f), int64(0))
	f.Add([]byte("GGUF\x03\x00\x00\x00"), int64(8))
	f.Fuzz(func(t *testing.T, head []byte, size int64) {
		mi, err := parse("llm/f.gguf", head, size)
		if err != nil || mi.NeedBytes > 0 {
			return
		}
		for _, tn := range mi.Tensors {
			if tn.Begin > tn.End || (size > 0 && tn.End > size) {
				t.Fatalf("tensor %q out of bounds", tn.Name)
			}
		}
	})
}
