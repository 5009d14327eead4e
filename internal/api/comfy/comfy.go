package comfy

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kiln-gpu/kiln/internal/catalog"
	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/device"
	"github.com/kiln-gpu/kiln/internal/dispatch"
	"github.com/kiln-gpu/kiln/internal/httpjson"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/metrics"
	"github.com/kiln-gpu/kiln/internal/worker"
	"github.com/kiln-gpu/kiln/internal/workflow"
	"github.com/rs/zerolog"
)

// Deps are the kernel parts the ComfyUI routes serve.
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
	// folders, /view).
	OutputDir string
	// MaxBodyBytes bounds a request body (api.max_body_bytes).
	MaxBodyBytes int64
	// Jobs submits and reads jobs: through the cluster when the node is
	// one of many, else the local store. internal/api supplies it, so that
	// /prompt and /v1/jobs share one submit path.
	Jobs Jobs
	// Cluster is what the routes need of a cluster beyond Jobs; nil on a
	// single node.
	Cluster Cluster
}

// Jobs is the job access internal/api gives the ComfyUI routes.
type Jobs interface {
	// Submit stores a job; with idempotent, a job whose id exists is
	// returned (existed) instead of refused.
	Submit(ctx context.Context, j *job.Job, idempotent bool) (stored *job.Job, existed bool, err error)
	// Lookup returns a job and the node that runs or ran it.
	Lookup(ctx context.Context, id string) (*job.Job, string, error)
	// List returns up to limit jobs in state (every state when empty),
	// newest first, with their nodes.
	List(state job.State, limit int) ([]*job.Job, []string, error)
	// Counts are the jobs per state.
	Counts() map[job.State]int
	// RefuseSubmit answers a submit that the cluster refused for its own
	// reasons (too large, unavailable) as /v1/jobs does; false means err is
	// not one of them.
	RefuseSubmit(w http.ResponseWriter, err error) bool
}

// Cluster is what the ComfyUI routes need of a kiln cluster (api.Cluster
// has these methods, documented there): outputs other nodes wrote, and
// WebSocket messages for clients connected to another node.
type Cluster interface {
	OpenOutput(ctx context.Context, typ, subfolder, name string) (io.ReadCloser, error)
	OutputsWritten(id string)
	ForwardWS(clientID, kind string, frame []byte)
	OnForwardedWS(deliver func(clientID, kind string, frame []byte)) error
}

// comfy serves the ComfyUI-compatible routes. See docs/comfyui.md.
type comfy struct {
	deps     Deps
	cfg      Config
	inputDir string
	hub      *hub

	specMu  sync.Mutex
	specSig string
	specs   *NodeSpecs
}

// Register adds ComfyUI's routes to mux, each also under /api/, and starts
// the WebSocket hub that turns dispatcher events into ComfyUI messages (it
// runs for the life of the process, as the dispatcher's subscription does).
func Register(mux *http.ServeMux, cfg Config, deps Deps) {
	if deps.Clock == nil {
		deps.Clock = clock.Real()
	}
	c := &comfy{deps: deps, cfg: cfg.WithDefaults()}
	c.inputDir = c.cfg.InputDir
	if c.inputDir == "" && deps.OutputDir != "" {
		c.inputDir = filepath.Join(filepath.Dir(deps.OutputDir), "input")
	}
	c.hub = newHub(c)
	if cl := deps.Cluster; cl != nil {
		// Messages of prompts that run on other nodes, for the clients
		// connected here (never forwarded again).
		if err := cl.OnForwardedWS(func(clientID, kind string, frame []byte) {
			if clientID != "" {
				c.hub.deliverForwarded(clientID, kind, frame)
			}
		}); err != nil {
			deps.Log.Warn().Err(err).Msg("websocket messages from other nodes of the cluster are not received")
		}
	}
	routes := []struct {
		pattern string
		h       http.HandlerFunc
	}{
		{"GET /prompt", c.getPrompt},
		{"POST /prompt", c.postPrompt},
		{"GET /queue", c.getQueue},
		{"POST /queue", c.postQueue},
		{"GET /history", c.getHistory},
		{"GET /history/{id}", c.getHistoryID},
		{"POST /history", c.postHistory},
		{"GET /view", c.view},
		{"POST /upload/image", c.uploadImage},
		{"GET /object_info", c.objectInfo},
		{"GET /object_info/{class}", c.objectInfo},
		{"GET /system_stats", c.systemStats},
		{"POST /interrupt", c.interrupt},
		{"POST /free", c.free},
		{"GET /models", c.modelFolders},
		{"GET /models/{folder}", c.modelFolder},
		{"GET /embeddings", c.embeddings},
		{"GET /extensions", c.extensions},
		{"GET /features", c.features},
		{"GET /ws", c.hub.serveWS},
	}
	for _, r := range routes {
		method, path, _ := strings.Cut(r.pattern, " ")
		mux.HandleFunc(r.pattern, r.h)
		mux.HandleFunc(method+" /api"+path, r.h)
	}
	if deps.Dispatcher != nil {
		go c.hub.run()
	}
}

