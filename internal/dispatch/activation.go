package dispatch

import (
	"math"
	"sync"
)

// activations refines the cost model's activation estimates
// (cost.ActivationBytes, per megapixel and family) by what workers measure:
// a run's RunResult.activation_bytes (protocol 1.2) is the most device
// memory it held beyond its weights. Each family keeps a factor, measured
// over estimated, smoothed over runs; plans made afterwards reserve the
// estimate times the factor. The cost table's figures come from published
// runs on other cards and other attention kernels: the ledger should hold
// what this node's workers really take, so that a job that would OOM is
// admitted only where it fits.
type activations struct {
	mu     sync.Mutex
	factor map[string]float64
	runs   map[string]int
}

// Bounds on the factor: a worker that reports nonsense moves the estimate
// at most this far.
const (
	minActivationFactor = 0.25
	maxActivationFactor = 4
	// activationAlpha weighs the newest run against the history.
	activationAlpha = 0.3
)

// observe records a run of family whose plan reserved estimated bytes of
// activations (already scaled by the factor) and that measured measured.
func (a *activations) observe(family string, estimated, measured uint64) {
	if estimated == 0 || measured == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.factor == nil {
		a.factor, a.runs = map[string]float64{}, map[string]int{}
	}
	f, ok := a.factor[family]
	if !ok {
		f = 1
	}
	target := f * float64(measured) / float64(estimated)
	if a.runs[family] == 0 {
		f = target // the first measurement beats the table
	} else {
		f = (1-activationAlpha)*f + activationAlpha*target
	}
	a.factor[family] = math.Min(math.Max(f, minActivationFactor), maxActivationFactor)
	a.runs[family]++
}

// scale is b refined by family's factor (b itself until a run of the
// family has been measured).
func (a *activations) scale(family string, b uint64) uint64 {
	a.mu.Lock()
	f, ok := a.factor[family]
	a.mu.Unlock()
	if !ok || b == 0 {
		return b
	}
	return uint64(math.Round(float64(b) * f))
}

// refine scales each stage's activations by its family's factor.
func (a *activations) refine(p Plan) Plan {
	a.mu.Lock()
	n := len(a.factor)
	a.mu.Unlock()
	if n == 0 {
		return p
	}
	out := Plan{Stages: make([]PlanStage, len(p.Stages))}
	for k, s := range p.Stages {
		s.ActivationBytes = a.scale(s.Family, s.ActivationBytes)
		out.Stages[k] = s
	}
	return out
}

// family is the family the plan's activations were estimated for: that of
// its stage with the largest activations.
func (p Plan) family() string {
	var fam string
	var most uint64
	for _, s := range p.Stages {
		if s.ActivationBytes > most || fam == "" {
			fam, most = s.Family, s.ActivationBytes
		}
	}
	return fam
}
