package job

// EventType names what happened to a
type EventType string

// Event types, in the order a job sees them. A job whose worker dies sees
// EventRequeued and then EventStarted again; a preempted job,
// EventPreempted and then EventStarted again.
const (
	EventStarted   EventType = "started"   // a worker took the job; models are being made resident
	EventRunning   EventType = "running"   // models resident; the worker runs the graph
	EventProgress  EventType = "progress"  // a progress frame from the worker
	EventRequeued  EventType = "requeued"  // the attempt was lost (worker died); back in the queue
	EventPreempted EventType = "preempted" // stopped for a job of a higher class (Error names it); back in the queue at its place
	EventFinished  EventType = "finished"  // done, failed or cancelled; see State
)

// Event is one thing that happened to a job, for live observers (the
// ComfyUI WebSocket, the dashboard, the experiments, the shadow caches,
// the tuner's recorder). The dispatcher publishes them
// (dispatch.Dispatcher.Subscribe); the type lives here, with the job, so
// that an observer need not import the dispatcher. Events are best-effort: a subscriber that
// does not keep up loses events rather than slowing the dispatcher, and the
// store stays the source of truth.
type Event struct {
	Type     EventType
	JobID    string
	ClientID string
	Worker   string
	Attempt  int
	// Node, Value and Max carry a progress frame. Max == 0 marks the start
	// of a node's execution rather than a step.
	Node  string
	Value int
	Max   int
	// Preview and PreviewFormat carry the worker's preview image of a
	// progress frame, encoded as PreviewFormat (wire.PreviewPNG or
	// wire.PreviewJPEG). Preview is nil when the frame had none, or one
	// over wire.MaxPreviewBytes or of an unknown format (see withPreview).
	// Subscribers must not modify it: every subscriber gets the same bytes.
	Preview       []byte
	PreviewFormat string
	// State, Outputs and Error are set on EventFinished.
	State   State
	Outputs []Output
	Error   string
	// Job (EventStarted, EventFinished) is the job as the store committed
	// its start or its end, with its workflow and, while the process that
	// parsed it lives, its Facts: subscribers need not read it back. Nil in
	// other events. Subscribers must not modify it.
	Job *Job
}
