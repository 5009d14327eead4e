package job

import (
	"cmp"
	"encoding/json"
	"time"

	"github.com/kiln-gpu/kiln/internal/decision"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// Class is a job's priority class. It is the decision contract's type
// (decision.Class), aliased so that a job's class is what a policy sees
// without a conversion, and so that the contract (internal/decision)
// stays a leaf that imports nothing of the kernel, the queue included.
type Class = decision.Class

// The priority classes. Interactive jobs go ahead of batch jobs.
const (
	Interactive = decision.Interactive
	Batch       = decision.Batch
)

// State is where a job is in its life.
type State string

// Job states: queued → running → done | failed | cancelled. A running job whose
// worker dies goes back to queued with its attempt count kept.
const (
	Queued    State = "queued"
	Running   State = "running"
	Done      State = "done"
	Failed    State = "failed"
	Cancelled State = "cancelled"
)

// Output is one file a job produced.
type Output struct {
	Node      string `json:"node"`
	Filename  string `json:"filename"`
	Subfolder string `json:"subfolder"`
	Type      string `json:"type"`
}

// Job is a workflow plus its metadata and life history. It is stored as JSON
// in the queue database.
type Job struct {
	ID    string `json:"id"`
	Seq   uint64 `json:"seq"` // submission order, assigned by the store
	Class Class  `json:"class"`
	State State  `json:"state"`
	// Order, when set, places the job within its class's queue: jobs run
	// by Rank (Order, else Seq), lower first, equal ranks by Seq. Nil, the
	// default and the value of every job stored before the field existed,
	// means submission order. The ComfyUI API sets it from a prompt's
	// `number`. It must be finite.
	Order *float64 `json:"order,omitempty"`
	// Front asks Submit to put the job ahead of its class: when Order is
	// nil, Submit sets it to -Seq, which is below the rank of every job
	// queued in submission order, and below earlier front jobs, so the
	// newest front job runs first (ComfyUI's `front`). Jobs with an explicit
	// Order below -Seq still go first.
	Front bool `json:"front,omitempty"`
	// Workflow is the ComfyUI API-format graph, kept verbatim as the client
	// sent it (the store writes these bytes as they are, which also spares
	// the submit path a re-encoding of the graph).
	Workflow json.RawMessage `json:"workflow"`
	// Facts are what the kernel derived from Workflow when the job was
	// submitted: the graph is parsed once, at submit (the API hands its
	// parse to Submit; Submit parses a workflow handed over without one).
	// They live in memory only: the store hands them back with every copy
	// of a queued or running job it returns (Snapshot, Window, Get and the
	// transitions), drops them when the job ends, and Open derives them
	// again, once, for each job it recovers. Nil when the workflow does
	// not parse: readers then judge the job by its Models. A caller that
	// sets Facts vouches that Workflow is the one JSON value they were
	// derived from: Submit writes it into the record without checking it
	// again (it checks, and parses, a workflow handed over without Facts).
	Facts *workflow.Facts `json:"-"`
	// Models are the catalog ids the workflow needs ("checkpoints/x.safetensors").
	Models     []string `json:"models"`
	DeadlineMS int64    `json:"deadline_ms,omitempty"`
	Tenant     string   `json:"tenant,omitempty"`
	ClientID   string   `json:"client_id,omitempty"`
	// Attempts counts the job's starts. Preemptions of them ended because
	// the scheduler gave the worker to a job of a higher class; those do
	// not count toward the queue's MaxAttempts, which bounds lost attempts.
	Attempts    int       `json:"attempts"`
	Preemptions int       `json:"preemptions,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	Worker      string    `json:"worker,omitempty"`
	Outputs     []Output  `json:"outputs,omitempty"`
	Error       string    `json:"error,omitempty"`
	// OutputNodes are the ids of the graph's output nodes (Facts.Outputs),
	// written into the record when the job ends and its Facts are
	// dropped, so that the ComfyUI history lists them without decoding
	// the workflow. Nil while the job is queued or running (its Facts
	// have them) and for a job whose workflow does not parse.
	OutputNodes []string `json:"output_nodes,omitempty"`
}

// Rank is the job's place within its class's queue: Order when set, else
// Seq. Queued jobs run in increasing Rank, equal ranks in increasing Seq.
func (j *Job) Rank() float64 {
	if j.Order != nil {
		return *j.Order
	}
	return float64(j.Seq)
}

// CompareQueued orders two queued jobs of one class the way they run: by
// Rank, then Seq. It returns a negative number when a runs before b, as
// cmp.Compare does, and is what the store's queue index sorts by.
func CompareQueued(a, b *Job) int {
	if c := cmp.Compare(a.Rank(), b.Rank()); c != 0 {
		return c
	}
	return cmp.Compare(a.Seq, b.Seq)
}
