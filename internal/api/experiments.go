package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/httpjson"
)

// maxSpecBytes bounds a POST /v1/experiments body.
const maxSpecBytes = 64 << 10

// registerExperiments serves /v1/experiments from the experiment
// controller (internal/experiment):
//
//	GET  /v1/experiments              every experiment, newest first (summaries)
//	POST /v1/experiments              body: a Spec → 201 and the record
//	GET  /v1/experiments/{id}         the record: spec, assignment, decisions, report
//	POST /v1/experiments/{id}/abort   {"reason"} → the record
//	GET  /v1/experiments/watches      every watch of a change by hand, newest first
//
// The POST routes take the admin token. Errors are
// {"error": {"type", "message"}}. /v1/experiments/shadow and /trace are
// more specific patterns (shadow.go).
func (s *Server) registerExperiments() {
	c := s.deps.Experiments
	if c == nil {
		return
	}
	s.handle("GET /v1/experiments", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := []experiment.Summary{}
		for _, rec := range c.List() {
			out = append(out, rec.Summarize())
		}
		body := map[string]any{"experiments": out}
		if f, ok := c.FollowingNow(); ok {
			// A routing experiment of another node splits this node's
			// jobs too (a cluster): say so where the operator looks.
			body["following"] = f
		}
		httpjson.Write(w, http.StatusOK, body)
	}))
	s.handle("GET /v1/experiments/{id}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec, err := c.Get(r.PathValue("id"))
		if err != nil {
			writeExperimentError(w, err)
			return
		}
		httpjson.Write(w, http.StatusOK, rec)
	}))
	if wt := s.deps.Watches; wt != nil {
		s.handle("GET /v1/experiments/watches", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			out := wt.Watches()
			if out == nil {
				out = []experiment.Watch{}
			}
			httpjson.Write(w, http.StatusOK, map[string]any{"watches": out, "config": wt.Config()})
		}))
	}
	s.handle("POST /v1/experiments", s.admin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var spec experiment.Spec
		if err := decodeStrict(w, r, &spec); err != nil {
			httpjson.Error(w, http.StatusBadRequest, "invalid_experiment", err.Error())
			return
		}
		if err := spec.CheckLive(s.deps.Cluster != nil); err != nil {
			writeExperimentError(w, err)
			return
		}
		rec, err := c.Start(r.Context(), spec)
		if err != nil {
			writeExperimentError(w, err)
			return
		}
		httpjson.Write(w, http.StatusCreated, rec)
	})))
	s.handle("POST /v1/experiments/{id}/abort", s.admin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Reason string `json:"reason"`
		}
		if r.ContentLength != 0 {
			if err := decodeStrict(w, r, &body); err != nil {
				httpjson.Error(w, http.StatusBadRequest, "invalid_request", err.Error())
				return
			}
		}
		reason := "aborted by an operator"
		if body.Reason != "" {
			reason += ": " + body.Reason
		}
		rec, err := c.Abort(r.PathValue("id"), reason)
		if err != nil {
			writeExperimentError(w, err)
			return
		}
		httpjson.Write(w, http.StatusOK, rec)
	})))
}

// decodeStrict decodes one JSON object of at most maxSpecBytes with no
// field v does not have.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxSpecBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty body: want a JSON object")
		}
		return fmt.Errorf("body: %w", err)
	}
	if dec.More() {
		return errors.New("body: want one JSON object")
	}
	return nil
}

func writeExperimentError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, experiment.ErrInvalid):
		httpjson.Error(w, http.StatusBadRequest, "invalid_experiment", err.Error())
	case errors.Is(err, experiment.ErrNotFound):
		httpjson.Error(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, experiment.ErrBusy):
		httpjson.Error(w, http.StatusConflict, "experiment_running", err.Error())
	case errors.Is(err, experiment.ErrNotRunning):
		httpjson.Error(w, http.StatusConflict, "not_running", err.Error())
	default:
		httpjson.Error(w, http.StatusInternalServerError, "internal_error", err.Error())
	}
}
