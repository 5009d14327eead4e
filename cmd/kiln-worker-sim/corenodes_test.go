package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestCoreNodeGeometry runs inpaint, outpaint, batch and latent-editing
// graphs and checks the saved PNGs' sizes and counts against what ComfyUI's
// nodes would produce.
func TestCoreNodeGeometry(t *testing.T) {
	link := func(id string, out int) []any { return []any{id, float64(out)} }
	for _, tc := range []struct {
		name       string
		edit       func(wf map[string]any) // on the sd-1.5 LoRA graph (512×512, node 5 its latent)
		wantW      int
		wantH      int
		wantImages int
	}{
		{
			name: "outpaint",
			edit: func(wf map[string]any) {
				wf["20"] = map[string]any{"class_type": "EmptyImage", "inputs": map[string]any{"width": 512.0, "height": 512.0, "batch_size": 1.0, "color": 0.0}}
				wf["21"] = map[string]any{"class_type": "ImagePadForOutpaint", "inputs": map[string]any{"image": link("20", 0),
					"left": 64.0, "top": 0.0, "right": 64.0, "bottom": 128.0, "feathering": 40.0}}
				wf["22"] = map[string]any{"class_type": "VAEEncodeForInpaint", "inputs": map[string]any{"pixels": link("21", 0),
					"vae": link("4", 2), "mask": link("21", 1), "grow_mask_by": 6.0}}
				wf["3"].(map[string]any)["inputs"].(map[string]any)["latent_image"] = link("22", 0)
			},
			wantW: 640, wantH: 640, wantImages: 1,
		},
		{
			name: "inpaint with a noise mask",
			edit: func(wf map[string]any) {
				wf["20"] = map[string]any{"class_type": "EmptyImage", "inputs": map[string]any{"width": 768.0, "height": 512.0, "batch_size": 2.0, "color": 255.0}}
				wf["21"] = map[string]any{"class_type": "VAEEncode", "inputs": map[string]any{"pixels": link("20", 0), "vae": link("4", 2)}}
				wf["22"] = map[string]any{"class_type": "LoadImageMask", "inputs": map[string]any{"image": "mask.png", "channel": "alpha"}}
				wf["23"] = map[string]any{"class_type": "SetLatentNoiseMask", "inputs": map[string]any{"samples": link("21", 0), "mask": link("22", 0)}}
				wf["3"].(map[string]any)["inputs"].(map[string]any)["latent_image"] = link("23", 0)
			},
			wantW: 768, wantH: 512, wantImages: 2,
		},
		{
			name: "rotate and crop a latent, one of a batch",
			edit: func(wf map[string]any) {
				wf["5"].(map[string]any)["inputs"].(map[string]any)["width"] = 768.0
				wf["5"].(map[string]any)["inputs"].(map[string]any)["batch_size"] = 4.0
				wf["20"] = map[string]any{"class_type": "LatentRotate", "inputs": map[string]any{"samples": link("5", 0), "rotation": "90 degrees"}}
				wf["21"] = map[string]any{"class_type": "LatentCrop", "inputs": map[string]any{"samples": link("20", 0),
					"width": 256.0, "height": 1024.0, "x": 64.0, "y": 128.0}}
				wf["22"] = map[string]any{"class_type": "LatentFromBatch", "inputs": map[string]any{"samples": link("21", 0), "batch_index": 3.0, "length": 2.0}}
				wf["3"].(map[string]any)["inputs"].(map[string]any)["latent_image"] = link("22", 0)
			},
			wantW: 256, wantH: 640, wantImages: 1, // 512×768 after the turn; the crop from y 128 leaves 640; index 3 of 4 leaves one
		},
		{
			name: "the last latent of a batch (negative index)",
			edit: func(wf map[string]any) {
				wf["5"].(map[string]any)["inputs"].(map[string]any)["batch_size"] = 3.0
				wf["22"] = map[string]any{"class_type": "LatentFromBatch", "inputs": map[string]any{"samples": link("5", 0), "batch_index": -1.0, "length": 2.0}}
				wf["3"].(map[string]any)["inputs"].(map[string]any)["latent_image"] = link("22", 0)
			},
			wantW: 512, wantH: 512, wantImages: 1, // -1 is index 2 of 3: one latent left, not two
		},
		{
			name: "a graph goes on from SaveImage's images",
			edit: func(wf map[string]any) {
				wf["20"] = map[string]any{"class_type": "ImageScale", "inputs": map[string]any{"image": link("9", 0),
					"upscale_method": "bilinear", "width": 256.0, "height": 128.0, "crop": "disabled"}}
				wf["21"] = map[string]any{"class_type": "SaveImage", "inputs": map[string]any{"images": link("20", 0), "filename_prefix": "small"}}
				delete(wf, "9")
				wf["9"] = map[string]any{"class_type": "PreviewImage", "inputs": map[string]any{"images": link("8", 0)}}
			},
			wantW: -1, wantImages: 2, // the preview at 512×512, the scaled copy at 256×128
		},
		{
			name: "batch images",
			edit: func(wf map[string]any) {
				wf["20"] = map[string]any{"class_type": "EmptyImage", "inputs": map[string]any{"width": 320.0, "height": 240.0, "batch_size": 2.0, "color": 0.0}}
				wf["21"] = map[string]any{"class_type": "ImageBatch", "inputs": map[string]any{"image1": link("20", 0), "image2": link("8", 0)}}
				wf["9"].(map[string]any)["inputs"].(map[string]any)["images"] = link("21", 0)
			},
			wantW: 320, wantH: 240, wantImages: 3,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, 80*gib)
			wf := h.loadSD15LoRA()
			tc.edit(wf)
			res, _, err := h.run(context.Background(), "core", wf)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if len(res.Outputs) != tc.wantImages {
				t.Fatalf("%d images, want %d: %+v", len(res.Outputs), tc.wantImages, res.Outputs)
			}
			for _, o := range res.Outputs {
				w, ht := decodePNG(t, filepath.Join(h.out, filepath.FromSlash(o.Subfolder), o.Filename))
				if tc.wantW < 0 { // per output: the preview full size, the rest scaled
					want := [2]int{256, 128}
					if o.Type == "temp" {
						want = [2]int{512, 512}
					}
					if w != want[0] || ht != want[1] {
						t.Errorf("%s (%s) is %d×%d, want %d×%d", o.Filename, o.Type, w, ht, want[0], want[1])
					}
					continue
				}
				if w != tc.wantW || ht != tc.wantH {
					t.Errorf("%s is %d×%d, want %d×%d", o.Filename, w, ht, tc.wantW, tc.wantH)
				}
			}
		})
	}
}

