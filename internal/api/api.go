package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/api/comfy"
	"github.com/kiln-gpu/kiln/internal/api/dashboard"
	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/dispatch"
	"github.com/kiln-gpu/kiln/internal/experiment"
	"github.com/kiln-gpu/kiln/internal/httpjson"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/metrics"
	"github.com/kiln-gpu/kiln/internal/policy"
	"github.com/kiln-gpu/kiln/internal/shadow"
	"github.com/kiln-gpu/kiln/internal/tier"
	"github.com/kiln-gpu/kiln/internal/worker"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// Deps are the kernel parts the API serves.
type Deps struct {
	Store      *job.Store
	Dispatcher *dispatch.Dispatcher
	Pool       *worker.Pool
	Devices    *device.Set
	Catalog    *catalog.Catalog
	Metrics    *metrics.Metrics
	Limits     workflow.Limits
	Clock      clock.Clock
	Log        zerolog.Logger
	// OutputDir is where workers write outputs (ComfyUI's output and temp
	// folders, /view); Comfy configures the ComfyUI-compatible routes.
	OutputDir string
	Comfy     comfy.Config
	// Tiers serves GET /v1/tiers; nil when kiln runs without them.
	Tiers *tier.Manager
	// Policies serves /v1/policies (policies.go); nil leaves it out.
	Policies *policy.Host
	// AdminToken guards the mutating admin endpoints; empty disables them.
	AdminToken string
	// Shadow serves GET /v1/experiments/shadow (read-only: what /metrics
	// exports, no token); Trace serves GET /v1/experiments/trace (the
	// node's recent traffic) behind the admin token. Nil leaves a route out.
	Shadow *shadow.Shadow
	Trace  TraceSource
	// Experiments serves /v1/experiments (experiments.go) and Watches
	// /v1/experiments/watches, the watches of changes made by hand; nil
	// leaves them out.
	Experiments *experiment.Controller
	Watches     *experiment.Watcher
	// TuneStatus serves GET /v1/tune, the background tuner's status
	// (internal/tune.Auto.Status, any value that encodes to JSON):
	// read-only, no token, like /v1/experiments.
	TuneStatus func() any
	// NodeID is this node's name: the "node" of its jobs (cluster.node_id,
	// else the hostname). Cluster, when the node is one of a cluster,
	// takes the submits and answers for every node's jobs (cluster.go).
	NodeID  string
	Cluster Cluster
}

// Server is kiln's HTTP API.
type Server struct {
	cfg  Config
	deps Deps
	mux  *http.ServeMux
	srv  *http.Server
	dash *dashboard.Dashboard
	// routes are the patterns registered through handle, in order: every
	// route but ComfyUI's (internal/api/comfy registers its own).
	routes []string
}

// New builds the API's routes.
func New(cfg Config, deps Deps) *Server {
	if deps.Clock == nil {
		deps.Clock = clock.Real()
	}
	s := &Server{cfg: cfg.WithDefaults(), deps: deps, mux: http.NewServeMux()}
	s.handle("POST /v1/jobs", http.HandlerFunc(s.submitJob))
	s.handle("GET /v1/jobs", http.HandlerFunc(s.listJobs))
	s.handle("GET /v1/jobs/{id}", http.HandlerFunc(s.getJob))
	s.handle("DELETE /v1/jobs/{id}", http.HandlerFunc(s.cancelJob))
	s.handle("GET /v1/workers", http.HandlerFunc(s.listWorkers))
	s.handle("GET /v1/devices", http.HandlerFunc(s.listDevices))
	s.handle("GET /v1/models", http.HandlerFunc(s.listModels))
	s.handle("POST /v1/models/refresh", s.admin(http.HandlerFunc(s.refreshModels)))
	s.handle("GET /v1/tiers", http.HandlerFunc(s.listTiers))
	s.handle("GET /healthz", http.HandlerFunc(s.healthz))
	s.handle("GET /readyz", http.HandlerFunc(s.readyz))
	s.handle("GET /v1/cluster", http.HandlerFunc(s.clusterStatus))
	s.handle("GET /v1/cluster/shadow", http.HandlerFunc(s.routingShadow))
	comfy.Register(s.mux, s.deps.Comfy, comfy.Deps{
		Store: deps.Store, Dispatcher: deps.Dispatcher, Pool: deps.Pool, Devices: deps.Devices,
		Catalog: deps.Catalog, Metrics: deps.Metrics, Limits: deps.Limits, Clock: deps.Clock, Log: deps.Log,
		OutputDir: deps.OutputDir, MaxBodyBytes: s.cfg.MaxBodyBytes, Jobs: comfyJobs{s}, Cluster: deps.Cluster,
	})
	s.registerDashboard()
	s.registerPolicies()
	s.registerExperiments()
	s.registerTuning()
	if deps.Metrics != nil {
		reg := deps.Metrics.Registry()
		s.handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	}
	if s.cfg.PProf {
		s.handle("GET /debug/pprof/", http.HandlerFunc(pprof.Index))
		s.handle("GET /debug/pprof/profile", http.HandlerFunc(pprof.Profile))
		s.handle("GET /debug/pprof/trace", http.HandlerFunc(pprof.Trace))
		s.handle("GET /debug/pprof/symbol", http.HandlerFunc(pprof.Symbol))
	}
	return s
}

