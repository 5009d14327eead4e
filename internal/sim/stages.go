package sim

import "github.com/kiln-gpu/kiln/internal/dispatch"

// planJob plans a trace job's stages as the live dispatcher would plan its
// graph: text encoders, then the diffusion model with its patches, then
// the VAE and upscalers (dispatch.PlanByRole), the stages that sample or
// decode charged the activations of the job's largest sampler at its
// resolution and batch (cost.ActivationBytes). With WholeJobAdmission the
// plan is one stage of every model: the node before stages.
func (s *simulator) planJob(j *simJob) dispatch.Plan {
	fams := make([]string, len(j.models))
	for i, id := range j.models {
		fams[i] = s.models[id].Family
	}
	var act uint64
	for _, sp := range j.req.Samplers {
		act = max(act, uint64(max(s.cfg.Cost.ActivationBytes(sp.Family, sp.Width, sp.Height, sp.BatchSize), 0)))
	}
	if len(j.req.Samplers) == 0 {
		// No workflow: the first model the cost table knows, at the
		// resolution its figures were measured at.
		for _, f := range fams {
			if fam, ok := s.cfg.Cost.Lookup(f); ok {
				act = uint64(max(s.cfg.Cost.ActivationBytes(f, fam.RefWidth, fam.RefHeight, 1), 0))
				break
			}
		}
	}
	if s.cfg.WholeJobAdmission {
		return dispatch.Plan{Stages: []dispatch.PlanStage{{Models: j.models, ModelBytes: j.sizes, ActivationBytes: act}}}
	}
	return dispatch.PlanByRole(j.models, fams, j.sizes, act)
}
