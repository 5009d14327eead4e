package workflow

import (
	"slices"
	"strings"
)

// Stage is a run of consecutive nodes, in the graph's execution order
// (Nodes), that needs one set of models on the device together: a Flux
// graph runs its text encoders, then its diffusion model, then its VAE,
// and never needs all of them at once. The kernel admits a job by its
// largest stage, not by the sum of its models (docs/stages.md).
type Stage struct {
	// Nodes are the ids of the stage's nodes in execution order; the
	// stages of a graph partition its nodes.
	Nodes []string `json:"nodes"`
	// Models are the ids of the models some node of the stage uses, in the
	// order of Graph.Models.
	Models []string `json:"models"`
	// Samplers are the sampler nodes the stage runs (their activations are
	// the stage's largest).
	Samplers []SamplerParams `json:"samplers,omitempty"`
	// Decodes reports that the stage runs a VAE over pixels
	// (VAEDecode/VAEEncode and their tiled kin).
	Decodes bool `json:"decodes,omitempty"`
}

// carrierInputs are the inputs through which a node receives a model's
// weights as a handle (ComfyUI's MODEL, CLIP, VAE, CONTROL_NET, GUIDER,
// ...), as opposed to a value computed from them (CONDITIONING, LATENT).
var carrierInputs = map[string]bool{
	"model": true, "model1": true, "model2": true, "clip": true, "vae": true, "guider": true,
	"control_net": true, "upscale_model": true, "clip_vision": true, "style_model": true,
	"gligen": true, "hypernetwork": true, "photomaker": true,
}

// carries reports whether a node of class hands the weights it receives
// on to the nodes after it: a LoRA loader patches the model it is given
// and passes it on, a guider wraps a model for the sampler, and a
// ControlNet apply node puts the control net into the conditioning the
// sampler reads. A node that only computes from the weights (a text
// encoder, a sampler, a VAE decode) ends the chain: the weights are not
// needed after it has run.
func carries(class string) bool {
	switch {
	case IsLoaderClass(class),
		strings.Contains(class, "Guider"),
		strings.HasPrefix(class, "ModelSampling"),
		strings.HasPrefix(class, "ControlNetApply"),
		strings.HasPrefix(class, "FreeU"),
		class == "CLIPSetLastLayer", class == "SetUnionControlNetType",
		class == "StyleModelApply", class == "unCLIPConditioning":
		return true
	}
	return false
}

// readsOnlyConfig reports whether a node of class takes a model only to
// read its configuration: BasicScheduler and kin compute sigmas from the
// model's sampling settings and never touch its weights, so they are no
// use of the model (ComfyUI does not load it for them either).
func readsOnlyConfig(class string) bool { return strings.HasSuffix(class, "Scheduler") }

var decodeClasses = map[string]bool{
	"VAEDecode": true, "VAEEncode": true, "VAEDecodeTiled": true, "VAEEncodeTiled": true,
	"VAEEncodeForInpaint": true, "VAEDecodeHunyuan3D": true,
}

// Stages splits the graph, in execution order, into the stages that need
// different models. A model's uses are the nodes that receive its weights
// from its loader, directly or through nodes that carry them on (carries);
// it is needed from its first use to its last. A stage begins where a model
// is first used; its models are those needed at any of its nodes. A stage
// whose models are all needed by the next one is folded into it, and nodes
// before the first use belong to the first stage. A graph without models
// is one stage with none.
func (g *Graph) Stages() []Stage {
	pos := make(map[string]int, len(g.order))
	for i, n := range g.order {
		pos[n.ID] = i
	}
	users := make(map[string][]*Node, len(g.order)) // node id → nodes linking to it through a carrier input
	for _, n := range g.order {
		// In map order: a model's span is the least and the greatest
		// position of its uses, whatever order they are found in, and
		// sorting every node's inputs cost most of Stages (it runs on
		// every submit, for the job's Facts).
		for name := range n.Inputs {
			if !carrierInputs[name] {
				continue
			}
			if l, ok := n.Link(name); ok {
				users[l.NodeID] = append(users[l.NodeID], n)
			}
		}
	}
	type span struct{ first, last int }
	spans := make([]span, len(g.models))
	for i, m := range g.models {
		s := span{first: -1, last: -1}
		seen := map[string]bool{m.NodeID: true}
		frontier := []string{m.NodeID}
		for len(frontier) > 0 {
			id := frontier[0]
			frontier = frontier[1:]
			for _, u := range users[id] {
				if seen[u.ID] || readsOnlyConfig(u.ClassType) {
					continue
				}
				seen[u.ID] = true
				p := pos[u.ID]
				if s.first < 0 || p < s.first {
					s.first = p
				}
				s.last = max(s.last, p)
				if carries(u.ClassType) {
					frontier = append(frontier, u.ID)
				}
			}
		}
		if s.first < 0 {
			// Loaded and never used: needed where it is loaded, so that
			// a worker that loads eagerly finds it.
			s.first, s.last = pos[m.NodeID], pos[m.NodeID]
		}
		spans[i] = s
	}
	starts := []int{0}
	for _, s := range spans {
		starts = append(starts, s.first)
	}
	slices.Sort(starts)
	starts = slices.Compact(starts)
	var stages []Stage
	for k, start := range starts {
		end := len(g.order)
		if k+1 < len(starts) {
			end = starts[k+1]
		}
		st := Stage{}
		for _, n := range g.order[start:end] {
			st.Nodes = append(st.Nodes, n.ID)
			st.Decodes = st.Decodes || decodeClasses[n.ClassType]
		}
		for i, s := range spans {
			if s.first < end && s.last >= start {
				st.Models = append(st.Models, g.models[i].ID)
			}
		}
		for _, p := range g.params {
			if q := pos[p.NodeID]; q >= start && q < end {
				st.Samplers = append(st.Samplers, p)
			}
		}
		stages = append(stages, st)
	}
	// Fold a stage into the next when the next needs all its models: the
	// boundary would buy no memory, only a round trip.
	for k := 0; k+1 < len(stages); {
		a, b := stages[k], stages[k+1]
		if !subset(a.Models, b.Models) {
			k++
			continue
		}
		b.Nodes = append(slices.Clone(a.Nodes), b.Nodes...)
		b.Samplers = append(slices.Clone(a.Samplers), b.Samplers...)
		b.Decodes = a.Decodes || b.Decodes
		stages[k+1] = b
		stages = slices.Delete(stages, k, k+1)
		if k > 0 {
			k-- // the merged stage may now fold its predecessor
		}
	}
	return stages
}

func subset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