// nodeSpecs returns the workers' node specs, fetched again when the set of
// ready worker processes changes. A pool that offers NodeSpecs() (hello's
// node_specs) is asked directly; otherwise the specs come from one stats
// call per new worker process.
func (c *comfy) nodeSpecs(ctx context.Context) *NodeSpecs {
	p := c.deps.Pool
	if p == nil {
		return nil
	}
	if src, ok := any(p).(interface{ NodeSpecs() map[string]any }); ok {
		if m := src.NodeSpecs(); len(m) > 0 {
			c.specMu.Lock()
			defer c.specMu.Unlock()
			sig := fmt.Sprint(len(m))
			for _, w := range p.Workers() {
				sig += fmt.Sprintf("|%s:%d", w.ID(), w.Generation())
			}
			if sig != c.specSig || c.specs == nil {
				if ns, err := ParseNodeSpecs(m); err == nil {
					c.specs, c.specSig = ns, sig
				}
			}
			return c.specs
		}
	}
	var ready []*worker.Worker
	sig := ""
	for _, w := range p.Workers() {
		if w.State() == worker.Ready || w.State() == worker.Busy {
			ready = append(ready, w)
			sig += fmt.Sprintf("|%s:%d", w.ID(), w.Generation())
		}
	}
	c.specMu.Lock()
	defer c.specMu.Unlock()
	if sig == c.specSig || len(ready) == 0 {
		return c.specs
	}
	merged := map[string]any{}
	for _, w := range ready {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := w.Stats(sctx)
		cancel()
		if err != nil {
			c.deps.Log.Debug().Err(err).Str("worker", w.ID()).Msg("fetch node specs")
			return c.specs // try again on the next request
		}
		for k, v := range st.NodeSpecs {
			merged[k] = v
		}
	}
	ns, err := ParseNodeSpecs(merged)
	if err != nil {
		c.deps.Log.Warn().Err(err).Msg("workers sent malformed node specs")
		return c.specs
	}
	c.specs, c.specSig = ns, sig
	return ns
}

// env is what /prompt validation checks against.
func (c *comfy) env(ctx context.Context) PromptEnv {
	env := PromptEnv{Limits: c.deps.Limits, Specs: c.nodeSpecs(ctx)}
	if c.deps.Pool != nil {
		if classes, ok := c.deps.Pool.NodeClasses(); ok {
			env.Classes = classes
		}
	}
	if cat := c.deps.Catalog; cat != nil {
		env.ModelExists = func(folder, name string) bool {
			if folder == "input" || folder == "output" || folder == "temp" {
				// Files of the input-file combos, by annotatedFile's folder;
				// a name may have subfolders, as ComfyUI joins it to the
				// folder.
				base, _ := c.dirOf(folder)
				dir, file := path.Split(name)
				p, err := c.safePath(base, dir, file)
				if err != nil {
					return false
				}
				st, err := os.Stat(p)
				return err == nil && st.Mode().IsRegular()
			}
			_, err := cat.Lookup(folder + "/" + name)
			return err == nil
		}
		env.ModelNames = c.modelNames
	}
	return env
}

