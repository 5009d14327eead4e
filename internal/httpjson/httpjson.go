// Package httpjson writes the JSON answers of kiln's HTTP API (internal/api
// and its comfy and dashboard packages, its only users): a value, or an
// error body that the CLI and the API's clients read the same way from
// every endpoint, {"error": {"type": ..., "message": ...}}.
//
// The error body comes in two key orders, each kept byte for byte for the
// clients of the routes that have always sent it: WriteError's (type,
// message) for the job, model and ComfyUI file routes, and Error's
// (message, type) for the policy, experiment and trace routes. A JSON
// client sees the same object from both.
//
//	httpjson.Write(w, http.StatusOK, map[string]any{"jobs": jobs})
//	httpjson.WriteError(w, http.StatusNotFound, "job_not_found", err.Error())
package httpjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Write answers with status and v as JSON.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteIndent answers with status and v as JSON indented by two spaces,
// for a report meant to be read as it comes (the shadow caches').
func WriteIndent(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// errorBody is {"type", "message"} in that order.
type errorBody struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// WriteError answers with status and {"error": {"type": typ, "message":
// msg}}: typ a stable, machine-readable name, msg for people.
func WriteError(w http.ResponseWriter, status int, typ, msg string) {
	Write(w, status, map[string]any{"error": errorBody{Type: typ, Message: msg}})
}

// Error answers with status and {"error": {"message": msg, "type": typ}},
// msg trimmed of surrounding space.
func Error(w http.ResponseWriter, status int, typ, msg string) {
	Write(w, status, map[string]any{"error": map[string]string{"type": typ, "message": strings.TrimSpace(msg)}})
}

// BodyError is why ReadBody could not read a request body: the status,
// error type and message the handler answers with.
type BodyError struct {
	Status  int
	Type    string
	Message string
}

// ReadBody reads r's body, at most limit bytes (api.max_body_bytes): the
// one body reader of kiln's API and its ComfyUI surface, so both refuse an
// oversized or broken body alike (413 body_too_large, 400 bad_body). The
// buffer is sized from Content-Length when it is plausible.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *BodyError) {
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	var buf bytes.Buffer
	if r.ContentLength > 0 && r.ContentLength < 64<<20 {
		buf.Grow(int(r.ContentLength))
	}
	if _, err := buf.ReadFrom(r.Body); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &BodyError{Status: http.StatusRequestEntityTooLarge, Type: "body_too_large",
				Message: fmt.Sprintf("request body exceeds api.max_body_bytes (%d bytes)", limit)}
		}
		return nil, &BodyError{Status: http.StatusBadRequest, Type: "bad_body", Message: "could not read the request body: " + err.Error()}
	}
	return buf.Bytes(), nil
}
