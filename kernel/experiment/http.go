package experiment

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/kiln-gpu/kiln/kernel/httpjson"
)

// maxSpecBytes bounds a POST /v1/experiments body.
const maxSpecBytes = 64 << 10

// Summary is one experiment in a list.
type Summary struct {
	ID        string    `json:"id"`
	Type      Type      `json:"type"`
	Kind      string    `json:"kind"`
	State     State     `json:"state"`
	Verdict   string    `json:"verdict,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Baseline  string    `json:"baseline"`
	Candidate string    `json:"candidate"`
	Step      int       `json:"step"`
	Share     int       `json:"share_pct"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	Decisions int       `json:"decisions"`
}

// Summarize shortens a record for lists.
func (r Record) Summarize() Summary {
	return Summary{ID: r.ID, Type: r.Spec.Type, Kind: r.Spec.Kind, State: r.State, Verdict: r.Verdict, Reason: r.Reason,
		Baseline: r.Baseline, Candidate: r.Candidate, Step: r.Step, Share: sharePct(r.Spec, r.Step),
		StartedAt: r.StartedAt, EndedAt: r.EndedAt, Decisions: len(r.Decisions)}
}

// Handler serves /v1/experiments:
//
//	GET  /v1/experiments              every experiment, newest first (summaries)
//	POST /v1/experiments              body: a Spec → 201 and the record
//	GET  /v1/experiments/{id}         the record: spec, assignment, decisions, report
//	POST /v1/experiments/{id}/abort   {"reason"} → the record
//
// The caller guards the POST routes with the admin token (kernel/api does).
// Errors are {"error": {"type", "message"}}.
func (c *Controller) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/experiments", func(w http.ResponseWriter, r *http.Request) {
		out := []Summary{}
		for _, rec := range c.List() {
			out = append(out, rec.Summarize())
		}
		httpjson.Write(w, http.StatusOK, map[string]any{"experiments": out})
	})
	mux.HandleFunc("GET /v1/experiments/{id}", func(w http.ResponseWriter, r *http.Request) {
		rec, err := c.Get(r.PathValue("id"))
		if err != nil {
			writeErr(w, err)
			return
		}
		httpjson.Write(w, http.StatusOK, rec)
	})
	mux.HandleFunc("POST /v1/experiments", func(w http.ResponseWriter, r *http.Request) {
		var spec Spec
		if err := decodeStrict(w, r, &spec); err != nil {
			httpjson.Error(w, http.StatusBadRequest, "invalid_experiment", err.Error())
			return
		}
		rec, err := c.Start(r.Context(), spec)
		if err != nil {
			writeErr(w, err)
			return
		}
		httpjson.Write(w, http.StatusCreated, rec)
	})
	mux.HandleFunc("POST /v1/experiments/{id}/abort", func(w http.ResponseWriter, r *http.Request) {
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
			writeErr(w, err)
			return
		}
		httpjson.Write(w, http.StatusOK, rec)
	})
	return mux
}

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

func writeErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrInvalid):
		httpjson.Error(w, http.StatusBadRequest, "invalid_experiment", err.Error())
	case errors.Is(err, ErrNotFound):
		httpjson.Error(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, ErrBusy):
		httpjson.Error(w, http.StatusConflict, "experiment_running", err.Error())
	case errors.Is(err, ErrNotRunning):
		httpjson.Error(w, http.StatusConflict, "not_running", err.Error())
	default:
		httpjson.Error(w, http.StatusInternalServerError, "internal_error", err.Error())
	}
}
