package dispatch

import (
	"time"

	"github.com/kiln-gpu/kiln/internal/job"
)

// Estimate is the job's estimated run time once its models are in, by the
// cost model, as the scheduling policies see it (JobView.EstimatedCost):
// what a kiln cluster (internal/cluster) weighs a job and a node's backlog
// by when it routes jobs between nodes.
func (d *Dispatcher) Estimate(j *job.Job) time.Duration { return d.estimates.of(d, j) }
