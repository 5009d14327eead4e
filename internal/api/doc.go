// Package api is kiln's one HTTP home: the server and every route on
// kiln's port. The kernel packages it serves (job, dispatch, worker,
// device, catalog, tier, policy, experiment, shadow, tune, metrics) expose
// methods and data; none of them builds an http.Handler. The tuner is
// served through interfaces declared here (TraceSource, Deps.TuneStatus)
// and wired by the node, so that api does not import the tuner and the
// simulator under it (docs/ARCHITECTURE.md, "Layers").
//
// It holds:
//
//   - the server (api.go): limits, JSON answers for unknown paths and
//     methods, a panic guard, per-route request metrics (httpmetrics.go);
//   - kiln's own routes: /v1/jobs (submit, list, get, cancel; cluster.go
//     when the node is one of many), /v1/workers, /v1/devices,
//     /v1/models, /v1/tiers, /v1/cluster, /healthz, /readyz, /metrics and
//     pprof; /v1/policies (policies.go); /v1/experiments and its watches
//     (experiments.go); the shadow report, the recorded trace and
//     /v1/tune (tuning.go);
//   - the admin token (admin.go): where it comes from (AdminToken) and the
//     guard around every route that changes what kiln runs. Routes register
//     through one place (handle), so that TestMutatingRoutesNeedTheToken
//     walks them all and fails for a mutating /v1 route without the guard.
//
// Beside it, internal/api/comfy serves ComfyUI's HTTP and WebSocket API and
// internal/api/dashboard the built-in dashboard; this package registers
// both on its mux. Every JSON answer goes through internal/httpjson.
//
// Every error is JSON, {"error": {"type": "...", "message": "..."}}, with a
// 4xx status for a client's mistake (bad JSON, unknown class, unknown model,
// oversize body, full queue) and never a 500 for one. A job is committed to
// the durable queue before POST /v1/jobs answers 202.
//
//	s := api.New(cfg.API, api.Deps{Store: store, Dispatcher: d, Policies: host, AdminToken: tok, ...})
//	err := s.ListenAndServe(ctx, "127.0.0.1:8188", nil)
package api
