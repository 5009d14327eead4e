package main

import (
	"bufio"
	"bytes"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
)

// splitmix64 is a tiny, well-mixed PRNG step (Steele et al.); the sim uses
// it so that the same seed always draws the same image.
func splitmix64(x *uint64) uint64 {
	*x += 0x9e3779b97f4a7c15
	z := *x
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// renderImage draws a deterministic picture for seed: a diagonal colour
// gradient whose colours come from the seed, with a little noise. It is
// computed row by row straight into the pixel buffer, which keeps a 1024²
// image at a few milliseconds.
func renderImage(w, h int, seed uint64) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	st := seed
	c0, c1 := splitmix64(&st), splitmix64(&st)
	r0, g0, b0 := int(c0&0xff), int(c0>>8&0xff), int(c0>>16&0xff)
	r1, g1, b1 := int(c1&0xff), int(c1>>8&0xff), int(c1>>16&0xff)
	// Per-column and per-diagonal ramps, so the pixel loop has no division.
	wh := w + h
	red := make([]uint8, wh)
	for t := range red {
		red[t] = uint8(r0 + (r1-r0)*t/wh)
	}
	green := make([]uint8, w)
	for x := range green {
		green[x] = uint8(g0 + (g1-g0)*x/w)
	}
	for y := 0; y < h; y++ {
		row := img.Pix[y*img.Stride : y*img.Stride+4*w]
		blue := uint8(b0 + (b1-b0)*y/h)
		// Noise in 8×8 blocks: visible texture that still compresses.
		noise := seed ^ uint64(y>>3)*0x9e3779b97f4a7c15
		var bits uint64
		var n uint8
		for x := 0; x < w; x++ {
			if x&127 == 0 {
				bits = splitmix64(&noise)
			}
			if x&7 == 0 {
				n = uint8(bits & 15)
				bits >>= 4
			}
			p := row[4*x : 4*x+4 : 4*x+4]
			p[0] = red[x+y] + n
			p[1] = green[x] + n
			p[2] = blue + n
			p[3] = 0xff
		}
	}
	return img
}

// pngEncoder favours speed: outputs are stand-ins, not art.
var pngEncoder = png.Encoder{CompressionLevel: png.BestSpeed}

// writePNG renders the image for seed and writes it to path through a
// temporary file and a rename, so that a crash never leaves half a PNG and a
// re-run replaces the file whole.
func writePNG(path string, w, h int, seed uint64) error {
	return writeImagePNG(path, renderImage(w, h, seed))
}

// writeImagePNG writes img to path as writePNG does.
func writeImagePNG(path string, img *image.RGBA) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*.png")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	bw := bufio.NewWriterSize(tmp, 256<<10)
	if err := pngEncoder.Encode(bw, img); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: encode: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// PreviewSize is the side of the square preview the sim sends with every
// sampler step (ComfyUI's previews are at most 512 px; 64 keeps the frame
// near 1 KiB and its encoding near 50 µs).
const PreviewSize = 64

// renderPreview encodes the preview of step (1-based) of steps for seed as
// a PNG: the final picture's gradient, faded in from grey as the steps
// advance, so that previews change visibly and the same seed and step
// always give the same bytes.
func renderPreview(seed uint64, step, steps int) ([]byte, error) {
	img := renderImage(PreviewSize, PreviewSize, seed)
	if steps > 0 && step < steps {
		for i := 0; i < len(img.Pix); i += 4 {
			for c := range 3 {
				v := int(img.Pix[i+c])
				img.Pix[i+c] = uint8(128 + (v-128)*step/steps)
			}
		}
	}
	var buf bytes.Buffer
	if err := pngEncoder.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("encode preview: %w", err)
	}
	return buf.Bytes(), nil
}
