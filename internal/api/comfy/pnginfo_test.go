package comfy

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

func TestAddPNGText(t *testing.T) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewRGBA(image.Rect(0, 0, 4, 3))); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "x.png")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	chunks, err := pngInfoChunks(json.RawMessage(`{"9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "café 🐱"}}}`),
		map[string]any{"workflow": map[string]any{"nodes": []any{}}, "bad\x00key": 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := addPNGText(path, chunks); err != nil {
		t.Fatal(err)
	}
	// Twice: a file with a prompt chunk is left alone.
	if err := addPNGText(path, chunks); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil || img.Bounds().Dx() != 4 {
		t.Fatalf("decode after adding text: %v", err)
	}
	want := `{"9":{"class_type":"SaveImage","inputs":{"filename_prefix":"caf\u00e9 \ud83d\udc31"}}}`
	for _, tc := range []struct{ key, want string }{{"prompt", want}, {"workflow", `{"nodes":[]}`}} {
		needle := append(append([]byte("tEXt"+tc.key), 0), tc.want...)
		if n := bytes.Count(data, needle); n != 1 {
			t.Errorf("%d tEXt %s chunks with %s, want 1", n, tc.key, tc.want)
		}
	}
	if bytes.Contains(data, []byte("bad")) {
		t.Error("a keyword with a NUL was written")
	}
	if err := addPNGText(filepath.Join(t.TempDir(), "missing.png"), chunks); err == nil {
		t.Error("no error for a missing file")
	}
	notPNG := filepath.Join(t.TempDir(), "n.png")
	os.WriteFile(notPNG, []byte("GIF89a........................................"), 0o644)
	if err := addPNGText(notPNG, chunks); err == nil {
		t.Error("no error for a file that is not a PNG")
	}
}

// FuzzAddPNGText feeds arbitrary files to the PNG chunk walker that reads
// workers' outputs: it must never panic, and a file it accepts must keep
// its bytes after the inserted chunks.
func FuzzAddPNGText(f *testing.F) {
	var buf bytes.Buffer
	_ = png.Encode(&buf, image.NewRGBA(image.Rect(0, 0, 2, 2)))
	f.Add(buf.Bytes())
	f.Add([]byte("\x89PNG\r\n\x1a\n"))
	f.Add(append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"), make([]byte, 17)...))
	chunks := [][2]string{{"prompt", "{}"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = pngHasText(data, "prompt")
		path := filepath.Join(t.TempDir(), "f.png")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := addPNGText(path, chunks); err != nil {
			return
		}
		got, _ := os.ReadFile(path)
		if len(got) < len(data) || !bytes.HasSuffix(got, data[33:]) {
			t.Errorf("the file lost bytes: %d → %d", len(data), len(got))
		}
	})
}

// TestAddLatentMetadata checks SaveLatent's metadata: the header's
// __metadata__ holds the prompt and extra_pnginfo texts, the tensors keep
// their bytes and offsets, and the header stays 8-byte aligned.
func TestAddLatentMetadata(t *testing.T) {
	tensor := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	header := []byte(`{"latent_tensor":{"dtype":"F32","shape":[1,4,1,1],"data_offsets":[0,16]},"latent_format_version_0":{"dtype":"F32","shape":[0],"data_offsets":[16,16]}}`)
	file := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	file = append(append(file, header...), tensor...)
	path := filepath.Join(t.TempDir(), "ComfyUI_00001_.latent")
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	chunks, err := pngInfoChunks(json.RawMessage(`{"9": {"class_type": "SaveLatent", "inputs": {}}}`), map[string]any{"workflow": map[string]any{"nodes": []any{}}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second time, a file with metadata is left alone
		if err := addLatentMetadata(path, chunks); err != nil {
			t.Fatal(err)
		}
	}
	data, _ := os.ReadFile(path)
	n := binary.LittleEndian.Uint64(data[:8])
	if n%8 != 0 || !bytes.Equal(data[8+n:], tensor) {
		t.Fatalf("header of %d bytes, tensor bytes %v", n, data[8+n:])
	}
	var got struct {
		Meta   map[string]string `json:"__metadata__"`
		Tensor struct {
			Offsets []int `json:"data_offsets"`
		} `json:"latent_tensor"`
	}
	if err := json.Unmarshal(data[8:8+n], &got); err != nil {
		t.Fatal(err)
	}
	if got.Meta["prompt"] != `{"9":{"class_type":"SaveLatent","inputs":{}}}` || got.Meta["workflow"] != `{"nodes":[]}` || len(got.Meta) != 2 {
		t.Errorf("__metadata__ %v", got.Meta)
	}
	if len(got.Tensor.Offsets) != 2 || got.Tensor.Offsets[1] != 16 {
		t.Errorf("tensor offsets %v", got.Tensor.Offsets)
	}
}
