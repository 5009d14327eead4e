package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/kiln-gpu/kiln/internal/workflow"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// The core classes of ComfyUI's nodes.py that inpaint, outpaint, batch and
// latent-editing workflows use. They do real geometry — a pad grows the
// image, a crop shrinks it, a batch adds up, a 90° rotation swaps the sides
// — so the PNGs that follow have those sizes; the cheap image operations
// (EmptyImage's fill, ImagePadForOutpaint's grey border, ImageInvert,
// ImageBatch) work on real pixels, which SaveImage writes when they reach it
// unchanged; the encoders are charged to the cost model like VAE and text
// encoders. Input specs follow
// nodes.py (MAX_RESOLUTION 16384).

const maxResolution = 16384

// coreNodeSpecs are the specs of the classes in coreNodeFuncs.
func coreNodeSpecs() []nodeSpec {
	res := func(name string, def, lo int64) in {
		return in{name, []any{"INT", map[string]any{"default": def, "min": lo, "max": maxResolution, "step": 8}}}
	}
	latent := func(name string) in { return link(name, "LATENT") }
	return []nodeSpec{
		spec("VAEEncodeForInpaint", "model/latent", outs("LATENT"), link("pixels", "IMAGE"), link("vae", "VAE"), link("mask", "MASK"),
			in{"grow_mask_by", []any{"INT", map[string]any{"default": 6, "min": 0, "max": 64, "step": 1}}}),
		spec("VAEEncodeTiled", "model/latent", outs("LATENT"), link("pixels", "IMAGE"), link("vae", "VAE"),
			advanced(stepped(intIn("tile_size", 512, 64, 4096), 64)), advanced(stepped(intIn("overlap", 64, 0, 4096), 32)),
			advanced(stepped(intIn("temporal_size", 64, 8, 4096), 4)), advanced(stepped(intIn("temporal_overlap", 8, 4, 4096), 4))),
		spec("SetLatentNoiseMask", "model/latent", outs("LATENT"), latent("samples"), link("mask", "MASK")),
		spec("InpaintModelConditioning", "model/conditioning", outs("CONDITIONING", "CONDITIONING", "LATENT"),
			cond("positive"), cond("negative"), link("vae", "VAE"), link("pixels", "IMAGE"), link("mask", "MASK"),
			boolIn("noise_mask", true)).named("positive", "negative", "latent"),
		spec("LoadImageMask", "image", outs("MASK"),
			in{"image", []any{[]any{}, map[string]any{"image_upload": true, "kiln_input_files": true}}},
			comboIn("channel", []any{"alpha", "red", "green", "blue"})),
		spec("EmptyImage", "image", outs("IMAGE"), in{"width", []any{"INT", map[string]any{"default": 512, "min": 1, "max": maxResolution, "step": 1}}},
			in{"height", []any{"INT", map[string]any{"default": 512, "min": 1, "max": maxResolution, "step": 1}}}, batch(),
			in{"color", []any{"INT", map[string]any{"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}}}),
		spec("ImageBatch", "image/batch", outs("IMAGE"), link("image1", "IMAGE"), link("image2", "IMAGE")),
		spec("ImagePadForOutpaint", "image/transform", outs("IMAGE", "MASK"), link("image", "IMAGE"), res("left", 0, 0), res("top", 0, 0),
			res("right", 0, 0), res("bottom", 0, 0),
			advanced(in{"feathering", []any{"INT", map[string]any{"default": 40, "min": 0, "max": maxResolution, "step": 1}}})),
		spec("LatentComposite", "model/latent", outs("LATENT"), latent("samples_to"), latent("samples_from"), res("x", 0, 0), res("y", 0, 0), res("feather", 0, 0)),
		spec("LatentBlend", "experimental", outs("LATENT"), latent("samples1"), latent("samples2"), floatIn("blend_factor", 0.5, 0, 1, 0.01)),
		spec("LatentRotate", "model/latent/transform", outs("LATENT"), latent("samples"),
			comboIn("rotation", []any{"none", "90 degrees", "180 degrees", "270 degrees"})),
		spec("LatentFlip", "model/latent/transform", outs("LATENT"), latent("samples"),
			comboIn("flip_method", []any{"x-axis: vertically", "y-axis: horizontally"})),
		spec("LatentCrop", "model/latent/transform", outs("LATENT"), latent("samples"), res("width", 512, 64), res("height", 512, 64), res("x", 0, 0), res("y", 0, 0)),
		// batch_index counts from the end when negative (-1: the last).
		spec("LatentFromBatch", "model/latent/batch", outs("LATENT"), latent("samples"), intIn("batch_index", 0, -maxResolution, maxResolution), intIn("length", 1, 1, 64)),
		spec("ConditioningMultiply", "model/conditioning/transform", outs("CONDITIONING"), cond("conditioning"), floatIn("multiplier", 1, -100, 100, 0.01)),
		spec("ConditioningSetAreaPercentage", "model/conditioning/transform", outs("CONDITIONING"), cond("conditioning"), floatIn("width", 1, 0, 1, 0.01),
			floatIn("height", 1, 0, 1, 0.01), floatIn("x", 0, 0, 1, 0.01), floatIn("y", 0, 0, 1, 0.01), floatIn("strength", 1, 0, 10, 0.01)),
		spec("ConditioningSetAreaStrength", "model/conditioning/transform", outs("CONDITIONING"), cond("conditioning"), floatIn("strength", 1, 0, 10, 0.01)),
		spec("CLIPVisionEncode", "model/conditioning", outs("CLIP_VISION_OUTPUT"), link("clip_vision", "CLIP_VISION"), link("image", "IMAGE"),
			comboIn("crop", []any{"center", "none"})),
		spec("StyleModelApply", "model/conditioning", outs("CONDITIONING"), cond("conditioning"), link("style_model", "STYLE_MODEL"),
			link("clip_vision_output", "CLIP_VISION_OUTPUT"), floatIn("strength", 1, 0, 10, 0.001), comboIn("strength_type", []any{"multiply", "attn_bias"})),
		spec("unCLIPConditioning", "model/conditioning", outs("CONDITIONING"), cond("conditioning"), link("clip_vision_output", "CLIP_VISION_OUTPUT"),
			floatIn("strength", 1, -10, 10, 0.01), floatIn("noise_augmentation", 0, 0, 1, 0.01)),
		spec("unCLIPCheckpointLoader", "model/loaders", outs("MODEL", "CLIP", "VAE", "CLIP_VISION"), modelIn("ckpt_name", "checkpoints")),
		spec("GLIGENLoader", "model/loaders", outs("GLIGEN"), modelIn("gligen_name", "gligen")),
		spec("SaveLatent", "model/latent", outs("LATENT"), latent("samples"),
			in{"filename_prefix", []any{"STRING", map[string]any{"default": "latents/ComfyUI"}}}).named("samples").output().withHidden(),
		spec("LoadLatent", "model/latent", outs("LATENT"), in{"latent", []any{[]any{}, map[string]any{"kiln_input_files": true}}}),
		// LoadImageOutput's combo has no list: ComfyUI's frontend fetches the
		// output files from the remote route, and kiln validates the name
		// against the folder its annotation ("name.png [output]") names.
		spec("LoadImageOutput", "image", outs("IMAGE", "MASK"), in{"image", []any{"COMBO", map[string]any{
			"image_upload": true, "image_folder": "output",
			"remote": map[string]any{"route": "/internal/files/output", "refresh_button": true, "control_after_refresh": "first"}}}}),
		spec("DiffusersLoader", "model/loaders", outs("MODEL", "CLIP", "VAE"), modelIn("model_path", "diffusers")),
		spec("GLIGENTextBoxApply", "model/conditioning/gligen", outs("CONDITIONING"), cond("conditioning_to"), link("clip", "CLIP"),
			link("gligen_textbox_model", "GLIGEN"), in{"text", []any{"STRING", map[string]any{"multiline": true, "dynamicPrompts": true}}},
			res("width", 64, 8), res("height", 64, 8), res("x", 0, 0), res("y", 0, 0)),
	}
}

// coreNodeFuncs implement the classes of coreNodeSpecs.
var coreNodeFuncs = map[string]nodeFunc{
	"VAEEncodeForInpaint":           encodeFrom("pixels"),
	"VAEEncodeTiled":                encodeFrom("pixels"),
	"InpaintModelConditioning":      encodeFrom("pixels"),
	"SetLatentNoiseMask":            sameAs("samples"),
	"LatentBlend":                   sameAs("samples1"),
	"LatentComposite":               sameAs("samples_to"),
	"LatentFlip":                    sameAs("samples"),
	"LoadImageMask":                 (*execution).loadImage,
	"EmptyImage":                    (*execution).emptyImage,
	"ImageBatch":                    (*execution).imageBatch,
	"ImagePadForOutpaint":           (*execution).padForOutpaint,
	"LatentRotate":                  (*execution).rotateLatent,
	"LatentCrop":                    (*execution).cropLatent,
	"LatentFromBatch":               (*execution).latentFromBatch,
	"CLIPVisionEncode":              (*execution).clipVisionEncode,
	"unCLIPCheckpointLoader":        (*execution).modelLoader,
	"ConditioningMultiply":          (*execution).passThrough,
	"ConditioningSetAreaPercentage": (*execution).passThrough,
	"ConditioningSetAreaStrength":   (*execution).passThrough,
	"StyleModelApply":               (*execution).passThrough,
	"unCLIPConditioning":            (*execution).passThrough,
	"GLIGENLoader":                  (*execution).passThrough,
	"GLIGENTextBoxApply":            (*execution).passThrough,
	"SaveLatent":                    (*execution).saveLatent,
	"ImageInvert":                   (*execution).invertImage,
	"LoadLatent":                    (*execution).loadImage,
	"LoadImageOutput":               (*execution).loadImage,
	"DiffusersLoader":               (*execution).modelLoader,
}

// input is the value of the node that input links to, with the default
// size when that node has none.
func (e *execution) input(n *workflow.Node, name string) value {
	v, _ := e.in(n, name)
	if !v.sized {
		v.width, v.height, v.batch, v.sized = workflow.DefaultWidth, workflow.DefaultHeight, 1, true
	}
	return v
}

// sameAs returns a node function whose output has the size of input name.
func sameAs(name string) nodeFunc {
	return func(e *execution, n *workflow.Node) (value, error) { return e.input(n, name), nil }
}

// encodeFrom returns a VAE-encoding node function: the latent has the size
// of the image input name and is charged like a decode of that size.
func encodeFrom(name string) nodeFunc {
	return func(e *execution, n *workflow.Node) (value, error) {
		v := e.input(n, name)
		if vae, ok := e.in(n, "vae"); ok && v.family == "" {
			v.family = vae.family
		}
		return v, e.charge(e.cost.DecodeTime(v.family, v.width, v.height, v.batch, e.dev))
	}
}

// emptyImage is EmptyImage: width × height × batch_size of one colour; the
// colour seeds the sim's picture so that colours differ.
func (e *execution) emptyImage(n *workflow.Node) (value, error) {
	w, err1 := intInput(n, "width", 512)
	h, err2 := intInput(n, "height", 512)
	b, err3 := intInput(n, "batch_size", 1)
	c, err4 := intInput(n, "color", 0)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return value{}, err
	}
	v, err := sized(value{seed: uint64(c) + 1}, w, h, b)
	if err != nil {
		return value{}, err
	}
	if !withinPixelBudget(w, h, b) {
		return v, nil
	}
	fill := color.RGBA{R: uint8(c >> 16), G: uint8(c >> 8), B: uint8(c), A: 0xff}
	for range b {
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		draw.Draw(img, img.Bounds(), image.NewUniform(fill), image.Point{}, draw.Src)
		v.pixels = append(v.pixels, img)
	}
	return v, nil
}

// imageBatch is ImageBatch: image2 is scaled to image1's size and appended.
func (e *execution) imageBatch(n *workflow.Node) (value, error) {
	a, b := e.input(n, "image1"), e.input(n, "image2")
	v, err := sized(a, a.width, a.height, a.batch+b.batch)
	if err != nil {
		return value{}, err
	}
	v.pixels = nil
	if !withinPixelBudget(v.width, v.height, v.batch) {
		return v, nil
	}
	for i := range a.batch {
		v.pixels = append(v.pixels, a.picture(i))
	}
	for i := range b.batch {
		v.pixels = append(v.pixels, scaleNearest(b.picture(i), a.width, a.height))
	}
	return v, nil
}

// padForOutpaint is ImagePadForOutpaint: the image grows by the four pads.
func (e *execution) padForOutpaint(n *workflow.Node) (value, error) {
	v := e.input(n, "image")
	var pad [4]int
	var errs []error
	for i, name := range []string{"left", "top", "right", "bottom"} {
		p, err := intInput(n, name, 0)
		errs = append(errs, err)
		pad[i] = p
	}
	if err := errors.Join(errs...); err != nil {
		return value{}, err
	}
	for _, p := range pad {
		if p < 0 {
			return value{}, fmt.Errorf("negative padding %d", p)
		}
	}
	out, err := sized(v, v.width+pad[0]+pad[2], v.height+pad[1]+pad[3], v.batch)
	if err != nil {
		return value{}, err
	}
	// ComfyUI fills the new border with 0.5 grey and puts the image at
	// (left, top).
	out.pixels = nil
	if !withinPixelBudget(out.width, out.height, out.batch) {
		return out, nil
	}
	for i := range v.batch {
		img := image.NewRGBA(image.Rect(0, 0, out.width, out.height))
		draw.Draw(img, img.Bounds(), image.NewUniform(color.RGBA{R: 128, G: 128, B: 128, A: 0xff}), image.Point{}, draw.Src)
		src := v.picture(i)
		draw.Draw(img, src.Bounds().Add(image.Pt(pad[0], pad[1])), src, image.Point{}, draw.Src)
		out.pixels = append(out.pixels, img)
	}
	return out, nil
}

// invertImage is ImageInvert: 1 − x per channel.
func (e *execution) invertImage(n *workflow.Node) (value, error) {
	v := e.input(n, "image")
	out := v
	out.pixels = nil
	if !withinPixelBudget(v.width, v.height, v.batch) {
		return out, nil
	}
	for i := range v.batch {
		src := v.picture(i)
		img := image.NewRGBA(src.Bounds())
		for p := 0; p < len(src.Pix); p += 4 {
			img.Pix[p], img.Pix[p+1], img.Pix[p+2], img.Pix[p+3] = 255-src.Pix[p], 255-src.Pix[p+1], 255-src.Pix[p+2], src.Pix[p+3]
		}
		out.pixels = append(out.pixels, img)
	}
	return out, nil
}

// maxPixelWork bounds the pixels a node keeps in memory (64 MiB of RGBA):
// a larger image or batch is handled by size only, drawn from its seed
// when saved, so that a prompt cannot make the worker allocate without
// bound.
const maxPixelWork = 16 << 20

func withinPixelBudget(w, h, batch int) bool {
	return w > 0 && h > 0 && batch > 0 && int64(w)*int64(h)*int64(batch) <= maxPixelWork
}

// picture is batch item i of v: its pixels when a node made them, else the
// picture its seed draws.
func (v value) picture(i int) *image.RGBA {
	if i < len(v.pixels) && v.pixels[i].Bounds().Dx() == v.width && v.pixels[i].Bounds().Dy() == v.height {
		return v.pixels[i]
	}
	return renderImage(v.width, v.height, v.seed+uint64(i))
}

// scaleNearest resizes img to w × h by nearest neighbour (ComfyUI's
// ImageBatch scales image2 to image1's size; the method matters little for
// a stand-in).
func scaleNearest(img *image.RGBA, w, h int) *image.RGBA {
	b := img.Bounds()
	if b.Dx() == w && b.Dy() == h {
		return img
	}
	out := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		sy := b.Min.Y + y*b.Dy()/h
		for x := range w {
			sx := b.Min.X + x*b.Dx()/w
			copy(out.Pix[out.PixOffset(x, y):out.PixOffset(x, y)+4], img.Pix[img.PixOffset(sx, sy):img.PixOffset(sx, sy)+4])
		}
	}
	return out
}

// rotateLatent is LatentRotate: a quarter turn swaps width and height.
func (e *execution) rotateLatent(n *workflow.Node) (value, error) {
	v := e.input(n, "samples")
	if r, _ := n.Inputs["rotation"].(string); r == "90 degrees" || r == "270 degrees" {
		v.width, v.height = v.height, v.width
	}
	return v, nil
}

// cropLatent is LatentCrop: a width × height window from (x, y), clipped
// to the latent (ComfyUI works on the latent grid, 8 pixels a cell).
func (e *execution) cropLatent(n *workflow.Node) (value, error) {
	v := e.input(n, "samples")
	w, err1 := intInput(n, "width", 512)
	h, err2 := intInput(n, "height", 512)
	x, err3 := intInput(n, "x", 0)
	y, err4 := intInput(n, "y", 0)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return value{}, err
	}
	x, y = min(max(x, 0), v.width-8), min(max(y, 0), v.height-8)
	w = min(w, v.width-x)
	h = min(h, v.height-y)
	return sized(v, max(w, 8), max(h, 8), v.batch)
}

// latentFromBatch is LatentFromBatch: length latents from batch_index.
func (e *execution) latentFromBatch(n *workflow.Node) (value, error) {
	v := e.input(n, "samples")
	i, err1 := intInput(n, "batch_index", 0)
	l, err2 := intInput(n, "length", 1)
	if err := errors.Join(err1, err2); err != nil {
		return value{}, err
	}
	if i < 0 { // from the end, as nodes.py's frombatch
		i += v.batch
	}
	i = min(max(i, 0), v.batch-1)
	l = min(max(l, 1), v.batch-i)
	v.seed += uint64(i) // the images keep their place's picture
	return sized(v, v.width, v.height, l)
}

// clipVisionEncode is CLIPVisionEncode: charged as a text encode (a
// vision tower of the same order; ⚠ assumption, no COSTS.md row).
func (e *execution) clipVisionEncode(n *workflow.Node) (value, error) {
	v := e.inherit(n)
	return v, e.charge(e.cost.TextEncodeTime(v.family, e.dev))
}

// saveLatent is SaveLatent: the latent as a safetensors file, as ComfyUI
// writes it — a "latent_tensor" of batch × 4 × h/8 × w/8 float32s (zeros:
// the sim has no latents) and the "latent_format_version_0" marker that
// LoadLatent looks for — named <prefix>_<NNNNN>_.latent in the job's folder
// (the kernel gives it ComfyUI's name, as for images).
func (e *execution) saveLatent(n *workflow.Node) (value, error) {
	v := e.input(n, "samples")
	prefix := "latents/ComfyUI"
	if p, ok := n.Inputs["filename_prefix"].(string); ok && p != "" {
		prefix = p
	}
	clean := path.Clean(strings.ReplaceAll(prefix, "\\", "/"))
	if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") || strings.ContainsRune(clean, 0) {
		return value{}, fmt.Errorf("filename_prefix %q leaves the output directory", prefix)
	}
	dir, base := path.Split(clean)
	subfolder := path.Join(e.jobID, dir)
	e.counters[clean]++
	name := fmt.Sprintf("%s_%05d_.latent", base, e.counters[clean])
	shape := []int{v.batch, 4, max(v.height/8, 1), max(v.width/8, 1)}
	size := 4 * shape[0] * shape[1] * shape[2] * shape[3]
	header, err := json.Marshal(map[string]any{
		"latent_tensor":           map[string]any{"dtype": "F32", "shape": shape, "data_offsets": []int{0, size}},
		"latent_format_version_0": map[string]any{"dtype": "F32", "shape": []int{0}, "data_offsets": []int{size, size}},
	})
	if err != nil {
		return value{}, err
	}
	data := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	data = append(append(data, header...), make([]byte, size)...)
	file := filepath.Join(e.outDir, filepath.FromSlash(subfolder), name)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return value{}, err
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		return value{}, fmt.Errorf("write %s: %w", file, err)
	}
	e.outputs = append(e.outputs, wire.Output{Node: n.ID, Filename: name, Subfolder: subfolder, Type: "output",
		Width: v.width, Height: v.height})
	return v, nil
}
