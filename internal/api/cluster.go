package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"

	"github.com/kiln-gpu/kiln/internal/api/comfy"
	"github.com/kiln-gpu/kiln/internal/httpjson"
	"github.com/kiln-gpu/kiln/internal/job"
)

// Cluster is what the API needs of a kiln cluster (internal/cluster, wired
// by internal/node) when the node is one of many: submits go to the cluster's
// replicated registry and work queue, and reads cover every node's jobs.
// Nil on a single node, where the local store answers everything.
type Cluster interface {
	// Submit makes the job durable in the cluster before it returns; a job
	// whose id exists is not submitted again (existed, with the stored
	// job). Errors wrap job.ErrBadID, job.ErrBadClass, ErrJobTooLarge or
	// ErrClusterUnavailable.
	Submit(ctx context.Context, j *job.Job) (stored *job.Job, existed bool, err error)
	// Get returns a job of any node and the node that runs or ran it
	// (empty while it waits). Not found wraps job.ErrNotFound.
	Get(ctx context.Context, id string) (*job.Job, string, error)
	// List returns up to limit jobs in state (every state when empty),
	// newest first, the node of each, and the counts per state.
	List(state job.State, limit int) ([]*job.Job, []string, map[job.State]int)
	// Cancel cancels a job on whichever node holds it.
	Cancel(ctx context.Context, id string) (*job.Job, string, error)
	// Ready says why the node cannot take work now, or nil.
	Ready() error
	// OpenOutput opens a job's output file from the cluster's store, for
	// /view of a file that another node wrote. Not found wraps
	// os.ErrNotExist.
	OpenOutput(ctx context.Context, typ, subfolder, name string) (io.ReadCloser, error)
	// OutputsWritten says that the API has finished writing a finished
	// job's files (PNG metadata), so they may be copied for other nodes.
	OutputsWritten(id string)
	// ForwardWS sends a WebSocket message for a client to the other nodes
	// (the prompt runs here, the client may be connected elsewhere), kind
	// saying what frame holds (the API's own labels); OnForwardedWS has
	// deliver called with the messages they forward, whatever their size.
	ForwardWS(clientID, kind string, frame []byte)
	OnForwardedWS(deliver func(clientID, kind string, frame []byte)) error
	// Nodes are the live nodes as their heartbeats describe them, for
	// GET /v1/cluster (JSON-encodable).
	Nodes() any
	// RoutingShadow is the routing shadow's report, for GET
	// /v1/cluster/shadow (JSON-encodable; nil when it is off).
	RoutingShadow() any
}

// routingShadow is GET /v1/cluster/shadow: what the routing policies the
// node shadows would have chosen for the jobs it routed, priced beside its
// own choices (internal/experiment RoutingShadow). Read-only, as the
// eviction shadow's report.
func (s *Server) routingShadow(w http.ResponseWriter, _ *http.Request) {
	c := s.deps.Cluster
	if c == nil {
		httpjson.Error(w, http.StatusNotFound, "not_a_cluster", "the routing shadow runs on a node of a cluster (cluster.nats)")
		return
	}
	rep := c.RoutingShadow()
	if rep == nil {
		httpjson.Error(w, http.StatusNotFound, "shadow_off", "the routing shadow is off (experiments.shadow.routing: [off])")
		return
	}
	httpjson.WriteIndent(w, http.StatusOK, rep)
}

// clusterStatus is GET /v1/cluster: this node's name and, in a cluster,
// every live node's heartbeat (its health, queue, free VRAM, load rates
// and resident models). A single node answers with cluster false.
func (s *Server) clusterStatus(w http.ResponseWriter, _ *http.Request) {
	c := s.deps.Cluster
	if c == nil {
		httpjson.Write(w, http.StatusOK, map[string]any{"cluster": false, "node": s.deps.NodeID, "nodes": []any{}})
		return
	}
	out := map[string]any{"cluster": true, "node": s.deps.NodeID, "nodes": c.Nodes()}
	if err := c.Ready(); err != nil {
		out["error"] = err.Error()
	}
	httpjson.Write(w, http.StatusOK, out)
}