// modelNames lists the catalog's models in a ComfyUI folder ("input": the
// uploaded files).
func (c *comfy) modelNames(folder string) []string {
	out := []string{}
	if folder == "input" {
		if c.inputDir == "" {
			return out
		}
		_ = filepath.WalkDir(c.inputDir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if rel, err := filepath.Rel(c.inputDir, p); err == nil {
					out = append(out, filepath.ToSlash(rel))
				}
			}
			return nil
		})
		sort.Strings(out)
		return out
	}
	if c.deps.Catalog == nil {
		return out
	}
	entries, err := c.deps.Catalog.List()
	if err != nil {
		return out
	}
	for _, e := range entries {
		if name, ok := strings.CutPrefix(e.ID, folder+"/"); ok {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// writePromptError answers a refused prompt in ComfyUI's shape.
func (c *comfy) writePromptError(w http.ResponseWriter, e *PromptError) {
	if c.deps.Metrics != nil {
		c.deps.Metrics.JobRejected(e.Err.Type)
	}
	httpjson.Write(w, e.Status, e)
}

func (c *comfy) queueRemaining() int {
	n := c.deps.Jobs.Counts()
	return n[job.Queued] + n[job.Running]
}

func (c *comfy) getPrompt(w http.ResponseWriter, _ *http.Request) {
	httpjson.Write(w, http.StatusOK, map[string]any{"exec_info": map[string]any{"queue_remaining": c.queueRemaining()}})
}

func (c *comfy) postPrompt(w http.ResponseWriter, r *http.Request) {
	body, ok := c.readBody(w, r)
	if !ok {
		return
	}
	req, perr := DecodePrompt(body, c.env(r.Context()))
	if perr != nil {
		c.writePromptError(w, perr)
		return
	}
	if req.PromptID == "" {
		req.PromptID = newUUID()
	}
	// The graph DecodePrompt parsed is the job's one parse: its Facts
	// give the result cache's key here and go with the job (the stage
	// plan, estimates, the hub's classes, the key again when it ends).
	facts := req.Graph.Facts()
	if hit := c.hub.cache.lookup(facts); hit != nil {
		// A hit is a prompt of its own: its own number, as ComfyUI gives
		// every prompt the next counter value (or the number it sent).
		number := float64(c.deps.Store.ReserveSeq())
		if req.Number != nil {
			number = *req.Number
		}
		c.hub.answerFromCache(req, hit, number)
		httpjson.Write(w, http.StatusOK, map[string]any{"prompt_id": req.PromptID, "number": number, "node_errors": map[string]any{}})
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		c.hub.replayCached(req.PromptID)
		return
	}
	// ComfyUI's queue runs prompts by number, lowest first; a prompt
	// without one gets the next counter value, negated for front. kiln's
	// queue runs by class, then by job order (job.Job.Rank): an explicit
	// number becomes the job's Order, and a prompt without one keeps its
	// submission number (Seq) as its rank, so both kinds interleave as in
	// ComfyUI. front, as in ComfyUI, counts only without a number: the
	// prompt goes to the interactive class, ahead of every prompt already
	// there (job.Job.Front).
	class := job.Class(c.cfg.DefaultClass)
	j := &job.Job{ID: req.PromptID, Workflow: req.Workflow, Models: req.Models, ClientID: req.ClientID,
		Facts: facts}
	switch {
	case req.Number != nil:
		j.Order = req.Number
	case req.Front:
		class, j.Front = job.Interactive, true
	}
	j.Class = class
	// In a cluster, a client's prompt_id makes a retried prompt (to any
	// node) idempotent: it answers with the prompt already queued.
	stored, existed, err := c.deps.Jobs.Submit(r.Context(), j, c.deps.Cluster != nil)
	if err != nil {
		switch {
		case c.deps.Jobs.RefuseSubmit(w, err):
		case errors.Is(err, job.ErrQueueFull):
			c.writePromptError(w, promptErr(http.StatusTooManyRequests, "queue_full", "the queue is full; retry later", err.Error()))
		case errors.Is(err, job.ErrDuplicate):
			c.writePromptError(w, promptErr(http.StatusBadRequest, "invalid_prompt", "prompt_id is already in use", err.Error()))
		case errors.Is(err, job.ErrBadID):
			c.writePromptError(w, promptErr(http.StatusBadRequest, "invalid_prompt", "invalid prompt_id", err.Error()))
		case r.Context().Err() != nil:
		default:
			c.deps.Log.Error().Err(err).Msg("submit prompt")
			c.writePromptError(w, promptErr(http.StatusServiceUnavailable, "store_unavailable", "the prompt could not be stored; retry later", ""))
		}
		return
	}
	j = stored
	if c.deps.Metrics != nil && !existed {
		c.deps.Metrics.JobSubmitted(string(j.Class))
	}
	c.hub.rememberExtra(j.ID, req.ExtraData)
	httpjson.Write(w, http.StatusOK, map[string]any{"prompt_id": j.ID, "number": promptNumber(j), "node_errors": map[string]any{}})
	c.hub.broadcastStatus()
}

// promptNumber is the number kiln reports for a prompt (the /prompt answer,
// /queue and /history items): the number the client gave, else kiln's
// submission number, Seq. A front prompt also reports its Seq, although it
// runs ahead (its job's Order is -Seq; ComfyUI reports that negative
// number): clients that compare numbers see kiln's submission order.
func promptNumber(j *job.Job) float64 {
	if j.Order != nil && !j.Front {
		return *j.Order
	}
	return float64(j.Seq)
}

// queueItem is [number, prompt_id, prompt, extra_data, outputs_to_execute].
func (c *comfy) queueItem(j *job.Job) []any {
	return []any{promptNumber(j), j.ID, j.Workflow, c.hub.extraData(j), outputIDs(j)}
}

// outputIDs lists a job's output nodes, sorted: from its Facts while the
// store keeps them (a queued or running job, what /queue lists), else from
// the output nodes its record kept when it ended (/history); only a job
// without either (its graph never parsed, or it ended before kiln kept
// them) costs one decode of its stored graph.
func outputIDs(j *job.Job) []string {
	if j.Facts != nil {
		return append([]string{}, slices.Sorted(slices.Values(j.Facts.Outputs))...)
	}
	if j.OutputNodes != nil {
		return append([]string{}, slices.Sorted(slices.Values(j.OutputNodes))...)
	}
	var g map[string]struct {
		ClassType string `json:"class_type"`
	}
	out := []string{}
	workflow.CountDecode()
	if json.Unmarshal(j.Workflow, &g) != nil {
		return out
	}
	for id, n := range g {
		if isOutputClass(n.ClassType) {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

func (c *comfy) getQueue(w http.ResponseWriter, _ *http.Request) {
	running, queued, err := queueSnapshot(func(state job.State) ([]*job.Job, error) {
		jobs, _, err := c.deps.Jobs.List(state, 10000)
		if state == job.Running {
			// Finished in the store, still being ended by the hub:
			// running until their execution_success, as in ComfyUI.
			for _, f := range c.hub.finishingJobs() {
				if !slices.ContainsFunc(jobs, func(j *job.Job) bool { return j.ID == f.ID }) {
					jobs = append(jobs, f)
				}
			}
		}
		return jobs, err
	})
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
		return
	}
	// Pending in the order kiln runs them: interactive, then batch, each
	// in queue order (number or front, else submission).
	sort.SliceStable(queued, func(a, b int) bool {
		ca, cb := queued[a].Class == job.Interactive, queued[b].Class == job.Interactive
		if ca != cb {
			return ca
		}
		return job.CompareQueued(queued[a], queued[b]) < 0
	})
	out := map[string][]any{"queue_running": {}, "queue_pending": {}}
	for _, j := range running {
		out["queue_running"] = append(out["queue_running"], c.queueItem(j))
	}
	for _, j := range queued {
		out["queue_pending"] = append(out["queue_pending"], c.queueItem(j))
	}
	httpjson.Write(w, http.StatusOK, out)
}

// queueSnapshot reads the running and the queued prompts so that none that
// is queued or running goes missing from both lists, as ComfyUI's
// get_current_queue reads them under one lock. Two reads cannot be atomic:
// a prompt that starts between a read of the running and one of the queued
// was in neither (clients that poll /queue then /history, as the
// @saintno/comfyui-sdk CallWrapper does on every status message, took it
// for lost). So the running are read before and after the queued: a prompt
// that changes state once during the reads is in one of the three, and one
// seen running is not listed as pending as well. One that finished meanwhile
// is in /history already.
func queueSnapshot(list func(job.State) ([]*job.Job, error)) (running, queued []*job.Job, err error) {
	before, err := list(job.Running)
	if err != nil {
		return nil, nil, err
	}
	pending, err := list(job.Queued)
	if err != nil {
		return nil, nil, err
	}
	after, err := list(job.Running)
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	for _, j := range append(after, before...) {
		if !seen[j.ID] {
			seen[j.ID] = true
			running = append(running, j)
		}
	}
	for _, j := range pending {
		if !seen[j.ID] {
			queued = append(queued, j)
		}
	}
	return running, queued, nil
}

// clearDelete is the body of POST /queue and POST /history.
type clearDelete struct {
	Clear  bool     `json:"clear"`
	Delete []string `json:"delete"`
}

func (c *comfy) readClearDelete(w http.ResponseWriter, r *http.Request) (clearDelete, bool) {
	var cd clearDelete
	body, ok := c.readBody(w, r)
	if !ok {
		return cd, false
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := json.Unmarshal(body, &cd); err != nil {
			writeError(w, http.StatusBadRequest, "invalid_json", "the body must be {\"clear\": bool, \"delete\": [ids]}: "+err.Error())
			return cd, false
		}
	}
	return cd, true
}

func (c *comfy) postQueue(w http.ResponseWriter, r *http.Request) {
	cd, ok := c.readClearDelete(w, r)
	if !ok {
		return
	}
	ids := cd.Delete
	if cd.Clear {
		// The ids from the queue index (no record read back), newest
		// first as the store lists them.
		queued := c.deps.Store.Snapshot(0)
		slices.SortFunc(queued, func(a, b *job.Job) int { return cmp.Compare(b.Seq, a.Seq) })
		for _, j := range queued[:min(len(queued), 100000)] {
			ids = append(ids, j.ID)
		}
	}
	for _, id := range ids {
		// ComfyUI deletes pending items only; they leave no history. The
		// store's queue index says which are pending, without reading
		// each job back.
		if c.deps.Store.IsQueued(id) {
			if _, err := c.deps.Dispatcher.Cancel(id); err == nil {
				c.hub.forget(id)
				_ = c.deps.Store.Delete(id)
			}
		}
	}
	c.hub.broadcastStatus()
	w.WriteHeader(http.StatusOK)
}

func (c *comfy) postHistory(w http.ResponseWriter, r *http.Request) {
	cd, ok := c.readClearDelete(w, r)
	if !ok {
		return
	}
	ids := cd.Delete
	if cd.Clear {
		for _, j := range c.terminalJobs(0) {
			ids = append(ids, j.ID)
		}
		c.hub.clearCachedHistory()
	}
	for _, id := range ids {
		c.hub.deleteCachedHistory(id)
		if err := c.deps.Store.Delete(id); err == nil {
			c.hub.forget(id)
		}
	}
	w.WriteHeader(http.StatusOK)
}

// terminalJobs lists finished jobs oldest first; max > 0 keeps the newest max.
func (c *comfy) terminalJobs(max int) []*job.Job {
	var out []*job.Job
	for _, st := range []job.State{job.Done, job.Failed, job.Cancelled} {
		jobs, _, err := c.deps.Jobs.List(st, 100000)
		if err != nil {
			continue
		}
		out = append(out, jobs...)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Seq < out[b].Seq })
	if max > 0 && len(out) > max {
		out = out[len(out)-max:]
	}
	return out
}

// getHistory is GET /history: finished prompts, runs and cache hits
// together, in the order they finished, as ComfyUI's history dict keeps
// them (insertion at task_done). max_items and offset select from that
// order as ComfyUI's PromptQueue.get_history does: without offset, the
// last max_items; with it, max_items from position offset on.
func (c *comfy) getHistory(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	maxItems, offset := -1, -1
	for _, p := range []struct {
		name string
		dst  *int
	}{{"max_items", &maxItems}, {"offset", &offset}} {
		if v := q.Get(p.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || (n < 0 && p.name == "max_items") {
				// ComfyUI answers 500 for a non-integer (int() raises).
				writeError(w, http.StatusBadRequest, "invalid_query", fmt.Sprintf("%s: %q is not an integer ≥ 0", p.name, v))
				return
			}
			*p.dst = n
		}
	}
	all := c.finishedPrompts()
	lo, hi := historyWindow(len(all), maxItems, offset)
	out := orderedObject{}
	for _, f := range all[lo:hi] {
		out.add(f.id, f.entry)
	}
	httpjson.Write(w, http.StatusOK, out)
}

// historyWindow is the part [lo, hi) of n finished prompts that ComfyUI's
// get_history returns for max_items and offset (-1: not given): a negative
// offset with max_items means the last max_items; max_items 0 gives none.
func historyWindow(n, maxItems, offset int) (lo, hi int) {
	if offset < 0 && maxItems >= 0 {
		offset = n - maxItems
	}
	lo, hi = min(max(offset, 0), n), n
	if maxItems >= 0 {
		hi = min(lo+maxItems, n)
	}
	return lo, hi
}

// finishedPrompt is one /history entry with the time it finished.
type finishedPrompt struct {
	id    string
	at    time.Time
	seq   float64
	entry map[string]any
}

// finishedPrompts lists runs and cache hits in the order they finished;
// equal times (a clock's resolution) go by number.
func (c *comfy) finishedPrompts() []finishedPrompt {
	var all []finishedPrompt
	for _, j := range c.terminalJobs(0) {
		if c.hub.isFinishing(j.ID) {
			continue // in the history once its end is sent
		}
		all = append(all, finishedPrompt{j.ID, j.FinishedAt, float64(j.Seq), c.hub.historyEntry(j)})
	}
	for _, hit := range c.hub.cachedHistory() {
		all = append(all, finishedPrompt{hit.id, hit.at, hit.number, hit.entry})
	}
	sort.SliceStable(all, func(a, b int) bool {
		if !all[a].at.Equal(all[b].at) {
			return all[a].at.Before(all[b].at)
		}
		return all[a].seq < all[b].seq
	})
	return all
}

// orderedObject is a JSON object that keeps its keys in insertion order:
// ComfyUI clients read /history's order (the last key is the newest
// prompt), which a Go map would sort by key.
type orderedObject struct {
	keys   []string
	values []any
}

func (o *orderedObject) add(k string, v any) {
	o.keys = append(o.keys, k)
	o.values = append(o.values, v)
}

// MarshalJSON writes the keys in insertion order.
func (o orderedObject) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	for i, k := range o.keys {
		if i > 0 {
			b = append(b, ',')
		}
		kb, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		vb, err := json.Marshal(o.values[i])
		if err != nil {
			return nil, fmt.Errorf("history %s: %w", k, err)
		}
		b = append(append(append(b, kb...), ':'), vb...)
	}
	return append(b, '}'), nil
}

func (c *comfy) getHistoryID(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	out := map[string]any{}
	if e := c.hub.cachedHistoryEntry(id); e != nil {
		out[id] = e
	} else if j, _, err := c.deps.Jobs.Lookup(r.Context(), id); err == nil && j.State != job.Queued && j.State != job.Running &&
		!c.hub.isFinishing(id) { // in the history once its end is sent (files named, PNG metadata written), as ComfyUI's task_done comes last
		out[id] = c.hub.historyEntry(j)
	}
	httpjson.Write(w, http.StatusOK, out)
}

func (c *comfy) objectInfo(w http.ResponseWriter, r *http.Request) {
	specs := c.nodeSpecs(r.Context())
	only := r.PathValue("class")
	out := specs.objectInfo(only, c.modelNames)
	if specs.Len() == 0 && c.deps.Pool != nil {
		// Workers that send no specs: their classes, without inputs.
		if classes, ok := c.deps.Pool.NodeClasses(); ok {
			for class := range classes {
				if only == "" || only == class {
					out[class] = map[string]any{"input": map[string]any{"required": map[string]any{}}, "output": []any{},
						"name": class, "display_name": class, "category": "", "output_node": isOutputClass(class)}
				}
			}
		}
	}
	httpjson.Write(w, http.StatusOK, out)
}

func (c *comfy) systemStats(w http.ResponseWriter, _ *http.Request) {
	total, free := memInfo()
	osName := "posix"
	if runtime.GOOS == "windows" {
		osName = "nt"
	}
	devices := []any{}
	if c.deps.Devices != nil {
		for _, d := range c.deps.Devices.Describe() {
			typ := "cuda"
			if d.Simulated {
				typ = "simulated"
			}
			devices = append(devices, map[string]any{
				"name": fmt.Sprintf("cuda:%d %s", d.Index, d.Name), "type": typ, "index": d.Index,
				"vram_total": d.MemoryTotal, "vram_free": d.MemoryFree,
				"torch_vram_total": d.Usable, "torch_vram_free": d.Usable - min(d.Usable, d.Reserved),
				"simulated": d.Simulated,
			})
		}
	}
	httpjson.Write(w, http.StatusOK, map[string]any{
		"system": map[string]any{
			"os": osName, "ram_total": total, "ram_free": free,
			"comfyui_version": "kiln", "required_frontend_version": "", "python_version": "n/a (kiln " + runtime.Version() + ")",
			"pytorch_version": "n/a", "embedded_python": false, "argv": os.Args,
		},
		"devices": devices,
	})
}

// memInfo reads MemTotal and MemAvailable from /proc/meminfo (0 elsewhere).
func memInfo() (total, free uint64) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseUint(f[1], 10, 64)
		switch f[0] {
		case "MemTotal:":
			total = v * 1024
		case "MemAvailable:":
			free = v * 1024
		}
	}
	return total, free
}

