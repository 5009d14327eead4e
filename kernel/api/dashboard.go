package api

import (
	"github.com/kiln-gpu/kiln/kernel/dashboard"
	"github.com/kiln-gpu/kiln/kernel/metrics"
)

// registerDashboard serves the built-in dashboard (kernel/dashboard) at
// GET / and its read-only views under /v1/dashboard. ListenAndServe runs
// its sampler for as long as the server serves.
func (s *Server) registerDashboard() {
	s.dash = dashboard.New(dashboard.Sources{
		Store: s.deps.Store, Devices: s.deps.Devices, Pool: s.deps.Pool, Tiers: s.deps.Tiers,
		Catalog: s.deps.Catalog, Dispatcher: s.deps.Dispatcher, Clock: s.deps.Clock, Log: s.deps.Log,
		Version: metrics.Version,
	})
	s.dash.Register(s.mux)
}
