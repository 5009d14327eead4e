package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kiln-gpu/kiln/sdk/plugin"
	"github.com/kiln-gpu/kiln/sdk/safetensors"
)

// file builds a safetensors file from a header map and a data length.
func file(t testing.TB, header map[string]any, data int) []byte {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 8, 8+len(h)+data)
	binary.LittleEndian.PutUint64(out, uint64(len(h)))
	out = append(out, h...)
	return append(out, make([]byte, data)...)
}

// rawFile builds a safetensors file from a raw JSON header, for headers
// that a map cannot hold (duplicate names).
func rawFile(header string, data int) []byte {
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	out = append(out, header...)
	return append(out, make([]byte, data)...)
}

func good(t testing.TB) []byte {
	return file(t, map[string]any{
		"__metadata__":                 map[string]string{"kiln.family": "sdxl", "kiln.nominal_bytes": "6938078334"},
		"model.diffusion_model.in.0":   map[string]any{"dtype": "F16", "shape": []int64{4, 8}, "data_offsets": []int64{0, 64}},
		"first_stage_model.decoder.up": map[string]any{"dtype": "F32", "shape": []int64{16}, "data_offsets": []int64{64, 128}},
	}, 128)
}

func TestParse(t *testing.T) {
	g := good(t)
	for _, tc := range []struct {
		name     string
		key      string
		head     []byte
		size     int64
		wantErr  bool
		wantNeed int64
		check    func(t *testing.T, mi plugin.ModelInfo)
	}{
		{name: "good", key: "checkpoints/x.safetensors", head: g, size: int64(len(g)), check: func(t *testing.T, mi plugin.ModelInfo) {
			if mi.Format != "safetensors" || len(mi.Tensors) != 2 || mi.Family != "sdxl" || mi.NominalBytes != 6938078334 ||
				mi.Component != "checkpoint" || mi.Tensors[0].Begin >= mi.Tensors[1].Begin || mi.VRAMBytes <= mi.NominalBytes {
				t.Errorf("info = %+v", mi)
			}
		}},
		{name: "lora depends on base", key: "loras/x.safetensors", head: g, size: int64(len(g)), check: func(t *testing.T, mi plugin.ModelInfo) {
			if len(mi.DependsOn) != 1 {
				t.Errorf("depends_on = %v", mi.DependsOn)
			}
		}},
		{name: "short head", key: "checkpoints/x", head: g[:20], size: int64(len(g)), wantNeed: int64(len(g) - 128)},
		{name: "tiny head", key: "checkpoints/x", head: g[:3], size: int64(len(g)), wantNeed: 8},
		{name: "huge length", key: "checkpoints/x", head: []byte{0, 0, 0, 0, 0, 0, 0, 1}, size: 100, wantErr: true},
		{name: "bad dtype", key: "c/x", head: file(t, map[string]any{"a": map[string]any{"dtype": "Q9", "shape": []int64{1}, "data_offsets": []int64{0, 1}}}, 1), wantErr: true},
		{name: "size mismatch", key: "c/x", head: file(t, map[string]any{"a": map[string]any{"dtype": "F32", "shape": []int64{2}, "data_offsets": []int64{0, 4}}}, 4), wantErr: true},
		{name: "overlap", key: "c/x", head: file(t, map[string]any{
			"a": map[string]any{"dtype": "U8", "shape": []int64{4}, "data_offsets": []int64{0, 4}},
			"b": map[string]any{"dtype": "U8", "shape": []int64{4}, "data_offsets": []int64{2, 6}},
		}, 6), wantErr: true},
		{name: "past end", key: "c/x", head: good(t)[:len(g)-1], size: int64(len(g) - 1), wantErr: true},
		{name: "duplicate name", key: "c/x", head: rawFile(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}`, 4), wantErr: true},
		{name: "gap", key: "c/x", head: rawFile(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}`, 8), size: 0, check: func(t *testing.T, mi plugin.ModelInfo) {
			if len(mi.Tensors) != 1 || mi.TotalBytes != mi.Tensors[0].End {
				t.Errorf("info = %+v", mi)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mi, err := parse(tc.key, tc.head, tc.size)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, safetensors.ErrFormat) {
				t.Errorf("error %v does not wrap safetensors.ErrFormat", err)
			}
			if mi.NeedBytes != tc.wantNeed {
				t.Fatalf("NeedBytes = %d, want %d", mi.NeedBytes, tc.wantNeed)
			}
			if tc.check != nil {
				tc.check(t, mi)
			}
		})
	}
}

func TestInspectPath(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.safetensors")
	if err := os.WriteFile(p, good(t), 0o644); err != nil {
		t.Fatal(err)
	}
	mi, err := loader{}.Inspect(context.Background(), plugin.InspectRequest{Key: "vae/m.safetensors", Path: p})
	if err != nil || mi.Component != "vae" || len(mi.Tensors) != 2 {
		t.Fatalf("Inspect = %+v, %v", mi, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(good(f), int64(0))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0}, int64(8))
	f.Fuzz(func(t *testing.T, head []byte, size int64) {
		mi, err := parse("checkpoints/f.safetensors", head, size)
		if err != nil {
			return
		}
		for _, tn := range mi.Tensors {
			if tn.Begin > tn.End || (size > 0 && tn.End > size) {
				t.Fatalf("tensor %q out of bounds: %d..%d of %d", tn.Name, tn.Begin, tn.End, size)
			}
		}
	})
}