// interrupt cancels running jobs: the one named by prompt_id, else those of
// client_id (body, or the clientId query), else every running job (what
// ComfyUI's single executor does).
func (c *comfy) interrupt(w http.ResponseWriter, r *http.Request) {
	var body struct {
		PromptID string `json:"prompt_id"`
		ClientID string `json:"client_id"`
	}
	if data, ok := c.readBody(w, r); !ok {
		return
	} else if len(strings.TrimSpace(string(data))) > 0 {
		_ = json.Unmarshal(data, &body)
	}
	if body.ClientID == "" {
		body.ClientID = r.URL.Query().Get("clientId")
	}
	// Who runs what, from the store's memory: no record is read.
	for _, j := range c.deps.Store.Running() {
		switch {
		case body.PromptID != "" && j.ID != body.PromptID:
			continue
		case body.PromptID == "" && body.ClientID != "" && j.ClientID != body.ClientID:
			continue
		}
		if _, err := c.deps.Dispatcher.Cancel(j.ID); err != nil {
			c.deps.Log.Debug().Err(err).Str("job", j.ID).Msg("interrupt")
		}
	}
	w.WriteHeader(http.StatusOK)
}

// free clears the result cache and, with unload_models, unloads every model
// no running job uses.
func (c *comfy) free(w http.ResponseWriter, r *http.Request) {
	var body struct {
		UnloadModels bool `json:"unload_models"`
		FreeMemory   bool `json:"free_memory"`
	}
	if data, ok := c.readBody(w, r); !ok {
		return
	} else if len(strings.TrimSpace(string(data))) > 0 {
		_ = json.Unmarshal(data, &body)
	}
	if body.FreeMemory || body.UnloadModels {
		c.hub.cache.clear()
	}
	if body.UnloadModels && c.deps.Dispatcher != nil {
		n := c.deps.Dispatcher.UnloadIdle(r.Context())
		c.deps.Log.Info().Int("models", n).Msg("free: unloaded idle models")
	}
	w.WriteHeader(http.StatusOK)
}

