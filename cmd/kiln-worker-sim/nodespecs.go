package main

import "sort"

// The sim advertises ComfyUI-style input specs for every node class it
// executes (hello's node_specs, see sdk/worker/PROTOCOL.md), so that the
// kernel's /object_info and its /prompt validation agree with what the sim
// can run. The specs follow ComfyUI's nodes.py and comfy_extras for the
// inputs that the classes take; classes the sim only passes through get the
// inputs the shared workflows use and ComfyUI's output types.

// samplerNames and schedulerNames are ComfyUI's KSampler.SAMPLERS and
// KSampler.SCHEDULERS (comfy/samplers.py: KSAMPLER_NAMES plus ddim, uni_pc
// and uni_pc_bh2; SCHEDULER_HANDLERS), as of the ComfyUI that
// docs/comfyui.md names.
var (
	samplerNames = []any{"euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
		"exp_heun_2_x0", "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive",
		"dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
		"dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde",
		"dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "cfgpp_ud10_ab", "res_multistep",
		"res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
		"gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece",
		"ddim", "uni_pc", "uni_pc_bh2"}
	schedulerNames = []any{"simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
		"linear_quadratic", "kl_optimal"}
	upscaleMethods = []any{"nearest-exact", "bilinear", "area", "bicubic", "lanczos"}
	// latentUpscaleMethods are LatentUpscale's and LatentUpscaleBy's:
	// bislerp instead of lanczos.
	latentUpscaleMethods = []any{"nearest-exact", "bilinear", "area", "bicubic", "bislerp"}
	// clipLoaderTypes and dualCLIPTypes are CLIPLoader's and
	// DualCLIPLoader's type lists, in nodes.py's order (the first is the
	// frontend's default); a type missing here refused a valid workflow
	// with value_not_in_list.
	clipLoaderTypes = []any{"stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
		"lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image", "flux2", "ovis",
		"longcat_image", "cogvideox", "lens", "pixeldit", "ideogram4", "boogu", "krea2", "joyimage", "mage", "minimax", "yue2"}
	dualCLIPTypes = []any{"sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image", "hunyuan_video_15",
		"kandinsky5", "kandinsky5_image", "ltxv", "newbie", "ace"}
	// clipTypes is the GGUF custom nodes' list (both of ComfyUI's).
	clipTypes = []any{"sdxl", "sd3", "flux", "hunyuan_video", "hidream", "stable_diffusion", "stable_cascade",
		"stable_audio", "mochi", "ltxv", "pixart", "cosmos", "lumina2", "wan", "chroma", "ace", "omnigen2", "qwen_image"}
	weightDTypes = []any{"default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"}
	unionTypes   = []any{"auto", "openpose", "depth", "hed/pidi/scribble/ted", "canny/lineart/anime_lineart/mlsd",
		"normal", "segment", "tile", "repaint"}
)

// seedMax is ComfyUI's 0xffffffffffffffff.
const seedMax = uint64(1<<64 - 1)

// in is one input of a node spec.
type in struct {
	name string
	spec []any
}

func link(name, typ string) in { return in{name, []any{typ}} }
func intIn(name string, def, lo int64, hi any) in {
	return in{name, []any{"INT", map[string]any{"default": def, "min": lo, "max": hi}}}
}
func seedIn(name string) in {
	return in{name, []any{"INT", map[string]any{"default": 0, "min": 0, "max": seedMax, "control_after_generate": true}}}
}
func floatIn(name string, def, lo, hi, step float64) in {
	return in{name, []any{"FLOAT", map[string]any{"default": def, "min": lo, "max": hi, "step": step}}}
}
func strIn(name, def string, multiline bool) in {
	return in{name, []any{"STRING", map[string]any{"default": def, "multiline": multiline}}}
}
func comboIn(name string, values []any) in { return in{name, []any{values}} }
func boolIn(name string, def bool) in {
	return in{name, []any{"BOOLEAN", map[string]any{"default": def}}}
}

// modelIn is a combo of the model files of a ComfyUI folder: the kernel
// fills the list from its catalog.
func modelIn(name, folder string) in {
	return in{name, []any{[]any{}, map[string]any{"kiln_model_folder": folder}}}
}

