package main

// nodeMeta is what ComfyUI's /object_info says of a class beyond its inputs
// and outputs: the display name (nodes.NODE_DISPLAY_NAME_MAPPINGS, or a V3
// schema's display_name), the module that defines it (python_module:
// "nodes", "comfy_extras.<file>", "custom_nodes.<pack>"), DESCRIPTION,
// input tooltips, OUTPUT_TOOLTIPS, DEPRECATED and EXPERIMENTAL. Classes missing here get
// ComfyUI's defaults: the class name, "nodes", no description.
type nodeMeta struct {
	display        string
	module         string
	description    string
	tooltips       map[string]string // input name → tooltip
	outputTooltips []string
	deprecated     bool
	experimental   bool
}

// Modules of the comfy_extras and custom-node classes the sim executes.
const (
	modSD3           = "comfy_extras.nodes_sd3"
	modCustomSampler = "comfy_extras.nodes_custom_sampler"
	modModelAdvanced = "comfy_extras.nodes_model_advanced"
	modFlux          = "comfy_extras.nodes_flux"
	modGGUF          = "custom_nodes.ComfyUI-GGUF"
)

// classMeta follows ComfyUI's nodes.py and comfy_extras at the version that
// docs/comfyui.md names.
var classMeta = map[string]nodeMeta{
	"KSampler": {
		display:     "KSampler",
		description: "Uses the provided model, positive and negative conditioning to denoise the latent image.",
		tooltips: map[string]string{
			"model":        "The model used for denoising the input latent.",
			"seed":         "The random seed used for creating the noise.",
			"steps":        "The number of steps used in the denoising process.",
			"cfg":          "The Classifier-Free Guidance scale balances creativity and adherence to the prompt. Higher values result in images more closely matching the prompt however too high values will negatively impact quality.",
			"sampler_name": "The algorithm used when sampling, this can affect the quality, speed, and style of the generated output.",
			"scheduler":    "The scheduler controls how noise is gradually removed to form the image.",
			"positive":     "The conditioning describing the attributes you want to include in the image.",
			"negative":     "The conditioning describing the attributes you want to exclude from the image.",
			"latent_image": "The latent image to denoise.",
			"denoise":      "The amount of denoising applied, lower values will maintain the structure of the initial image allowing for image to image sampling.",
		},
		outputTooltips: []string{"The denoised latent."},
	},
	"KSamplerAdvanced": {display: "KSampler (Advanced)"},
	"CheckpointLoader": {display: "Load Checkpoint With Config (DEPRECATED)", deprecated: true},
	"CheckpointLoaderSimple": {
		display:     "Load Checkpoint",
		description: "Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
		tooltips:    map[string]string{"ckpt_name": "The name of the checkpoint (model) to load."},
		outputTooltips: []string{"The model used for denoising latents.", "The CLIP model used for encoding text prompts.",
			"The VAE model used for encoding and decoding images to and from latent space."},
	},
	"VAELoader": {display: "Load VAE"},
	"LoraLoader": {
		display:     "Load LoRA (Model and CLIP)",
		description: "LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are denoised such as applying styles. Multiple LoRA nodes can be linked together.",
		tooltips: map[string]string{
			"model":          "The diffusion model the LoRA will be applied to.",
			"clip":           "The CLIP model the LoRA will be applied to.",
			"lora_name":      "The name of the LoRA.",
			"strength_model": "How strongly to modify the diffusion model. This value can be negative.",
			"strength_clip":  "How strongly to modify the CLIP model. This value can be negative.",
		},
		outputTooltips: []string{"The modified diffusion model.", "The modified CLIP model."},
	},
	"LoraLoaderModelOnly":  {display: "Load LoRA"},
	"CLIPLoader":           {display: "Load CLIP"},
	"DualCLIPLoader":       {display: "Load CLIP (Dual)"},
	"ControlNetLoader":     {display: "Load ControlNet Model"},
	"DiffControlNetLoader": {display: "Load ControlNet Model (diff)"},
	"StyleModelLoader":     {display: "Load Style Model"},
	"CLIPVisionLoader":     {display: "Load CLIP Vision"},
	"UNETLoader":           {display: "Load Diffusion Model"},
	"CLIPTextEncode": {
		display:     "CLIP Text Encode (Prompt)",
		description: "Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion model towards generating specific images.",
		tooltips: map[string]string{
			"text": "The text to be encoded.",
			"clip": "The CLIP model used for encoding the text.",
		},
		outputTooltips: []string{"A conditioning containing the embedded text used to guide the diffusion model."},
	},
	"CLIPSetLastLayer":        {display: "CLIP Set Last Layer"},
	"ConditioningCombine":     {display: "Conditioning (Combine)"},
	"ConditioningAverage":     {display: "Conditioning (Average)"},
	"ConditioningConcat":      {display: "Conditioning (Concat)"},
	"ConditioningSetArea":     {display: "Conditioning (Set Area)"},
	"ConditioningSetMask":     {display: "Conditioning (Set Mask)"},
	"ControlNetApply":         {display: "Apply ControlNet (DEPRECATED)", deprecated: true},
	"ControlNetApplyAdvanced": {display: "Apply ControlNet"},
	"ConditioningZeroOut":     {display: "Conditioning Zero Out"},
	"VAEDecode": {
		display:     "VAE Decode",
		description: "Decodes latent images back into pixel space images.",
		tooltips: map[string]string{
			"samples": "The latent to be decoded.",
			"vae":     "The VAE model used for decoding the latent.",
		},
		outputTooltips: []string{"The decoded image."},
	},
	"VAEEncode": {display: "VAE Encode"},
	"EmptyLatentImage": {
		display:     "Empty Latent Image",
		description: "Create a new batch of empty latent images to be denoised via sampling.",
		tooltips: map[string]string{
			"width":      "The width of the latent images in pixels.",
			"height":     "The height of the latent images in pixels.",
			"batch_size": "The number of latent images in the batch.",
		},
		outputTooltips: []string{"The empty latent image batch."},
	},
	"LatentUpscale":     {display: "Upscale Latent"},
	"LatentUpscaleBy":   {display: "Upscale Latent By"},
	"RepeatLatentBatch": {display: "Repeat Latent Batch"},
	"SaveImage": {
		display:     "Save Image",
		description: "Saves the input images to your ComfyUI output directory.",
		tooltips: map[string]string{
			"images":          "The images to save.",
			"filename_prefix": "The prefix for the file to save. This may include formatting information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.",
		},
	},
	"PreviewImage":                  {display: "Preview Image", description: "Saves the input images to your ComfyUI output directory."},
	"LoadImage":                     {display: "Load Image"},
	"ImageScale":                    {display: "Upscale Image"},
	"ImageScaleBy":                  {display: "Upscale Image By"},
	"ImageInvert":                   {display: "Invert Image Colors"},
	"VAEDecodeTiled":                {display: "VAE Decode (Tiled)"},
	"ImageScaleToTotalPixels":       {display: "Scale Image to Total Pixels", module: "comfy_extras.nodes_post_processing"},
	"UpscaleModelLoader":            {display: "Load Upscale Model", module: "comfy_extras.nodes_upscale_model"},
	"ImageUpscaleWithModel":         {display: "Upscale Image (using Model)", module: "comfy_extras.nodes_upscale_model"},
	"TripleCLIPLoader":              {module: modSD3},
	"EmptySD3LatentImage":           {module: modSD3},
	"CLIPTextEncodeSD3":             {module: modSD3},
	"ControlNetApplySD3":            {display: "Apply Controlnet with VAE", module: modSD3},
	"CLIPTextEncodeSDXL":            {module: "comfy_extras.nodes_clip_sdxl"},
	"CLIPTextEncodeFlux":            {module: modFlux},
	"FluxGuidance":                  {module: modFlux},
	"ModelSamplingSD3":              {module: modModelAdvanced},
	"ModelSamplingFlux":             {module: modModelAdvanced},
	"ModelSamplingDiscrete":         {module: modModelAdvanced},
	"ModelSamplingAuraFlow":         {module: modModelAdvanced},
	"FreeU":                         {module: "comfy_extras.nodes_freelunch"},
	"FreeU_V2":                      {module: "comfy_extras.nodes_freelunch"},
	"RandomNoise":                   {module: modCustomSampler},
	"DisableNoise":                  {module: modCustomSampler},
	"BasicGuider":                   {module: modCustomSampler},
	"CFGGuider":                     {module: modCustomSampler},
	"DualCFGGuider":                 {module: modCustomSampler},
	"KSamplerSelect":                {module: modCustomSampler},
	"SamplerEulerAncestral":         {module: modCustomSampler},
	"SamplerDPMPP_2M_SDE":           {module: modCustomSampler},
	"SamplerDPMPP_SDE":              {module: modCustomSampler},
	"BasicScheduler":                {module: modCustomSampler},
	"KarrasScheduler":               {module: modCustomSampler},
	"ExponentialScheduler":          {module: modCustomSampler},
	"SDTurboScheduler":              {module: modCustomSampler},
	"BetaSamplingScheduler":         {module: modCustomSampler},
	"SplitSigmas":                   {module: modCustomSampler},
	"SamplerCustom":                 {module: modCustomSampler},
	"SamplerCustomAdvanced":         {module: modCustomSampler},
	"AlignYourStepsScheduler":       {module: "comfy_extras.nodes_align_your_steps"},
	"Canny":                         {module: "comfy_extras.nodes_canny"},
	"SetUnionControlNetType":        {module: "comfy_extras.nodes_controlnet"},
	"PrimitiveInt":                  {display: "Int", module: "comfy_extras.nodes_primitive"},
	"PrimitiveFloat":                {display: "Float", module: "comfy_extras.nodes_primitive"},
	"PrimitiveString":               {display: "String", module: "comfy_extras.nodes_primitive"},
	"PrimitiveStringMultiline":      {display: "String (Multiline)", module: "comfy_extras.nodes_primitive"},
	"PrimitiveBoolean":              {display: "Boolean", module: "comfy_extras.nodes_primitive"},
	"UnetLoaderGGUF":                {display: "Unet Loader (GGUF)", module: modGGUF},
	"CLIPLoaderGGUF":                {display: "CLIPLoader (GGUF)", module: modGGUF},
	"DualCLIPLoaderGGUF":            {display: "DualCLIPLoader (GGUF)", module: modGGUF},
	"SaveImageWebsocket":            {module: "custom_nodes.websocket_image_save"},
	"VAEEncodeForInpaint":           {display: "VAE Encode (for Inpainting)"},
	"VAEEncodeTiled":                {display: "VAE Encode (Tiled)"},
	"SetLatentNoiseMask":            {display: "Set Latent Noise Mask"},
	"LoadImageMask":                 {display: "Load Image (as Mask)"},
	"EmptyImage":                    {display: "Empty Image"},
	"ImageBatch":                    {display: "Batch Images (DEPRECATED)", deprecated: true},
	"ImagePadForOutpaint":           {display: "Pad Image for Outpainting"},
	"LatentComposite":               {display: "Latent Composite"},
	"LatentBlend":                   {display: "Latent Blend"},
	"LatentRotate":                  {display: "Rotate Latent"},
	"LatentFlip":                    {display: "Flip Latent"},
	"LatentCrop":                    {display: "Crop Latent"},
	"LatentFromBatch":               {display: "Get Latent From Batch"},
	"ConditioningMultiply":          {display: "Conditioning (Multiply)"},
	"ConditioningSetAreaPercentage": {display: "Conditioning (Set Area with Percentage)"},
	"ConditioningSetAreaStrength":   {display: "Conditioning (Set Area Strength)"},
	"CLIPVisionEncode":              {display: "CLIP Vision Encode"},
	"StyleModelApply":               {display: "Apply Style Model"},
	"unCLIPCheckpointLoader":        {display: "Load unCLIP Checkpoint"},
	"GLIGENLoader":                  {display: "Load GLIGEN Model"},
	"GLIGENTextBoxApply":            {display: "Apply GLIGEN Text Box"},
	"SaveLatent":                    {display: "Save Latent"},
	"LoadLatent":                    {display: "Load Latent"},
	"LoadImageOutput": {
		display:      "Load Image (from Outputs)",
		description:  "Load an image from the output folder. When the refresh button is clicked, the node will update the image list and automatically select the first image, allowing for easy iteration.",
		experimental: true,
	},
}
