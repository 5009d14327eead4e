package job

import (
	"encoding/json"
	"time"
)

// Class is a job's priority class.
type Class string

// The priority classes. Interactive jobs go ahead of batch jobs.
const (
	Interactive Class = "interactive"
	Batch       Class = "batch"
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
	// Workflow is the ComfyUI API-format graph, kept verbatim as the client
	// sent it (the store writes these bytes as they are, which also spares
	// the submit path a re-encoding of the graph).
	Workflow json.RawMessage `json:"workflow"`
	// Models are the catalog ids the workflow needs ("checkpoints/x.safetensors").
	Models     []string  `json:"models"`
	DeadlineMS int64     `json:"deadline_ms,omitempty"`
	Tenant     string    `json:"tenant,omitempty"`
	ClientID   string    `json:"client_id,omitempty"`
	Attempts   int       `json:"attempts"`
	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Worker     string    `json:"worker,omitempty"`
	Outputs    []Output  `json:"outputs,omitempty"`
	Error      string    `json:"error,omitempty"`
}
