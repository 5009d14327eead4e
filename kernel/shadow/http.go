package shadow

import (
	"encoding/json"
	"net/http"
)

// Handler serves GET /v1/experiments/shadow: the Report as JSON. It is
// read-only and carries what /metrics already exports, so it needs no
// admin token.
func (s *Shadow) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			w.WriteHeader(http.StatusMethodNotAllowed)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{
				"type": "method_not_allowed", "message": "GET /v1/experiments/shadow"}})
			return
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s.Report())
	})
}