// Errors a Cluster's Submit wraps.
var (
	ErrJobTooLarge        = errors.New("the job is too large for the cluster")
	ErrClusterUnavailable = errors.New("the cluster is unavailable")
)

// idempotencyID is the job id of a /v1 submit with an Idempotency-Key
// header: a digest of the key, so that any key is a valid id and a retry
// with the same key names the same job on any node.
func idempotencyID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "idem-" + hex.EncodeToString(sum[:20])
}

// submit stores a job in the cluster or in the local store. With
// idempotent, a job whose id exists is returned (existed) instead of
// refused.
func (s *Server) submit(ctx context.Context, j *job.Job, idempotent bool) (*job.Job, bool, error) {
	if c := s.deps.Cluster; c != nil {
		stored, existed, err := c.Submit(ctx, j)
		if err != nil {
			return nil, false, err
		}
		if existed && !idempotent {
			return stored, true, job.ErrDuplicate
		}
		return stored, existed, nil
	}
	err := s.deps.Store.Submit(ctx, j)
	if idempotent && errors.Is(err, job.ErrDuplicate) {
		old, gerr := s.deps.Store.Get(j.ID)
		if gerr != nil {
			return nil, false, gerr
		}
		return old, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	return j, false, nil
}

// lookup returns a job and its node, from the cluster when there is one.
func (s *Server) lookup(ctx context.Context, id string) (*job.Job, string, error) {
	if c := s.deps.Cluster; c != nil {
		return c.Get(ctx, id)
	}
	j, err := s.deps.Store.Get(id)
	return j, s.deps.NodeID, err
}

// list returns jobs in state (all when empty), newest first, with their
// nodes, from the cluster when there is one.
func (s *Server) list(state job.State, limit int) ([]*job.Job, []string, error) {
	if c := s.deps.Cluster; c != nil {
		jobs, nodes, _ := c.List(state, limit)
		return jobs, nodes, nil
	}
	jobs, err := s.deps.Store.List(state, limit)
	nodes := make([]string, len(jobs))
	for i := range nodes {
		nodes[i] = s.deps.NodeID
	}
	return jobs, nodes, err
}

// counts are the jobs per state, of the cluster when there is one.
func (s *Server) counts() map[job.State]int {
	if c := s.deps.Cluster; c != nil {
		_, _, n := c.List("", 1)
		return n
	}
	if s.deps.Store == nil {
		return map[job.State]int{}
	}
	return s.deps.Store.Counts()
}

// clusterSubmitError answers a submit the cluster refused for its own
// reasons; false means the error is not one of them.
func (s *Server) clusterSubmitError(w http.ResponseWriter, err error) bool {
	switch {
	case errors.Is(err, ErrJobTooLarge):
		s.reject(w, &Error{Status: http.StatusRequestEntityTooLarge, Type: "job_too_large", Message: err.Error()})
	case errors.Is(err, ErrClusterUnavailable):
		s.deps.Log.Warn().Err(err).Msg("submit to the cluster")
		writeError(w, http.StatusServiceUnavailable, "cluster_unavailable", "the cluster could not store the job; retry later")
	default:
		return false
	}
	return true
}

// comfyJobs gives the ComfyUI routes (internal/api/comfy) the API's job
// access, so that /prompt submits and reads jobs as /v1/jobs does.
type comfyJobs struct{ s *Server }

var _ comfy.Jobs = comfyJobs{}

func (c comfyJobs) Submit(ctx context.Context, j *job.Job, idempotent bool) (*job.Job, bool, error) {
	return c.s.submit(ctx, j, idempotent)
}

func (c comfyJobs) Lookup(ctx context.Context, id string) (*job.Job, string, error) {
	return c.s.lookup(ctx, id)
}

func (c comfyJobs) List(state job.State, limit int) ([]*job.Job, []string, error) {
	return c.s.list(state, limit)
}

func (c comfyJobs) Counts() map[job.State]int { return c.s.counts() }

func (c comfyJobs) RefuseSubmit(w http.ResponseWriter, err error) bool {
	return c.s.clusterSubmitError(w, err)
}
