// Package httpjson writes the JSON answers every kiln HTTP handler gives:
// a value, or an error body {"error":{"type":..., "message":...}} that the
// CLI and the API's clients read the same way from every endpoint.
package httpjson

import (
	"encoding/json"
	"net/http"
	"strings"
)

// Write answers with status and v as JSON.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Error answers with status and an error of type typ (a stable,
// machine-readable name) and a message for people.
func Error(w http.ResponseWriter, status int, typ, msg string) {
	Write(w, status, map[string]any{"error": map[string]string{"type": typ, "message": strings.TrimSpace(msg)}})
}
