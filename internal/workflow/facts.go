package workflow

// Facts are what the kernel keeps of a job's graph once it has parsed it:
// everything the dispatcher (stage plan, VRAM, estimates), the ComfyUI
// WebSocket hub and the worker protocol ask of the graph after submit, so
// that none of them decodes the workflow or builds a graph again (issue
// 19, "parse once"). Facts are much smaller than the Graph they come from:
// a queue of thousands of jobs holds them in memory. They are immutable
// and safe for concurrent use; callers must not change them.
type Facts struct {
	// Models are Graph.Models.
	Models []ModelRef
	// Samplers are Graph.Params: the cost model's inputs.
	Samplers []SamplerParams
	// Stages are Graph.Stages.
	Stages []Stage
	// Outputs are the ids of the output nodes (IsOutputClass), in
	// topological order.
	Outputs []string
	// Classes maps every node id to its class_type.
	Classes map[string]string
	// OutputHashes are the output nodes' canonical hashes (OutputHashes),
	// the ComfyUI result cache's key.
	OutputHashes []NodeHash
}

// Facts derives the graph's Facts. It walks the graph (Stages does), so
// callers derive them once per job and keep them.
func (g *Graph) Facts() *Facts {
	// The graph's own slices, not copies: both are immutable, and the
	// Facts of every queued job stay in memory.
	f := &Facts{Models: g.models, Samplers: g.params, Stages: g.Stages(),
		Classes: make(map[string]string, len(g.order)), OutputHashes: OutputHashes(g.raw)}
	for _, n := range g.order {
		f.Classes[n.ID] = n.ClassType
		if IsOutputClass(n.ClassType) {
			f.Outputs = append(f.Outputs, n.ID)
		}
	}
	return f
}
