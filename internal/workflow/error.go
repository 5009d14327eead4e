package workflow

import "fmt"

// Error types, as ComfyUI names them where it has a name for the case.
const (
	ErrInvalidPrompt    = "invalid_prompt"     // not a graph: bad JSON, empty, malformed node
	ErrNoOutputs        = "prompt_no_outputs"  // no output node (SaveImage, PreviewImage, ...)
	ErrInvalidLink      = "invalid_link"       // malformed link or link to a missing node
	ErrCycle            = "cycle"              // the graph is not acyclic
	ErrLimitExceeded    = "limit_exceeded"     // beyond the configured Limits
	ErrInvalidInput     = "invalid_input"      // an input kiln interprets has a bad value
	ErrMissingModelName = "missing_model_name" // a loader names no model
	ErrInvalidModelName = "invalid_model_name" // a model name that could escape the store
)

// Error is why a workflow was refused. Its fields follow the shape of
// ComfyUI's /prompt error answers so that the API can pass them on as is.
type Error struct {
	// Type is one of the Err* constants.
	Type string `json:"type"`
	// Message is a short lowercase sentence for people.
	Message string `json:"message"`
	// NodeID is the node at fault, empty for graph-wide errors.
	NodeID string `json:"node_id,omitempty"`
	// Details adds specifics, such as the input name or offending value.
	Details string `json:"details,omitempty"`
}

// Error implements the error interface.
func (e *Error) Error() string {
	s := "workflow: " + e.Type + ": " + e.Message
	if e.NodeID != "" {
		s += fmt.Sprintf(" (node %q)", e.NodeID)
	}
	if e.Details != "" {
		s += ": " + e.Details
	}
	return s
}

func newErr(typ, node, details, format string, args ...any) *Error {
	return &Error{Type: typ, NodeID: node, Details: details, Message: fmt.Sprintf(format, args...)}
}
