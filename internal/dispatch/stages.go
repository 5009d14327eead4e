package dispatch

import (
	"slices"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// Plan is how a job's models take turns on a device: its stages in
// execution order, each with the models it needs resident together and
// the activations it allocates. The live dispatcher and the simulator both
// admit a job by its Peak and move it from stage to stage with Step, so
// that the simulator charges only what the live node does.
type Plan struct {
	Stages []PlanStage
}

// PlanStage is one stage of a Plan.
type PlanStage struct {
	// Models are the catalog ids the stage needs resident, with their
	// footprints (ModelBytes, index for index) as the ledger reserves them.
	Models     []string
	ModelBytes []uint64
	// WeightDTypes are the casts the graph's loaders ask for (UNETLoader's
	// weight_dtype), index for index; nil or "" for none.
	WeightDTypes []string
	// ConvertTo are the dtypes the tiers convert the models' files to
	// before their loads (tiers.convert; convert.go), index for index; nil
	// or "" for none. ModelBytes are then the converted footprints.
	ConvertTo []string
	// StreamedBytes are, index for index, the parts of the models' weights
	// kept in host memory and streamed to the device every step (weight
	// streaming, stream.go); ModelBytes are then the resident parts, what
	// the ledger reserves. nil or 0 for none.
	StreamedBytes []uint64
	// Steps are the sampler steps the stage runs: what a streamed model's
	// transfer is charged per.
	Steps int
	// Family is the family whose activations the stage is charged
	// (its largest sampler's, or the graph's largest for a decode): what
	// measured activations refine (activation.go).
	Family string
	// ActivationBytes is what the stage's computation allocates beyond the
	// weights (cost.ActivationBytes at the job's resolution and batch).
	ActivationBytes uint64
	// Nodes are the graph's node ids the stage runs (empty in the
	// simulator, which has no graph).
	Nodes []string
}

// Bytes is the stage's footprint: its models and its activations.
func (s PlanStage) Bytes() uint64 {
	b := s.ActivationBytes
	for _, m := range s.ModelBytes {
		b += m
	}
	return b
}

// Peak is the footprint of the plan's largest stage: what one device must
// hold for the job to run at all, beyond its workers' contexts.
func (p Plan) Peak() uint64 {
	var peak uint64
	for _, s := range p.Stages {
		peak = max(peak, s.Bytes())
	}
	return peak
}

// Whole is the footprint of running the job with every model resident
// from the start (a worker that does not speak stages): all models and
// the largest stage's activations.
func (p Plan) Whole() uint64 {
	seen := map[string]bool{}
	b := p.MaxActivation()
	for _, s := range p.Stages {
		for i, m := range s.Models {
			if !seen[m] {
				seen[m] = true
				b += s.ModelBytes[i]
			}
		}
	}
	return b
}

// MaxActivation is the largest stage's activations.
func (p Plan) MaxActivation() uint64 {
	var act uint64
	for _, s := range p.Stages {
		act = max(act, s.ActivationBytes)
	}
	return act
}

// dtype is the cast the plan loads model with, "" for none.
func (p Plan) dtype(model string) string {
	for _, s := range p.Stages {
		if i := slices.Index(s.Models, model); i >= 0 && i < len(s.WeightDTypes) {
			return s.WeightDTypes[i]
		}
	}
	return ""
}

// Models returns every model of the plan once, in stage order.
func (p Plan) Models() []string {
	var out []string
	for _, s := range p.Stages {
		for _, m := range s.Models {
			if !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
	}
	return out
}

// Bytes returns the footprint the plan gives model, 0 when it has none.
func (p Plan) Bytes(model string) uint64 {
	for _, s := range p.Stages {
		if i := slices.Index(s.Models, model); i >= 0 {
			return s.ModelBytes[i]
		}
	}
	return 0
}

// Step is what moving on to stage k (k ≥ 1) changes: release are the
// models that stages before k used and no stage from k on needs (they are
// unpinned, so that the eviction policy may unload them, to RAM, when the
// device needs the room), load are the models of stage k that stage k−1
// did not hold.
func (p Plan) Step(k int) (release, load []string) {
	if k <= 0 || k >= len(p.Stages) {
		return nil, nil
	}
	later := map[string]bool{}
	for _, s := range p.Stages[k:] {
		for _, m := range s.Models {
			later[m] = true
		}
	}
	for _, s := range p.Stages[:k] {
		for _, m := range s.Models {
			if !later[m] && !slices.Contains(release, m) {
				release = append(release, m)
			}
		}
	}
	held := map[string]bool{}
	for _, s := range p.Stages[:k] {
		for _, m := range s.Models {
			held[m] = true
		}
	}
	for _, m := range p.Stages[k].Models {
		if !held[m] {
			load = append(load, m)
		}
	}
	return release, load
}

// ModelLookup resolves a catalog id (catalog.Catalog.Lookup).
type ModelLookup func(id string) (catalog.Entry, error)

// FootprintOf is the VRAM a model holds once loaded the way ref asks: the
// loader plugin's estimate where it made one, else the cost model's,
// scaled by the cast the loader node asks for (UNETLoader's weight_dtype).
func FootprintOf(e catalog.Entry, weightDType string) uint64 {
	b := e.VRAMBytes
	if e.LoaderVRAMBytes > 0 {
		b = e.LoaderVRAMBytes
	}
	return uint64(max(cost.WeightBytes(b, e.DType, weightDType), 0))
}

// PlanGraph plans a parsed graph's stages: PlanFacts of its Facts.
func PlanGraph(g *workflow.Graph, lookup ModelLookup, c cost.Config) Plan {
	return PlanFacts(g.Facts(), lookup, c)
}

// PlanFacts plans the stages of a graph (workflow.Facts.Stages) with the
// footprints of its models in the catalog and the activations of its
// samplers and decodes. A model the catalog does not hold counts 0 bytes:
// the API refuses such jobs at submit, and a load fails them later.
func PlanFacts(f *workflow.Facts, lookup ModelLookup, c cost.Config) Plan {
	dtype := map[string]string{}
	for _, m := range f.Models {
		dtype[m.ID] = m.WeightDType
	}
	// A decode works on the images the samplers made: it is charged the
	// activations of the graph's largest sampler.
	var decodeAct uint64
	var decodeFamily string
	for _, sp := range f.Samplers {
		if a := uint64(c.ActivationBytes(sp.Family, sp.Width, sp.Height, sp.BatchSize)); a > decodeAct || decodeFamily == "" {
			decodeAct, decodeFamily = max(decodeAct, a), sp.Family
		}
	}
	var p Plan
	for _, st := range f.Stages {
		ps := PlanStage{Models: st.Models, ModelBytes: make([]uint64, len(st.Models)),
			WeightDTypes: make([]string, len(st.Models)), Nodes: st.Nodes}
		for i, m := range st.Models {
			ps.WeightDTypes[i] = dtype[m]
			if e, err := lookup(m); err == nil {
				ps.ModelBytes[i] = FootprintOf(e, dtype[m])
			}
		}
		for _, sp := range st.Samplers {
			ps.Steps += sp.Steps
			if a := uint64(c.ActivationBytes(sp.Family, sp.Width, sp.Height, sp.BatchSize)); a > ps.ActivationBytes || ps.Family == "" {
				ps.ActivationBytes, ps.Family = max(ps.ActivationBytes, a), sp.Family
			}
		}
		if st.Decodes && decodeAct > ps.ActivationBytes {
			ps.ActivationBytes, ps.Family = decodeAct, decodeFamily
		}
		p.Stages = append(p.Stages, ps)
	}
	return p
}

// PlanByRole plans a job known only by its models (a trace row in the
// simulator) in the order a graph of such models runs: text encoders,
// then the diffusion model with its patches, then the VAE and upscalers.
// activation is charged to every stage but the text encoders'. Empty
// stages are left out.
func PlanByRole(models, families []string, bytes []uint64, activation uint64) Plan {
	var stages [3]PlanStage
	for i, m := range models {
		k := 1
		switch families[i] {
		case workflow.FamilyTextEncoder:
			k = 0
		case workflow.FamilyVAE, workflow.FamilyUpscaler:
			k = 2
		}
		stages[k].Models = append(stages[k].Models, m)
		stages[k].ModelBytes = append(stages[k].ModelBytes, bytes[i])
	}
	var p Plan
	for k, s := range stages {
		if len(s.Models) == 0 {
			continue
		}
		if k > 0 {
			s.ActivationBytes = activation
		}
		p.Stages = append(p.Stages, s)
	}
	if len(p.Stages) == 0 {
		p.Stages = []PlanStage{{ActivationBytes: activation}}
	}
	return p
}

// Fit returns what a graph needs of one device (its plan's Peak) and the
// most room any device of the node gives one job: its usable memory less
// its workers' contexts. The API refuses a job whose need exceeds the room
// (does_not_fit) with the same figures the decision core fails it by.
func (d *Dispatcher) Fit(g *workflow.Graph) (need, room uint64) {
	return d.FitFacts(g.Facts())
}

// FitFacts is Fit for a graph's Facts, which the API derives once and
// then hands to the job (job.Job.Facts).
//
// room is 0, "cannot judge yet", while the node has a worker pool of
// which no worker has said hello: whether the workers stream weights is
// unknown then, and a plan without streaming would refuse a job (a Flux
// dev on 24 GiB) that the node runs a second later. Such a job is
// accepted and judged by the decision core once its workers are known,
// which fails it with the same figures if it can never fit.
func (d *Dispatcher) FitFacts(f *workflow.Facts) (need, room uint64) {
	k := d.fitNow()
	need = d.fitPlanFor(PlanFacts(f, d.opts.Catalog.Lookup, d.opts.Cost), k).Peak()
	if !k.known {
		return need, 0
	}
	return need, k.room
}
