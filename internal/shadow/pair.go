package shadow

import (
	"time"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/policy"
)

// Pair is a shadow of two candidates, an eviction experiment's baseline
// and candidate arms, whose total load times the experiment compares
// window by window (experiment.Replay): both replay the same accesses, so
// their difference is the two policies' alone.
type Pair struct {
	*Shadow
}

// Names of the pair's two hierarchies: the arms may run the same version
// (an A/A test), and a shadow keeps one hierarchy per name.
const (
	pairBaseline  = "baseline"
	pairCandidate = "candidate"
)

// NewPair builds the pair over the experiment's arms at topo's capacities.
func NewPair(baseline, candidate *policy.Arm, topo Topology, src Sources, clk clock.Clock) (*Pair, error) {
	s, err := New([]Candidate{FromArm(pairBaseline, baseline), FromArm(pairCandidate, candidate)}, topo, src, clk)
	if err != nil {
		return nil, err
	}
	return &Pair{s}, nil
}

// LoadTimes are the load times each hierarchy has charged so far, over
// every tier. A faulted hierarchy stops being fed, so its total stops.
func (p *Pair) LoadTimes() (baseline, candidate time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range p.cands {
		var t time.Duration
		for _, g := range h.vram {
			t += g.loadTime
		}
		for _, g := range []*ghost{h.ram, h.disk} {
			if g != nil {
				t += g.loadTime
			}
		}
		switch h.name {
		case pairBaseline:
			baseline = t
		case pairCandidate:
			candidate = t
		}
	}
	return baseline, candidate
}
