// Package api serves kiln's HTTP API: kiln's own /v1 routes, health and
// readiness probes, and Prometheus metrics.
//
// Every error is JSON, {"error": {"type": "...", "message": "..."}}, with a
// 4xx status for a client's mistake (bad JSON, unknown class, unknown model,
// oversize body, full queue) and never a 500 for one. A job is committed to
// the durable queue before POST /v1/jobs answers 202.
//
//	s := api.New(cfg.API, api.Deps{Store: store, Dispatcher: d, ...})
//	err := s.ListenAndServe(ctx, "127.0.0.1:8188", nil)
package api