// handle registers a route on the API's mux and remembers its pattern.
func (s *Server) handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
	s.routes = append(s.routes, pattern)
}

// Handler returns the API's root handler: the routes, with JSON errors for
// unknown paths and methods and a recovery guard.
func (s *Server) Handler() http.Handler {
	return s.observe(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.deps.Log.Error().Interface("panic", v).Str("path", r.URL.Path).Msg("handler panic")
				writeError(w, http.StatusInternalServerError, "internal_error", "internal error")
			}
		}()
		h, pattern := s.mux.Handler(r)
		if pattern == "" {
			// Let the mux decide between 404 and 405, then answer in JSON.
			rec := &statusRecorder{header: http.Header{}}
			h.ServeHTTP(rec, r)
			if allow := rec.header.Get("Allow"); allow != "" {
				w.Header().Set("Allow", allow)
			}
			if rec.status == http.StatusMethodNotAllowed {
				writeError(w, rec.status, "method_not_allowed", fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path))
				return
			}
			writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
			return
		}
		// ServeHTTP, not h: only the mux fills in the path values.
		s.mux.ServeHTTP(w, r)
	}))
}

// ListenAndServe serves on addr until ctx ends, then shuts down gracefully.
// ready is called with the bound address once the listener is open.
func (s *Server) ListenAndServe(ctx context.Context, addr string, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("api: listen %s: %w", addr, err)
	}
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          nil,
	}
	if ready != nil {
		ready(ln.Addr())
	}
	go s.dash.Run(ctx)
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(sctx)
		return nil
	}
}

