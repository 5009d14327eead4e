package main

import (
	"bytes"
	"image/png"
	"testing"

	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

func TestRenderPreview(t *testing.T) {
	const steps = 4
	var prev []byte
	for _, step := range []int{1, 2, 3, 4} {
		b, err := renderPreview(42, step, steps)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if len(b) > wire.MaxPreviewBytes {
			t.Errorf("step %d: %d bytes, over MaxPreviewBytes", step, len(b))
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("step %d: not a PNG: %v", step, err)
		}
		if r := img.Bounds(); r.Dx() != PreviewSize || r.Dy() != PreviewSize {
			t.Errorf("step %d: %v, want %d²", step, r, PreviewSize)
		}
		again, _ := renderPreview(42, step, steps)
		if !bytes.Equal(b, again) {
			t.Errorf("step %d: two renders differ", step)
		}
		if bytes.Equal(b, prev) {
			t.Errorf("step %d: same preview as the step before", step)
		}
		prev = b
	}
}
