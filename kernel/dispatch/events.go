package dispatch

import (
	"sync"

	"github.com/kiln-gpu/kiln/kernel/job"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// EventType names what happened to a job.
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
// ComfyUI WebSocket, the CLI). Events are best-effort: a subscriber that
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
	State   job.State
	Outputs []job.Output
	Error   string
	// Job (EventStarted, EventFinished) is the job as the store committed
	// its start or its end, with its workflow and, while the process that
	// parsed it lives, its Facts: subscribers need not read it back. Nil in
	// other events. Subscribers must not modify it.
	Job *job.Job
}

// bus fans events out to subscribers.
type bus struct {
	mu   sync.Mutex
	subs map[int]chan Event
	next int
}

// Subscribe returns a channel of every job event from now on and a function
// that ends the subscription. buf is the channel's capacity; events that do
// not fit are dropped for that subscriber.
func (d *Dispatcher) Subscribe(buf int) (<-chan Event, func()) {
	b := &d.events
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs == nil {
		b.subs = map[int]chan Event{}
	}
	id := b.next
	b.next++
	ch := make(chan Event, buf)
	b.subs[id] = ch
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if c, ok := b.subs[id]; ok {
			delete(b.subs, id)
			close(c)
		}
	}
}

func (d *Dispatcher) publish(e Event) {
	b := &d.events
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ch := range b.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// withPreview adds p's preview to e, if it has one the kernel forwards: of a
// known format and at most wire.MaxPreviewBytes. Others are dropped here, so
// that an oversized preview costs no subscriber anything; the progress
// itself is kept.
func withPreview(e Event, p wire.Progress) Event {
	if len(p.Preview) == 0 || len(p.Preview) > wire.MaxPreviewBytes {
		return e
	}
	switch p.PreviewFormat {
	case wire.PreviewPNG, wire.PreviewJPEG:
		e.Preview, e.PreviewFormat = p.Preview, p.PreviewFormat
	}
	return e
}