// jobResponse is the API's view of a job.
type jobResponse struct {
	ID         string             `json:"id"`
	State      job.State          `json:"state"`
	Class      job.Class          `json:"class"`
	Attempts   int                `json:"attempts"`
	Models     []string           `json:"models"`
	DeadlineMS int64              `json:"deadline_ms,omitempty"`
	CreatedAt  *time.Time         `json:"created_at"`
	StartedAt  *time.Time         `json:"started_at"`
	FinishedAt *time.Time         `json:"finished_at"`
	Worker     string             `json:"worker,omitempty"`
	Node       string             `json:"node"`
	Outputs    []job.Output       `json:"outputs"`
	Error      *string            `json:"error"`
	Progress   *dispatch.Progress `json:"progress,omitempty"`
	Workflow   json.RawMessage    `json:"workflow,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (s *Server) view(j *job.Job, withWorkflow bool) jobResponse {
	r := jobResponse{
		ID: j.ID, State: j.State, Class: j.Class, Attempts: j.Attempts, Models: j.Models, DeadlineMS: j.DeadlineMS,
		CreatedAt: timePtr(j.CreatedAt), StartedAt: timePtr(j.StartedAt), FinishedAt: timePtr(j.FinishedAt),
		Worker: j.Worker, Node: s.deps.NodeID, Outputs: j.Outputs,
	}
	if r.Outputs == nil {
		r.Outputs = []job.Output{}
	}
	if r.Models == nil {
		r.Models = []string{}
	}
	if j.Error != "" {
		e := j.Error
		r.Error = &e
	}
	if j.State == job.Running && s.deps.Dispatcher != nil {
		if p, ok := s.deps.Dispatcher.Progress(j.ID); ok {
			r.Progress = &p
		}
	}
	if withWorkflow {
		r.Workflow = j.Workflow
	}
	return r
}

func (s *Server) submitJob(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	req, apiErr := DecodeSubmit(body, s.deps.Limits)
	if apiErr != nil {
		s.reject(w, apiErr)
		return
	}
	if apiErr := s.checkNodeClasses(req); apiErr != nil {
		s.reject(w, apiErr)
		return
	}
	if apiErr := s.checkModels(req); apiErr != nil {
		s.reject(w, apiErr)
		return
	}
	if r.URL.Query().Get("dry_run") == "1" {
		// Validation only: the caller learns whether kiln would accept the
		// job and which models it needs, and nothing is queued.
		httpjson.Write(w, http.StatusOK, map[string]any{"state": "valid", "class": req.Class, "models": req.Models})
		return
	}
	j := &job.Job{
		Class: req.Class, Workflow: req.Workflow, Models: req.Models, DeadlineMS: req.DeadlineMS,
		Tenant: req.Tenant, ClientID: req.ClientID, Facts: req.Facts,
	}
	key := r.Header.Get("Idempotency-Key")
	if key != "" {
		j.ID = idempotencyID(key)
	}
	stored, existed, err := s.submit(r.Context(), j, key != "")
	if err != nil {
		switch {
		case s.clusterSubmitError(w, err):
		case errors.Is(err, job.ErrQueueFull):
			s.reject(w, &Error{Status: http.StatusTooManyRequests, Type: "queue_full", Message: err.Error()})
		case errors.Is(err, job.ErrBadClass):
			s.reject(w, &Error{Status: http.StatusBadRequest, Type: "invalid_class", Message: err.Error()})
		case r.Context().Err() != nil:
			// The client went away; nothing useful to send.
		default:
			s.deps.Log.Error().Err(err).Msg("submit job")
			writeError(w, http.StatusServiceUnavailable, "store_unavailable", "the job could not be stored; retry later")
		}
		return
	}
	w.Header().Set("Location", "/v1/jobs/"+stored.ID)
	if existed {
		// A retry with the same Idempotency-Key: the job it made.
		httpjson.Write(w, http.StatusOK, map[string]any{"id": stored.ID, "state": stored.State, "existed": true})
		return
	}
	if s.deps.Metrics != nil {
		s.deps.Metrics.JobSubmitted(string(stored.Class))
	}
	httpjson.Write(w, http.StatusAccepted, map[string]any{"id": stored.ID, "state": stored.State})
}

// checkNodeClasses refuses graphs with node classes that no worker can
// execute, as ComfyUI refuses unknown nodes, instead of failing them later.
func (s *Server) checkNodeClasses(req *SubmitRequest) *Error {
	if s.deps.Pool == nil {
		return nil
	}
	known, ok := s.deps.Pool.NodeClasses()
	if !ok {
		return nil
	}
	var missing []string
	for _, c := range req.NodeClasses {
		if !known[c] {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return &Error{Status: http.StatusBadRequest, Type: "missing_node_type",
		Message: fmt.Sprintf("no worker can execute node classes %v", missing), Details: map[string]any{"classes": missing}}
}

// checkModels refuses, at submit time, jobs whose models are not in the store
// or could never fit on any device together.
func (s *Server) checkModels(req *SubmitRequest) *Error {
	if s.deps.Catalog == nil {
		return nil
	}
	var missing []string
	var vram uint64
	for _, m := range req.Models {
		e, err := s.deps.Catalog.Lookup(m)
		if err != nil {
			if errors.Is(err, catalog.ErrNotFound) || errors.Is(err, catalog.ErrBadID) {
				missing = append(missing, m)
				continue
			}
			return &Error{Status: http.StatusServiceUnavailable, Type: "catalog_unavailable", Message: err.Error()}
		}
		vram += uint64(e.VRAMBytes)
	}
	if len(missing) > 0 {
		return &Error{Status: http.StatusBadRequest, Type: "model_not_found",
			Message: fmt.Sprintf("models not found in the model store: %v", missing), Details: map[string]any{"models": missing}}
	}
	if s.deps.Dispatcher != nil && req.Facts != nil {
		// A job needs its largest stage on one device (text encoders, then
		// the diffusion model, then the VAE), not all its models at once.
		need, room := s.deps.Dispatcher.FitFacts(req.Facts)
		if room > 0 && need > room {
			return &Error{Status: http.StatusBadRequest, Type: "does_not_fit",
				Message: fmt.Sprintf("the workflow's largest stage needs %.1f GiB of VRAM (weights and activations); the largest device has %.1f GiB for one job",
					float64(need)/(1<<30), float64(room)/(1<<30))}
		}
	} else if s.deps.Devices != nil {
		var best uint64
		for _, d := range s.deps.Devices.Devices() {
			if led := s.deps.Devices.Ledger(d.Info().Index); led != nil && led.Usable() > best {
				best = led.Usable()
			}
		}
		if best > 0 && vram > best {
			return &Error{Status: http.StatusBadRequest, Type: "does_not_fit",
				Message: fmt.Sprintf("the workflow's models need %.1f GiB of VRAM together; the largest device has %.1f GiB usable",
					float64(vram)/(1<<30), float64(best)/(1<<30))}
		}
	}
	return nil
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	state := job.State(r.URL.Query().Get("state"))
	switch state {
	case "", job.Queued, job.Running, job.Done, job.Failed, job.Cancelled:
	default:
		writeError(w, http.StatusBadRequest, "invalid_state",
			fmt.Sprintf("state %q is not one of queued, running, done, failed, cancelled", state))
		return
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			writeError(w, http.StatusBadRequest, "invalid_limit", "limit must be an integer between 1 and 10000")
			return
		}
		limit = n
	}
	jobs, nodes, err := s.list(state, limit)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	out := make([]jobResponse, 0, len(jobs))
	for i, j := range jobs {
		v := s.view(j, false)
		v.Node = nodes[i]
		out = append(out, v)
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"jobs": out, "counts": s.counts()})
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	j, node, err := s.lookup(r.Context(), r.PathValue("id"))
	if err != nil {
		s.storeError(w, err)
		return
	}
	v := s.view(j, r.URL.Query().Get("workflow") == "1")
	v.Node = node
	httpjson.Write(w, http.StatusOK, v)
}

func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) {
	if c := s.deps.Cluster; c != nil {
		j, node, err := c.Cancel(r.Context(), r.PathValue("id"))
		if err != nil {
			s.storeError(w, err)
			return
		}
		v := s.view(j, false)
		v.Node = node
		httpjson.Write(w, http.StatusOK, v)
		return
	}
	j, err := s.deps.Dispatcher.Cancel(r.PathValue("id"))
	if err != nil {
		s.storeError(w, err)
		return
	}
	httpjson.Write(w, http.StatusOK, s.view(j, false))
}

func (s *Server) storeError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, job.ErrNotFound):
		writeError(w, http.StatusNotFound, "job_not_found", err.Error())
	case errors.Is(err, job.ErrBadTransition):
		writeError(w, http.StatusConflict, "invalid_state", err.Error())
	default:
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
	}
}

func (s *Server) listWorkers(w http.ResponseWriter, _ *http.Request) {
	httpjson.Write(w, http.StatusOK, map[string]any{"workers": s.deps.Pool.Infos()})
}

func (s *Server) listDevices(w http.ResponseWriter, _ *http.Request) {
	httpjson.Write(w, http.StatusOK, map[string]any{"devices": s.deps.Devices.Describe()})
}

func (s *Server) listModels(w http.ResponseWriter, _ *http.Request) {
	models, err := s.deps.Catalog.List()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "catalog_unavailable", err.Error())
		return
	}
	if models == nil {
		models = []catalog.Entry{}
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"models": models})
}

func (s *Server) refreshModels(w http.ResponseWriter, r *http.Request) {
	res, err := s.deps.Catalog.Refresh(r.Context())
	if err != nil {
		writeError(w, http.StatusBadGateway, "refresh_failed", err.Error())
		return
	}
	httpjson.Write(w, http.StatusOK, res)
}

func (s *Server) listTiers(w http.ResponseWriter, _ *http.Request) {
	if s.deps.Tiers == nil {
		httpjson.Write(w, http.StatusOK, map[string]any{"tiers": []any{}, "note": "kiln runs without cache tiers (no storage plugin found)"})
		return
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"tiers": s.deps.Tiers.Stats()})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	httpjson.Write(w, http.StatusOK, map[string]any{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	ready := s.deps.Pool.Ready()
	if c := s.deps.Cluster; c != nil {
		if err := c.Ready(); err != nil {
			// A node cut off from the cluster takes no work (it pulls
			// none), so a load balancer should send clients elsewhere.
			httpjson.Write(w, http.StatusServiceUnavailable, map[string]any{"status": "not_ready", "workers_ready": ready, "cluster": err.Error()})
			return
		}
	}
	if ready == 0 {
		httpjson.Write(w, http.StatusServiceUnavailable, map[string]any{"status": "not_ready", "workers_ready": 0})
		return
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"status": "ready", "workers_ready": ready})
}

// readBody reads a request body under the configured limit.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	buf, berr := httpjson.ReadBody(w, r, s.cfg.MaxBodyBytes)
	if berr != nil {
		s.reject(w, &Error{Status: berr.Status, Type: berr.Type, Message: berr.Message})
		return nil, false
	}
	return buf, true
}

func (s *Server) reject(w http.ResponseWriter, e *Error) {
	if s.deps.Metrics != nil {
		s.deps.Metrics.JobRejected(e.Type)
	}
	httpjson.Write(w, e.Status, map[string]any{"error": e})
}

// statusRecorder captures the status a fallback handler would send.
type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return len(b), nil
}
func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

// writeError answers with kiln's error body, {"error": {"type", "message"}}.
func writeError(w http.ResponseWriter, status int, typ, msg string) {
	httpjson.WriteError(w, status, typ, msg)
}