// modelFolderNames are ComfyUI's model folders.
var modelFolderNames = []string{"checkpoints", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
	"style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models", "hypernetworks",
	"photomaker", "classifiers", "configs"}

func (c *comfy) modelFolders(w http.ResponseWriter, _ *http.Request) {
	httpjson.Write(w, http.StatusOK, modelFolderNames)
}

func (c *comfy) modelFolder(w http.ResponseWriter, r *http.Request) {
	folder := r.PathValue("folder")
	switch folder {
	case "unet":
		folder = "diffusion_models"
	case "clip":
		folder = "text_encoders"
	}
	known := false
	for _, f := range modelFolderNames {
		known = known || f == folder
	}
	if !known {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no model folder %q", r.PathValue("folder")))
		return
	}
	httpjson.Write(w, http.StatusOK, c.modelNames(folder))
}

func (c *comfy) embeddings(w http.ResponseWriter, _ *http.Request) {
	out := []string{}
	for _, n := range c.modelNames("embeddings") {
		out = append(out, strings.TrimSuffix(n, filepath.Ext(n)))
	}
	httpjson.Write(w, http.StatusOK, out)
}

func (c *comfy) extensions(w http.ResponseWriter, _ *http.Request) {
	httpjson.Write(w, http.StatusOK, []string{})
}

func (c *comfy) features(w http.ResponseWriter, _ *http.Request) {
	httpjson.Write(w, http.StatusOK, c.featureFlags())
}

// featureFlags are the server's feature flags, for GET /features and the
// WebSocket's feature_flags reply.
func (c *comfy) featureFlags() map[string]any {
	return map[string]any{"supports_preview_metadata": true, "max_upload_size": c.deps.MaxBodyBytes}
}

func isOutputClass(class string) bool { return workflow.IsOutputClass(class) }

// newUUID returns a UUID for a prompt that came without a prompt_id (and a
// WebSocket without a clientId):
// version 7 (RFC 9562), its first 48 bits the time in milliseconds and the
// rest random. ComfyUI makes version 4 ones; clients treat them as opaque
// strings. kiln stores jobs by id in a B+tree (internal/job), and ids that
// grow with time are inserted at its right edge: with random v4 ids every
// prompt dirtied a branch page of its own in the index update, which cost
// /prompt about three times the index CPU of /v1/jobs, whose ids also
// start with the time.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	ms := uint64(time.Now().UnixMilli())
	for i := range 6 {
		b[i] = byte(ms >> (8 * (5 - i)))
	}
	b[6] = b[6]&0x0f | 0x70
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
