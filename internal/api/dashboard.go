package api

import (
	"net/http"

	"github.com/kiln-gpu/kiln/internal/api/dashboard"
	"github.com/kiln-gpu/kiln/internal/metrics"
)

// registerDashboard serves the built-in dashboard (internal/api/dashboard) at
// GET / and its read-only views under /v1/dashboard. ListenAndServe runs
// its sampler for as long as the server serves.
func (s *Server) registerDashboard() {
	s.dash = dashboard.New(dashboard.Sources{
		Store: s.deps.Store, Devices: s.deps.Devices, Pool: s.deps.Pool, Tiers: s.deps.Tiers,
		Catalog: s.deps.Catalog, Dispatcher: s.deps.Dispatcher, Clock: s.deps.Clock, Log: s.deps.Log,
		Version: metrics.Version,
	})
	s.dash.Register(recordingMux{s})
}

// recordingMux registers through handle, so that the server lists the routes a
// part (the dashboard) adds itself.
type recordingMux struct{ s *Server }

func (r recordingMux) Handle(pattern string, h http.Handler) { r.s.handle(pattern, h) }
