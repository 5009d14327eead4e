package api

import (
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/kiln-gpu/kiln/internal/httpjson"
)

// TraceSource is the node's recent traffic (internal/tune.Recorder):
// RecentTrace says how many of the most recent limit arrivals (all when
// limit is 0) it holds and returns a function that writes them as a trace
// CSV (internal/sim's format). The API declares what it needs of the
// tuner here, and the node hands it the tuner's recorder, so that the API
// does not import the tuner and the simulator: it sits beside them, not
// above them (docs/ARCHITECTURE.md, "Layers").
type TraceSource interface {
	RecentTrace(limit int) (arrivals int, write func(io.Writer) error)
}

// registerTuning serves what kiln learns from its own traffic:
//
//	GET /v1/experiments/shadow          the shadow caches' report (internal/shadow), indented JSON;
//	                                    read-only and what /metrics exports, so no token
//	GET /v1/experiments/trace[?limit=N] the most recent N arrivals (all by default) as a trace
//	                                    CSV with times relative to the first (internal/tune.Recorder);
//	                                    it reveals the node's traffic, so it takes the admin token
//	GET /v1/tune                        the background tuner's status (internal/tune.Auto)
//
// A nil part leaves its route out.
func (s *Server) registerTuning() {
	if sh := s.deps.Shadow; sh != nil {
		s.handle("GET /v1/experiments/shadow", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			httpjson.WriteIndent(w, http.StatusOK, sh.Report())
		}))
	}
	if rec := s.deps.Trace; rec != nil {
		s.handle("GET /v1/experiments/trace", s.admin(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			limit := 0
			if v := r.URL.Query().Get("limit"); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 {
					httpjson.Error(w, http.StatusBadRequest, "invalid_limit", fmt.Sprintf("limit must be a positive integer, got %q", v))
					return
				}
				limit = n
			}
			n, write := rec.RecentTrace(limit)
			w.Header().Set("Content-Type", "text/csv; charset=utf-8")
			w.Header().Set("X-Kiln-Arrivals", strconv.Itoa(n))
			_ = write(w)
		})))
	}
	if status := s.deps.TuneStatus; status != nil {
		s.handle("GET /v1/tune", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			httpjson.Write(w, http.StatusOK, status())
		}))
	}
}
