package workflow

import "fmt"

// SamplerParams is the sampling work one sampler node asks for, resolved
// through the graph. Values that cannot be resolved (an img2img latent from
// VAEEncode, a computed step count) take the defaults: 20 steps, 512×512,
// batch 1, denoise 1.
type SamplerParams struct {
	// NodeID and ClassType name the sampler node.
	NodeID    string `json:"node_id"`
	ClassType string `json:"class_type"`
	// Steps is the number of steps the sampler runs: for KSamplerAdvanced
	// the part of the schedule between start_at_step and end_at_step.
	Steps int `json:"steps"`
	// Width and Height are the image size in pixels.
	Width  int `json:"width"`
	Height int `json:"height"`
	// BatchSize is the number of images sampled at once.
	BatchSize int `json:"batch_size"`
	// Denoise is the fraction of the schedule sampled (1 for txt2img).
	Denoise float64 `json:"denoise"`
	// Model is the ID of the checkpoint or diffusion model feeding the
	// sampler, empty when it cannot be traced to a loader.
	Model string `json:"model,omitempty"`
	// Family is the model's family, FamilySD15 when Model is empty.
	Family string `json:"family"`
}

// Default sampling parameters, used where the graph does not say.
const (
	DefaultSteps     = 20
	DefaultWidth     = 512
	DefaultHeight    = 512
	DefaultBatchSize = 1
)

var samplerClasses = map[string]bool{
	"KSampler": true, "KSamplerAdvanced": true, "SamplerCustom": true, "SamplerCustomAdvanced": true,
}

// latentSources are nodes that create an empty latent from width, height
// and batch_size.
var latentSources = map[string]bool{
	"EmptyLatentImage": true, "EmptySD3LatentImage": true, "EmptyHunyuanLatentVideo": true,
	"EmptyMochiLatentVideo": true, "EmptyLTXVLatentVideo": true, "EmptyCosmosLatentVideo": true,
	"EmptyHunyuanImageLatent": true, "EmptyChromaRadianceLatentImage": true,
}

// Params returns the sampling parameters of every sampler node, in
// topological order.
func (g *Graph) Params() []SamplerParams {
	return append([]SamplerParams(nil), g.params...)
}

func (g *Graph) extractParams() ([]SamplerParams, error) {
	var out []SamplerParams
	for _, n := range g.order {
		if !samplerClasses[n.ClassType] {
			continue
		}
		p := SamplerParams{NodeID: n.ID, ClassType: n.ClassType, Steps: DefaultSteps,
			Width: DefaultWidth, Height: DefaultHeight, BatchSize: DefaultBatchSize, Denoise: 1,
			Family: FamilySD15}
		var err error
		switch n.ClassType {
		case "KSampler":
			p.Steps = g.intInput(n, "steps", DefaultSteps, &err)
			p.Denoise = g.floatInput(n, "denoise", 1, &err)
		case "KSamplerAdvanced":
			total := g.intInput(n, "steps", DefaultSteps, &err)
			start := g.intInput(n, "start_at_step", 0, &err)
			end := g.intInput(n, "end_at_step", 10000, &err)
			p.Steps = max(min(end, total)-max(start, 0), 0)
		default: // SamplerCustom, SamplerCustomAdvanced: steps on the sigmas' scheduler
			if sched := g.follow(n, "sigmas", "steps"); sched != nil {
				p.Steps = g.intInput(sched, "steps", DefaultSteps, &err)
				p.Denoise = g.floatInput(sched, "denoise", 1, &err)
			}
		}
		if lat := g.follow(n, "latent_image", "width"); lat != nil {
			p.Width = g.intInput(lat, "width", DefaultWidth, &err)
			p.Height = g.intInput(lat, "height", DefaultHeight, &err)
			p.BatchSize = g.intInput(lat, "batch_size", DefaultBatchSize, &err)
		}
		if err != nil {
			return nil, newErr(ErrInvalidInput, n.ID, "", "%v", err)
		}
		if m := g.modelFor(n); m != nil {
			p.Model, p.Family = m.ID, m.Family
		}
		out = append(out, p)
	}
	return out, nil
}

// intInput reads an integer input through links to value nodes; absent or
// computed inputs give def. A malformed number sets *errp.
func (g *Graph) intInput(n *Node, name string, def int, errp *error) int {
	v, ok := g.literal(n, name)
	if !ok {
		return def
	}
	i, err := toInt(v)
	if err == nil && (i < -1<<31 || i > 1<<31-1) {
		err = fmt.Errorf("out of range")
	}
	if err != nil {
		if *errp == nil {
			*errp = fmt.Errorf("node %s input %s: %w", n.ID, name, err)
		}
		return def
	}
	return int(i)
}

func (g *Graph) floatInput(n *Node, name string, def float64, errp *error) float64 {
	v, ok := g.literal(n, name)
	if !ok {
		return def
	}
	f, err := toFloat(v)
	if err != nil {
		if *errp == nil {
			*errp = fmt.Errorf("node %s input %s: %w", n.ID, name, err)
		}
		return def
	}
	return f
}

// passThrough lists, per kind of value, the inputs through which nodes hand
// that value on unchanged (LatentUpscaleBy, SplitSigmas, ModelSamplingSD3,
// LoraLoader, BasicGuider, ...).
var passThrough = map[string][]string{
	"sigmas": {"sigmas"},
	"width":  {"samples", "latent", "latent_image", "samples1", "destination"},
	"model":  {"model", "guider", "model1"},
}

// follow walks from n's input upstream until it reaches a node that has the
// want input, passing through nodes that hand the value on. It returns nil
// when the chain ends elsewhere.
func (g *Graph) follow(n *Node, input, want string) *Node {
	kind := input
	if input == "latent_image" {
		kind = "width"
	}
	l, ok := n.Link(input)
	for hops := 0; ok && hops <= len(g.nodes); hops++ {
		src := g.nodes[l.NodeID]
		if src == nil {
			return nil
		}
		if _, has := src.Inputs[want]; has {
			return src
		}
		ok = false
		for _, name := range passThrough[kind] {
			if l, ok = src.Link(name); ok {
				break
			}
		}
	}
	return nil
}

// modelFor traces a sampler's model (through LoRAs, model patches and
// guiders) to a checkpoint or diffusion model loader.
func (g *Graph) modelFor(n *Node) *ModelRef {
	input := "model"
	if _, ok := n.Link("model"); !ok {
		input = "guider"
	}
	l, ok := n.Link(input)
	for hops := 0; ok && hops <= len(g.nodes); hops++ {
		src := g.nodes[l.NodeID]
		if src == nil {
			return nil
		}
		for _, li := range loaders[src.ClassType] {
			f := CanonicalFolder(li.folder)
			if f != "checkpoints" && f != "diffusion_models" {
				continue
			}
			for i := range g.models {
				if v, ok := g.literal(src, li.input); ok && g.models[i].Folder == f && g.models[i].Name == v {
					return &g.models[i]
				}
			}
		}
		ok = false
		for _, name := range passThrough["model"] {
			if l, ok = src.Link(name); ok {
				break
			}
		}
	}
	return nil
}
