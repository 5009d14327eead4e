package predict

import (
	"sync"
	"time"
)

// DemandHalfLife is how fast Demand's counts fade: the Predictor's default
// frequency half-life, so that the eviction input (ABI 1.3's recent
// demand) and the predictor agree on what "recent" means.
const DemandHalfLife = 30 * time.Minute

// Demand is the kernel's decayed count of recent jobs asking for each
// model: every job adds 1 to each of its models, and a count halves every
// DemandHalfLife. It is what eviction policies see as an entry's recent
// demand (ABI 1.3): unlike an entry's hits, it outlives the entry's
// eviction and counts jobs served from every tier, VRAM hits included. It
// is kept whether or not the predictor is on; the node feeds it live, the
// simulator at virtual time, through the same code. Safe for concurrent
// use.
type Demand struct {
	mu     sync.Mutex
	counts map[string]*decayed
	// swept is when counts were last swept of faded models.
	swept time.Time
}

// NewDemand returns an empty Demand.
func NewDemand() *Demand { return &Demand{counts: map[string]*decayed{}} }

// demandFloor is the count under which a model is forgotten (about 10
// half-lives after its last job): its entries then read 0, which an
// eviction policy cannot tell from 0.001, and the map stays as small as
// the set of models asked for in the last few hours.
const demandFloor = 1e-3

// Observe counts a job that asks for models, at time at.
func (d *Demand) Observe(at time.Time, models []string) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range models {
		c := d.counts[m]
		if c == nil {
			c = &decayed{}
			d.counts[m] = c
		}
		c.add(at, DemandHalfLife, 1)
	}
	if at.Sub(d.swept) > DemandHalfLife {
		d.swept = at
		for m, c := range d.counts {
			if c.value(at, DemandHalfLife) < demandFloor {
				delete(d.counts, m)
			}
		}
	}
}

// Of is model's decayed count as of now (0 for a model no job asked for
// recently, and for a nil Demand).
func (d *Demand) Of(now time.Time, model string) float64 {
	if d == nil {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.counts[model]
	if c == nil {
		return 0
	}
	return c.value(now, DemandHalfLife)
}