// nodeSpec is one class's /object_info entry under construction.
type nodeSpec struct {
	class, category string
	outputs         []string
	names           []string
	outputNode      bool
	hidden          bool // prompt and extra_pnginfo hidden inputs
	required        []in
	optional        []in
}

func (n nodeSpec) entry() map[string]any {
	req, opt := map[string]any{}, map[string]any{}
	var reqOrder, optOrder []any
	for _, i := range n.required {
		req[i.name] = i.spec
		reqOrder = append(reqOrder, i.name)
	}
	for _, i := range n.optional {
		opt[i.name] = i.spec
		optOrder = append(optOrder, i.name)
	}
	outs := make([]any, len(n.outputs))
	names := make([]any, len(n.outputs))
	isList := make([]any, len(n.outputs))
	for k, o := range n.outputs {
		outs[k], names[k], isList[k] = o, o, false
		if k < len(n.names) {
			names[k] = n.names[k]
		}
	}
	input := map[string]any{"required": req}
	order := map[string]any{"required": nonNil(reqOrder)}
	if len(opt) > 0 {
		input["optional"] = opt
		order["optional"] = optOrder
	}
	if n.hidden {
		// ComfyUI's SaveImage and PreviewImage take the prompt and the
		// client's extra_pnginfo as hidden inputs (kiln's kernel writes
		// them into the PNGs).
		input["hidden"] = map[string]any{"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
		order["hidden"] = []any{"prompt", "extra_pnginfo"}
	}
	m := classMeta[n.class]
	for name, tip := range m.tooltips {
		addOption(req, name, "tooltip", tip)
		addOption(opt, name, "tooltip", tip)
	}
	e := map[string]any{
		"input": input, "input_order": order,
		"output": outs, "output_is_list": isList, "output_name": names,
		"name": n.class, "display_name": n.class, "description": m.description, "python_module": "nodes",
		"category": n.category, "output_node": n.outputNode,
	}
	if m.display != "" {
		e["display_name"] = m.display
	}
	if m.module != "" {
		e["python_module"] = m.module
	}
	if len(m.outputTooltips) > 0 {
		e["output_tooltips"] = m.outputTooltips
	}
	// ComfyUI's server sends deprecated and experimental only when true.
	if m.deprecated {
		e["deprecated"] = true
	}
	if m.experimental {
		e["experimental"] = true
	}
	// The fields the current server.py adds to every class: no kiln class
	// takes its inputs as lists or sends intermediate outputs; aliases are
	// [] where the class has none, essentials_category only where it has one.
	e["is_input_list"] = false
	e["has_intermediate_output"] = false
	e["search_aliases"] = nonNilStrings(m.searchAliases)
	if m.essentials != "" {
		e["essentials_category"] = m.essentials
	}
	return e
}

// addOption sets key in the options of input name of group, adding the
// options object when the spec has none.
func addOption(group map[string]any, name, key string, v any) {
	spec, ok := group[name].([]any)
	if !ok {
		return
	}
	var opts map[string]any
	if len(spec) > 1 {
		opts, _ = spec[1].(map[string]any)
	}
	cp := map[string]any{}
	for k, v := range opts {
		cp[k] = v
	}
	cp[key] = v
	group[name] = []any{spec[0], cp}
}

func nonNilStrings(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

func nonNil(v []any) []any {
	if v == nil {
		return []any{}
	}
	return v
}

func spec(class, category string, outputs []string, required ...in) nodeSpec {
	return nodeSpec{class: class, category: category, outputs: outputs, required: required}
}

func (n nodeSpec) named(names ...string) nodeSpec { n.names = names; return n }
func (n nodeSpec) output() nodeSpec               { n.outputNode = true; return n }
func (n nodeSpec) withHidden() nodeSpec           { n.hidden = true; return n }
func (n nodeSpec) withOptional(o ...in) nodeSpec  { n.optional = o; return n }
func outs(types ...string) []string               { return types }
func cond(name string) in                         { return link(name, "CONDITIONING") }
func steps(name string, def int64) in             { return intIn(name, def, 1, 10000) }
func denoise() in                                 { return floatIn("denoise", 1, 0, 1, 0.01) }
func cfg() in {
	return in{"cfg", []any{"FLOAT", map[string]any{"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}}}
}
func size(name string, def int64) in { return intIn(name, def, 16, 16384) }
func stepped(i in, step int64) in    { i.spec[1].(map[string]any)["step"] = step; return i }

// advanced marks a widget that ComfyUI's frontend folds away under
// "advanced" ({"advanced": true} in its options).
func advanced(i in) in {
	opts := map[string]any{}
	if len(i.spec) > 1 {
		for k, v := range i.spec[1].(map[string]any) {
			opts[k] = v
		}
	}
	opts["advanced"] = true
	return in{i.name, []any{i.spec[0], opts}}
}

// clipDevice is the CLIP loaders' optional device widget.
func clipDevice() in                       { return advanced(comboIn("device", []any{"default", "cpu"})) }
func batch() in                            { return intIn("batch_size", 1, 1, 4096) }
func strength(name string, def float64) in { return floatIn(name, def, -100, 100, 0.01) }
func percent(name string, def float64) in  { return floatIn(name, def, 0, 1, 0.001) }
func stepAt(name string, def int64) in     { return intIn(name, def, 0, 10000) }
func enable(name string) in                { return comboIn(name, []any{"enable", "disable"}) }

// nodeSpecTable lists the specs of the classes in nodeTable.
func nodeSpecTable() []nodeSpec {
	return append(baseNodeSpecs(), coreNodeSpecs()...)
}

// baseNodeSpecs lists the specs of the shared workflows' classes and their
// common neighbours.
func baseNodeSpecs() []nodeSpec {
	ckptOuts := outs("MODEL", "CLIP", "VAE")
	return []nodeSpec{
		spec("CheckpointLoaderSimple", "model/loaders", ckptOuts, modelIn("ckpt_name", "checkpoints")),
		spec("CheckpointLoader", "model/loaders", ckptOuts, modelIn("config_name", "configs"), modelIn("ckpt_name", "checkpoints")),
		spec("UNETLoader", "model/loaders", outs("MODEL"), modelIn("unet_name", "diffusion_models"), advanced(comboIn("weight_dtype", weightDTypes))),
		spec("UnetLoaderGGUF", "bootleg", outs("MODEL"), modelIn("unet_name", "diffusion_models")),
		spec("CLIPLoader", "model/loaders", outs("CLIP"), modelIn("clip_name", "text_encoders"), comboIn("type", clipLoaderTypes)).withOptional(clipDevice()),
		spec("DualCLIPLoader", "model/loaders", outs("CLIP"), modelIn("clip_name1", "text_encoders"), modelIn("clip_name2", "text_encoders"),
			comboIn("type", dualCLIPTypes)).withOptional(clipDevice()),
		spec("TripleCLIPLoader", "advanced/loaders", outs("CLIP"), modelIn("clip_name1", "text_encoders"), modelIn("clip_name2", "text_encoders"), modelIn("clip_name3", "text_encoders")),
		spec("CLIPLoaderGGUF", "bootleg", outs("CLIP"), modelIn("clip_name", "text_encoders"), comboIn("type", clipTypes)),
		spec("DualCLIPLoaderGGUF", "bootleg", outs("CLIP"), modelIn("clip_name1", "text_encoders"), modelIn("clip_name2", "text_encoders"), comboIn("type", clipTypes)),
		spec("LoraLoader", "model/loaders", outs("MODEL", "CLIP"), link("model", "MODEL"), link("clip", "CLIP"), modelIn("lora_name", "loras"),
			strength("strength_model", 1), strength("strength_clip", 1)),
		spec("LoraLoaderModelOnly", "model/loaders", outs("MODEL"), link("model", "MODEL"), modelIn("lora_name", "loras"), strength("strength_model", 1)),
		spec("UpscaleModelLoader", "loaders", outs("UPSCALE_MODEL"), modelIn("model_name", "upscale_models")),
		spec("VAELoader", "model/loaders", outs("VAE"), modelIn("vae_name", "vae")),
		spec("ControlNetLoader", "model/loaders", outs("CONTROL_NET"), modelIn("control_net_name", "controlnet")),
		spec("DiffControlNetLoader", "model/loaders", outs("CONTROL_NET"), link("model", "MODEL"), modelIn("control_net_name", "controlnet")),
		spec("CLIPVisionLoader", "model/loaders", outs("CLIP_VISION"), modelIn("clip_name", "clip_vision")),
		spec("StyleModelLoader", "model/loaders", outs("STYLE_MODEL"), modelIn("style_model_name", "style_models")),
		spec("CLIPTextEncode", "model/conditioning", outs("CONDITIONING"), in{"text", []any{"STRING", map[string]any{"multiline": true, "dynamicPrompts": true}}}, link("clip", "CLIP")),
		spec("CLIPTextEncodeSDXL", "advanced/conditioning", outs("CONDITIONING"), link("clip", "CLIP"),
			size("width", 1024), size("height", 1024), intIn("crop_w", 0, 0, 16384), intIn("crop_h", 0, 0, 16384),
			size("target_width", 1024), size("target_height", 1024), strIn("text_g", "", true), strIn("text_l", "", true)),
		spec("CLIPTextEncodeSD3", "advanced/conditioning", outs("CONDITIONING"), link("clip", "CLIP"),
			strIn("clip_l", "", true), strIn("clip_g", "", true), strIn("t5xxl", "", true), comboIn("empty_padding", []any{"none", "empty_prompt"})),
		spec("CLIPTextEncodeFlux", "advanced/conditioning/flux", outs("CONDITIONING"), link("clip", "CLIP"),
			strIn("clip_l", "", true), strIn("t5xxl", "", true), floatIn("guidance", 3.5, 0, 100, 0.1)),
		spec("CLIPSetLastLayer", "model/conditioning", outs("CLIP"), link("clip", "CLIP"), advanced(stepped(intIn("stop_at_clip_layer", -1, -24, -1), 1))),
		spec("ConditioningZeroOut", "model/conditioning/transform", outs("CONDITIONING"), cond("conditioning")),
		spec("ConditioningCombine", "model/conditioning/transform", outs("CONDITIONING"), cond("conditioning_1"), cond("conditioning_2")),
		spec("ConditioningConcat", "model/conditioning/transform", outs("CONDITIONING"), cond("conditioning_to"), cond("conditioning_from")),
		spec("ConditioningAverage", "model/conditioning/transform", outs("CONDITIONING"), cond("conditioning_to"), cond("conditioning_from"), floatIn("conditioning_to_strength", 1, 0, 1, 0.01)),
		spec("ConditioningSetTimestepRange", "model/conditioning/transform", outs("CONDITIONING"), cond("conditioning"), percent("start", 0), percent("end", 1)),
		spec("FluxGuidance", "advanced/conditioning/flux", outs("CONDITIONING"), cond("conditioning"), floatIn("guidance", 3.5, 0, 100, 0.1)),
		spec("ControlNetApply", "model/conditioning/controlnet", outs("CONDITIONING"), cond("conditioning"), link("control_net", "CONTROL_NET"),
			link("image", "IMAGE"), floatIn("strength", 1, 0, 10, 0.01)),
		spec("ControlNetApplyAdvanced", "model/conditioning/controlnet", outs("CONDITIONING", "CONDITIONING"), cond("positive"), cond("negative"),
			link("control_net", "CONTROL_NET"), link("image", "IMAGE"), floatIn("strength", 1, 0, 10, 0.01), percent("start_percent", 0), percent("end_percent", 1)).
			named("positive", "negative").withOptional(link("vae", "VAE")),
		spec("SetUnionControlNetType", "conditioning/controlnet", outs("CONTROL_NET"), link("control_net", "CONTROL_NET"), comboIn("type", unionTypes)),
		spec("ModelSamplingSD3", "advanced/model", outs("MODEL"), link("model", "MODEL"), floatIn("shift", 3, 0, 100, 0.01)),
		spec("ModelSamplingFlux", "advanced/model", outs("MODEL"), link("model", "MODEL"), floatIn("max_shift", 1.15, 0, 100, 0.01),
			floatIn("base_shift", 0.5, 0, 100, 0.01), size("width", 1024), size("height", 1024)),
		spec("ModelSamplingDiscrete", "advanced/model", outs("MODEL"), link("model", "MODEL"),
			comboIn("sampling", []any{"eps", "v_prediction", "lcm", "x0", "img_to_img"}), boolIn("zsnr", false)),
		spec("FreeU", "model_patches/unet", outs("MODEL"), link("model", "MODEL"), floatIn("b1", 1.1, 0, 10, 0.01), floatIn("b2", 1.2, 0, 10, 0.01),
			floatIn("s1", 0.9, 0, 10, 0.01), floatIn("s2", 0.2, 0, 10, 0.01)),
		spec("FreeU_V2", "model_patches/unet", outs("MODEL"), link("model", "MODEL"), floatIn("b1", 1.3, 0, 10, 0.01), floatIn("b2", 1.4, 0, 10, 0.01),
			floatIn("s1", 0.9, 0, 10, 0.01), floatIn("s2", 0.2, 0, 10, 0.01)),
		spec("RandomNoise", "sampling/custom_sampling/noise", outs("NOISE"), seedIn("noise_seed")),
		spec("DisableNoise", "sampling/custom_sampling/noise", outs("NOISE")),
		spec("BasicGuider", "sampling/custom_sampling/guiders", outs("GUIDER"), link("model", "MODEL"), cond("conditioning")),
		spec("CFGGuider", "sampling/custom_sampling/guiders", outs("GUIDER"), link("model", "MODEL"), cond("positive"), cond("negative"), cfg()),
		spec("DualCFGGuider", "sampling/custom_sampling/guiders", outs("GUIDER"), link("model", "MODEL"), cond("cond1"), cond("cond2"),
			cond("negative"), floatIn("cfg_conds", 8, 0, 100, 0.1), floatIn("cfg_cond2_negative", 8, 0, 100, 0.1)),
		spec("KSamplerSelect", "sampling/custom_sampling/samplers", outs("SAMPLER"), comboIn("sampler_name", samplerNames)),
		spec("SamplerEulerAncestral", "sampling/custom_sampling/samplers", outs("SAMPLER"), floatIn("eta", 1, 0, 100, 0.01), floatIn("s_noise", 1, 0, 100, 0.01)),
		spec("SamplerDPMPP_2M_SDE", "sampling/custom_sampling/samplers", outs("SAMPLER"), comboIn("solver_type", []any{"midpoint", "heun"}),
			floatIn("eta", 1, 0, 100, 0.01), floatIn("s_noise", 1, 0, 100, 0.01), comboIn("noise_device", []any{"gpu", "cpu"})),
		spec("SamplerDPMPP_SDE", "sampling/custom_sampling/samplers", outs("SAMPLER"), floatIn("eta", 1, 0, 100, 0.01),
			floatIn("s_noise", 1, 0, 100, 0.01), floatIn("r", 0.5, 0, 100, 0.01), comboIn("noise_device", []any{"gpu", "cpu"})),
		spec("BasicScheduler", "sampling/custom_sampling/schedulers", outs("SIGMAS"), link("model", "MODEL"), comboIn("scheduler", schedulerNames), steps("steps", 20), denoise()),
		spec("KarrasScheduler", "sampling/custom_sampling/schedulers", outs("SIGMAS"), steps("steps", 20),
			floatIn("sigma_max", 14.614642, 0, 5000, 0.01), floatIn("sigma_min", 0.0291675, 0, 5000, 0.01), floatIn("rho", 7, 0, 100, 0.01)),
		spec("ExponentialScheduler", "sampling/custom_sampling/schedulers", outs("SIGMAS"), steps("steps", 20),
			floatIn("sigma_max", 14.614642, 0, 5000, 0.01), floatIn("sigma_min", 0.0291675, 0, 5000, 0.01)),
		spec("SDTurboScheduler", "sampling/custom_sampling/schedulers", outs("SIGMAS"), link("model", "MODEL"), intIn("steps", 1, 1, 10), denoise()),
		spec("AlignYourStepsScheduler", "sampling/custom_sampling/schedulers", outs("SIGMAS"), comboIn("model_type", []any{"SD1", "SDXL", "SVD"}), steps("steps", 10), denoise()),
		spec("BetaSamplingScheduler", "sampling/custom_sampling/schedulers", outs("SIGMAS"), link("model", "MODEL"), steps("steps", 20),
			floatIn("alpha", 0.6, 0, 50, 0.01), floatIn("beta", 0.6, 0, 50, 0.01)),
		spec("SplitSigmas", "sampling/custom_sampling/sigmas", outs("SIGMAS", "SIGMAS"), link("sigmas", "SIGMAS"), intIn("step", 0, 0, 10000)).named("high_sigmas", "low_sigmas"),
		spec("EmptyLatentImage", "model/latent", outs("LATENT"), stepped(size("width", 1024), 8), stepped(size("height", 1024), 8), batch()),
		spec("EmptySD3LatentImage", "latent/sd3", outs("LATENT"), stepped(size("width", 1024), 16), stepped(size("height", 1024), 16), batch()),
		spec("LatentUpscale", "model/latent", outs("LATENT"), link("samples", "LATENT"), comboIn("upscale_method", latentUpscaleMethods),
			stepped(intIn("width", 512, 0, 16384), 8), stepped(intIn("height", 512, 0, 16384), 8), comboIn("crop", []any{"disabled", "center"})),
		spec("LatentUpscaleBy", "model/latent", outs("LATENT"), link("samples", "LATENT"), comboIn("upscale_method", latentUpscaleMethods), floatIn("scale_by", 1.5, 0.01, 8, 0.01)),
		spec("RepeatLatentBatch", "model/latent/batch", outs("LATENT"), link("samples", "LATENT"), intIn("amount", 1, 1, 64)),
		spec("KSampler", "model/sampling", outs("LATENT"), link("model", "MODEL"), seedIn("seed"), steps("steps", 20), cfg(),
			comboIn("sampler_name", samplerNames), comboIn("scheduler", schedulerNames), cond("positive"), cond("negative"),
			link("latent_image", "LATENT"), denoise()),
		spec("KSamplerAdvanced", "model/sampling", outs("LATENT"), link("model", "MODEL"), advanced(enable("add_noise")), seedIn("noise_seed"), steps("steps", 20), cfg(),
			comboIn("sampler_name", samplerNames), comboIn("scheduler", schedulerNames), cond("positive"), cond("negative"),
			link("latent_image", "LATENT"), advanced(stepAt("start_at_step", 0)), advanced(stepAt("end_at_step", 10000)),
			// "disable" first: the frontend's default, as in nodes.py.
			advanced(comboIn("return_with_leftover_noise", []any{"disable", "enable"}))),
		spec("SamplerCustom", "sampling/custom_sampling", outs("LATENT", "LATENT"), link("model", "MODEL"), boolIn("add_noise", true), seedIn("noise_seed"), cfg(),
			cond("positive"), cond("negative"), link("sampler", "SAMPLER"), link("sigmas", "SIGMAS"), link("latent_image", "LATENT")).named("output", "denoised_output"),
		spec("SamplerCustomAdvanced", "sampling/custom_sampling", outs("LATENT", "LATENT"), link("noise", "NOISE"), link("guider", "GUIDER"),
			link("sampler", "SAMPLER"), link("sigmas", "SIGMAS"), link("latent_image", "LATENT")).named("output", "denoised_output"),
		spec("VAEDecode", "model/latent", outs("IMAGE"), link("samples", "LATENT"), link("vae", "VAE")),
		spec("VAEDecodeTiled", "model/latent", outs("IMAGE"), link("samples", "LATENT"), link("vae", "VAE"),
			advanced(stepped(intIn("tile_size", 512, 64, 4096), 32)), advanced(stepped(intIn("overlap", 64, 0, 4096), 32)),
			advanced(stepped(intIn("temporal_size", 64, 8, 4096), 4)), advanced(stepped(intIn("temporal_overlap", 8, 4, 4096), 4))),
		spec("VAEEncode", "model/latent", outs("LATENT"), link("pixels", "IMAGE"), link("vae", "VAE")),
		spec("ImageScale", "image/upscaling", outs("IMAGE"), link("image", "IMAGE"), comboIn("upscale_method", upscaleMethods),
			stepped(intIn("width", 512, 0, 16384), 1), stepped(intIn("height", 512, 0, 16384), 1), comboIn("crop", []any{"disabled", "center"})),
		spec("ImageScaleBy", "image/upscaling", outs("IMAGE"), link("image", "IMAGE"), comboIn("upscale_method", upscaleMethods), floatIn("scale_by", 1, 0.01, 8, 0.01)),
		spec("ImageScaleToTotalPixels", "image/upscaling", outs("IMAGE"), link("image", "IMAGE"), comboIn("upscale_method", upscaleMethods), floatIn("megapixels", 1, 0.01, 16, 0.01)),
		spec("ImageUpscaleWithModel", "image/upscaling", outs("IMAGE"), link("upscale_model", "UPSCALE_MODEL"), link("image", "IMAGE")),
		spec("ImageInvert", "image/color", outs("IMAGE"), link("image", "IMAGE")),
		spec("Canny", "image/preprocessors", outs("IMAGE"), link("image", "IMAGE"), floatIn("low_threshold", 0.4, 0.01, 0.99, 0.01), floatIn("high_threshold", 0.8, 0.01, 0.99, 0.01)),
		spec("LoadImage", "image", outs("IMAGE", "MASK"), in{"image", []any{[]any{}, map[string]any{"image_upload": true, "kiln_input_files": true}}}),
		// SaveImage returns its images (and PreviewImage, its subclass, too),
		// so that a graph may go on from them.
		spec("SaveImage", "image", outs("IMAGE"), link("images", "IMAGE"), in{"filename_prefix", []any{"STRING", map[string]any{"default": "ComfyUI"}}}).
			named("images").output().withHidden(),
		spec("PreviewImage", "image", outs("IMAGE"), link("images", "IMAGE")).named("images").output().withHidden(),
		spec("SaveImageWebsocket", "image", outs(), link("images", "IMAGE")).output(),
		spec("PrimitiveInt", "utils/primitive", outs("INT"), intIn("value", 0, -1<<63, int64(1<<63-1))),
		spec("PrimitiveFloat", "utils/primitive", outs("FLOAT"), floatIn("value", 0, -1e308, 1e308, 0.01)),
		spec("PrimitiveString", "utils/primitive", outs("STRING"), strIn("value", "", false)),
		spec("PrimitiveStringMultiline", "utils/primitive", outs("STRING"), strIn("value", "", true)),
		spec("PrimitiveBoolean", "utils/primitive", outs("BOOLEAN"), boolIn("value", false)),
		spec("ConditioningSetArea", "model/conditioning/transform", outs("CONDITIONING"), cond("conditioning"),
			stepped(intIn("width", 64, 64, 16384), 8), stepped(intIn("height", 64, 64, 16384), 8),
			stepped(intIn("x", 0, 0, 16384), 8), stepped(intIn("y", 0, 0, 16384), 8), floatIn("strength", 1, 0, 10, 0.01)),
		spec("ConditioningSetMask", "model/conditioning/transform", outs("CONDITIONING"), cond("conditioning"), link("mask", "MASK"), floatIn("strength", 1, 0, 10, 0.01),
			comboIn("set_cond_area", []any{"default", "mask bounds"})),
		spec("ControlNetApplySD3", "conditioning/controlnet", outs("CONDITIONING", "CONDITIONING"), cond("positive"), cond("negative"),
			link("control_net", "CONTROL_NET"), link("vae", "VAE"), link("image", "IMAGE"), floatIn("strength", 1, 0, 10, 0.01),
			percent("start_percent", 0), percent("end_percent", 1)).named("positive", "negative"),
		spec("ModelSamplingAuraFlow", "advanced/model", outs("MODEL"), link("model", "MODEL"), floatIn("shift", 1.73, 0, 100, 0.01)),
	}
}

// nodeSpecs returns the specs of the classes the sim executes, class →
// /object_info entry; every class in nodeTable has one.
func nodeSpecs() map[string]any {
	out := map[string]any{}
	for _, n := range nodeSpecTable() {
		if nodeTable[n.class] != nil {
			out[n.class] = n.entry()
		}
	}
	return out
}

// specClasses lists the classes that have a spec, sorted (for tests).
func specClasses() []string {
	var out []string
	for _, n := range nodeSpecTable() {
		out = append(out, n.class)
	}
	sort.Strings(out)
	return out
}
