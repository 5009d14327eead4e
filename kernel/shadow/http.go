package shadow

import (
	"encoding/json"
	"net/http"

	"github.com/kiln-gpu/kiln/kernel/httpjson"
)

// Handler serves GET /v1/experiments/shadow: the Report as JSON. It is
// read-only and carries what /metrics already exports, so it needs no
// admin token.
func (s *Shadow) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			httpjson.Error(w, http.StatusMethodNotAllowed, "method_not_allowed", "GET /v1/experiments/shadow")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s.Report())
	})
}