func TestSaveLatent(t *testing.T) {
	h := newHarness(t, 80*gib)
	wf := h.loadSD15LoRA()
	wf["5"].(map[string]any)["inputs"].(map[string]any)["batch_size"] = 2.0
	wf["9"] = map[string]any{"class_type": "SaveLatent", "inputs": map[string]any{"samples": []any{"3", 0.0}, "filename_prefix": "latents/ComfyUI"}}
	res, _, err := h.run(context.Background(), "lat", wf)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Outputs) != 1 || res.Outputs[0].Filename != "ComfyUI_00001_.latent" || res.Outputs[0].Subfolder != "lat/latents" {
		t.Fatalf("outputs %+v", res.Outputs)
	}
	data, err := os.ReadFile(filepath.Join(h.out, "lat", "latents", "ComfyUI_00001_.latent"))
	if err != nil || len(data) < 8 {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(data)
	var header map[string]struct {
		Shape   []int `json:"shape"`
		Offsets []int `json:"data_offsets"`
	}
	if err := json.Unmarshal(data[8:8+n], &header); err != nil {
		t.Fatalf("safetensors header: %v", err)
	}
	lt, ok := header["latent_tensor"]
	if _, marker := header["latent_format_version_0"]; !ok || !marker || !slices.Equal(lt.Shape, []int{2, 4, 64, 64}) ||
		uint64(len(data)) != 8+n+uint64(lt.Offsets[1]) {
		t.Errorf("header %+v, file of %d bytes", header, len(data))
	}
}

