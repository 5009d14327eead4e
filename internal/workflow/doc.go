// Package workflow parses and checks ComfyUI API-format workflow graphs.
//
// A workflow is a JSON object that maps node ids to nodes, each with a
// class_type and inputs; an input is either a literal or a link
// ["nodeid", outputIndex] to another node's output. Parse refuses, with a
// ComfyUI-shaped *Error, anything kiln should not queue: malformed graphs,
// dangling links, cycles, graphs without an output node, requests beyond the
// configured Limits, and model names that could escape the model store.
//
// From an accepted Graph the kernel reads what a job needs before it runs:
// the models its loader nodes name (Models), the sampling work it asks for
// (Params, for the cost model) and its output nodes.
//
//	g, err := workflow.Parse(body, cfg.Limits)
//	var werr *workflow.Error
//	if errors.As(err, &werr) {
//		// answer 400 with werr.Type, werr.Message, werr.NodeID
//	}
//	for _, m := range g.Models() {
//		fmt.Println(m.ID, m.Family) // "checkpoints/sd_xl_base_1.0.safetensors sdxl"
//	}
//
// # Notes
//
// Model ids are "folder/name" with forward slashes, the folder being
// ComfyUI's canonical folder name (legacy "unet" and "clip" are mapped to
// "diffusion_models" and "text_encoders"). Names are checked so that joining
// an id under a models directory can never leave it.
//
// Numbers are validated only where kiln interprets them (link indexes, steps,
// sizes, batch sizes, denoise); other literals, such as 64-bit seeds, pass
// through untouched.
package workflow
