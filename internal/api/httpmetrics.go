package api

import (
	"net/http"
	"time"
)

// observe counts every request in kiln_http_requests_total and
// kiln_http_request_duration_seconds by the route that served it: the
// mux's pattern ("GET /v1/jobs/{id}"), never the path, so that the series
// stay bounded whatever clients ask for; "unmatched" for a 404 or 405
// that no route answered.
func (s *Server) observe(next http.Handler) http.Handler {
	if s.deps.Metrics == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, route := s.mux.Handler(r)
		if route == "" {
			route = "unmatched"
		}
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		seconds := time.Since(start).Seconds()
		if streams[route] {
			// A stream lasts as long as its client stays: its "duration"
			// would swamp the answer times the histogram is for.
			seconds = -1
		}
		s.deps.Metrics.HTTPRequest(route, r.Method, sw.code(), seconds)
	})
}

// streams are the routes that hold a connection open (WebSocket, SSE).
var streams = map[string]bool{"GET /ws": true, "GET /api/ws": true, "GET /v1/dashboard/events": true}

// statusWriter remembers the status a handler sent. It passes Flush on
// (the ComfyUI routes flush) and unwraps for http.ResponseController and
// the WebSocket upgrade (Hijack).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// code is the status sent, 200 when the handler wrote nothing (net/http
// answers 200 then).
func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}