// TestCoreNodePixels checks the nodes that work on real pixels: an
// EmptyImage of one colour, padded for outpainting (a 0.5 grey border),
// inverted and batched with a second image, saved without sampling.
func TestCoreNodePixels(t *testing.T) {
	h := newHarness(t, 80*gib)
	wf := map[string]any{
		"1": map[string]any{"class_type": "EmptyImage", "inputs": map[string]any{"width": 64.0, "height": 32.0, "batch_size": 1.0, "color": float64(0xff0000)}},
		"2": map[string]any{"class_type": "ImagePadForOutpaint", "inputs": map[string]any{"image": []any{"1", 0.0},
			"left": 16.0, "top": 0.0, "right": 0.0, "bottom": 8.0, "feathering": 0.0}},
		"3": map[string]any{"class_type": "ImageInvert", "inputs": map[string]any{"image": []any{"2", 0.0}}},
		"4": map[string]any{"class_type": "EmptyImage", "inputs": map[string]any{"width": 8.0, "height": 8.0, "batch_size": 1.0, "color": float64(0x00ff00)}},
		"5": map[string]any{"class_type": "ImageBatch", "inputs": map[string]any{"image1": []any{"3", 0.0}, "image2": []any{"4", 0.0}}},
		"6": map[string]any{"class_type": "SaveImage", "inputs": map[string]any{"images": []any{"5", 0.0}, "filename_prefix": "px"}},
	}
	res, _, err := h.run(context.Background(), "px", wf)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Outputs) != 2 {
		t.Fatalf("outputs %+v", res.Outputs)
	}
	at := func(o int, x, y int) [3]uint8 {
		f, err := os.Open(filepath.Join(h.out, filepath.FromSlash(res.Outputs[o].Subfolder), res.Outputs[o].Filename))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		img, err := png.Decode(f)
		if err != nil {
			t.Fatal(err)
		}
		if b := img.Bounds(); b.Dx() != 80 || b.Dy() != 40 {
			t.Fatalf("image %d is %v, want 80×40", o, b)
		}
		r, g, b, _ := img.At(x, y).RGBA()
		return [3]uint8{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8)}
	}
	for _, tc := range []struct {
		img, x, y int
		want      [3]uint8
	}{
		{0, 40, 10, [3]uint8{0, 255, 255}},   // red, inverted
		{0, 4, 10, [3]uint8{127, 127, 127}},  // the grey pad on the left, inverted
		{0, 40, 36, [3]uint8{127, 127, 127}}, // the grey pad below, inverted
		{1, 40, 20, [3]uint8{0, 255, 0}},     // the green image, scaled to 80×40
	} {
		if got := at(tc.img, tc.x, tc.y); got != tc.want {
			t.Errorf("image %d at (%d, %d) = %v, want %v", tc.img, tc.x, tc.y, got, tc.want)
		}
	}
}

// TestFileAndDiffusersLoaders runs LoadImageOutput (an output file, which
// the sim takes as 512×512, as LoadImage) and DiffusersLoader, whose model
// must cost what the same family's checkpoint does.
func TestFileAndDiffusersLoaders(t *testing.T) {
	link := func(id string, out int) []any { return []any{id, float64(out)} }
	h := newHarness(t, 80*gib)
	h.loadSD15LoRA()
	h.loadSynth("checkpoints/sd_xl_base_1.0.safetensors", "sdxl", 6_940_000_000)
	h.loadSynth("diffusers/stable-diffusion-xl-base-1.0", "sdxl", 6_940_000_000)
	// The sd-1.5 LoRA graph without its LoRA, loading the model with loader.
	graph := func(loader map[string]any) map[string]any {
		wf := loadWorkflow(t, "comfyui__tests_inference_workflows_sd-1.5-lora-0.api.json")
		delete(wf, "10")
		wf["4"] = loader
		wf["3"].(map[string]any)["inputs"].(map[string]any)["model"] = link("4", 0)
		wf["6"].(map[string]any)["inputs"].(map[string]any)["clip"] = link("4", 1)
		wf["7"].(map[string]any)["inputs"].(map[string]any)["clip"] = link("4", 1)
		return wf
	}
	ckpt, _, err := h.run(context.Background(), "ckpt", graph(map[string]any{"class_type": "CheckpointLoaderSimple",
		"inputs": map[string]any{"ckpt_name": "sd_xl_base_1.0.safetensors"}}))
	if err != nil {
		t.Fatal(err)
	}
	wf := graph(map[string]any{"class_type": "DiffusersLoader", "inputs": map[string]any{"model_path": "stable-diffusion-xl-base-1.0"}})
	wf["20"] = map[string]any{"class_type": "LoadImageOutput", "inputs": map[string]any{"image": "ComfyUI_00001_.png [output]"}}
	wf["21"] = map[string]any{"class_type": "SaveImage", "inputs": map[string]any{"images": link("20", 0), "filename_prefix": "again"}}
	res, _, err := h.run(context.Background(), "diffusers", wf)
	if err != nil {
		t.Fatal(err)
	}
	if res.RunNanos != ckpt.RunNanos {
		t.Errorf("DiffusersLoader run took %v, CheckpointLoaderSimple's of the same family %v", res.RunNanos, ckpt.RunNanos)
	}
	var loaded bool
	for _, o := range res.Outputs {
		if o.Node != "21" {
			continue
		}
		loaded = true
		if w, ht := decodePNG(t, filepath.Join(h.out, filepath.FromSlash(o.Subfolder), o.Filename)); w != 512 || ht != 512 {
			t.Errorf("LoadImageOutput's image saved at %d×%d, want 512×512", w, ht)
		}
	}
	if !loaded {
		t.Errorf("no image from LoadImageOutput: %+v", res.Outputs)
	}
}
