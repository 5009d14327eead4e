package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// Error is the body of every error response: {"error": {"type", "message"}}.
type Error struct {
	Status  int            `json:"-"`
	Type    string         `json:"type"`
	Message string         `json:"message"`
	NodeID  string         `json:"node_id,omitempty"`
	Details map[string]any `json:"details,omitempty"`
}

func (e *Error) Error() string { return e.Type + ": " + e.Message }

// SubmitRequest is a decoded and validated POST /v1/jobs body.
type SubmitRequest struct {
	// Workflow is the graph as the client sent it; Graph is its parse,
	// and Facts what the job keeps of it (job.Job.Facts): the job's one
	// parse.
	Workflow json.RawMessage
	Graph    *workflow.Graph
	Facts    *workflow.Facts
	Models   []string
	// NodeClasses are the distinct class_type values of the graph.
	NodeClasses []string
	Class       job.Class
	DeadlineMS  int64
	Tenant      string
	ClientID    string
}

type submitBody struct {
	Workflow   rawObject `json:"workflow"`
	Class      *string   `json:"class"`
	DeadlineMS *int64    `json:"deadline_ms"`
	Tenant     string    `json:"tenant"`
	ClientID   string    `json:"client_id"`
}

// DecodeSubmit parses and validates a job submission. It never panics on
// any input; every refusal is an *Error with a 4xx status naming the problem.
func DecodeSubmit(body []byte, lim workflow.Limits) (*SubmitRequest, *Error) {
	bad := func(typ, format string, args ...any) *Error {
		return &Error{Status: http.StatusBadRequest, Type: typ, Message: fmt.Sprintf(format, args...)}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, bad("invalid_json", "the request body is empty; send {\"workflow\": {...}}")
	}
	if trimmed := bytes.TrimSpace(body); trimmed[0] != '{' {
		return nil, bad("invalid_json", "the request body must be a JSON object: {\"workflow\": {...}}")
	}
	if !utf8.Valid(body) {
		return nil, bad("invalid_json", "the request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var sb submitBody
	if err := dec.Decode(&sb); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr):
			return nil, bad("invalid_field", "field %q must be %s", typeErr.Field, typeErr.Type.String())
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return nil, bad("unknown_field", "%s (allowed: workflow, class, deadline_ms, tenant, client_id)", strings.TrimPrefix(err.Error(), "json: "))
		default:
			return nil, bad("invalid_json", "the request body is not valid JSON: %v", err)
		}
	}
	if dec.More() {
		return nil, bad("invalid_json", "the request body has data after the JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, bad("invalid_json", "the request body has data after the JSON object")
	}
	if sb.Workflow.m == nil {
		return nil, bad("missing_workflow", "field \"workflow\" is required: a ComfyUI API-format graph")
	}
	req := &SubmitRequest{Class: job.Interactive, Tenant: sb.Tenant, ClientID: sb.ClientID}
	if sb.Class != nil {
		switch c := job.Class(*sb.Class); c {
		case job.Interactive, job.Batch:
			req.Class = c
		default:
			return nil, bad("invalid_class", "class %q is not one of interactive, batch", *sb.Class)
		}
	}
	if sb.DeadlineMS != nil {
		if *sb.DeadlineMS < 0 {
			return nil, bad("invalid_deadline", "deadline_ms must be ≥ 0, got %d", *sb.DeadlineMS)
		}
		req.DeadlineMS = *sb.DeadlineMS
	}
	if len(sb.Tenant) > 256 || len(sb.ClientID) > 256 {
		return nil, bad("invalid_field", "tenant and client_id are limited to 256 bytes")
	}
	// The body was decoded once, above; the graph is built from that map
	// rather than parsed again (this path runs thousands of times a second).
	g, err := workflow.FromMap(sb.Workflow.m, lim)
	if err != nil {
		var werr *workflow.Error
		if errors.As(err, &werr) {
			return nil, &Error{Status: http.StatusBadRequest, Type: werr.Type, Message: werr.Message, NodeID: werr.NodeID}
		}
		return nil, bad("invalid_prompt", "%v", err)
	}
	req.Workflow = sb.Workflow.raw
	req.Graph, req.Facts = g, g.Facts()
	for _, m := range g.Models() {
		req.Models = append(req.Models, m.ID)
	}
	seen := map[string]bool{}
	for _, n := range g.Nodes() {
		if !seen[n.ClassType] {
			seen[n.ClassType] = true
			req.NodeClasses = append(req.NodeClasses, n.ClassType)
		}
	}
	return req, nil
}

// rawObject keeps both the bytes of a JSON value and its decoded form, so
// that the body is decoded once and the store can keep the client's bytes
// verbatim without encoding the graph again.
type rawObject struct {
	raw json.RawMessage
	m   map[string]any
}

func (r *rawObject) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	// b is one JSON value the body's decoder has already checked, so
	// compacting it needs no second scanner.
	r.raw = workflow.AppendCompact(make([]byte, 0, len(b)), b)
	// The submit's one decode of the graph, numbers as json.Number as
	// /prompt decodes them: the result cache's hashes (workflow.Facts)
	// must not depend on the route a graph came by.
	m, err := workflow.Decode(r.raw)
	r.m = m
	return err
}
