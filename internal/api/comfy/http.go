package comfy

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"

	"github.com/kiln-gpu/kiln/internal/httpjson"
)

// writeError answers in kiln's own error form, as internal/api does, for
// the requests that fail before ComfyUI's shape applies (bad body, bad
// query, missing file).
func writeError(w http.ResponseWriter, status int, typ, msg string) {
	httpjson.WriteError(w, status, typ, msg)
}

// reject answers a refused request body and counts it in /metrics, as
// internal/api does for /v1/jobs.
func (c *comfy) reject(w http.ResponseWriter, status int, typ, msg string) {
	if c.deps.Metrics != nil {
		c.deps.Metrics.JobRejected(typ)
	}
	writeError(w, status, typ, msg)
}

// readBody reads a request body under api.max_body_bytes.
func (c *comfy) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	buf, berr := httpjson.ReadBody(w, r, c.deps.MaxBodyBytes)
	if berr != nil {
		c.reject(w, berr.Status, berr.Type, berr.Message)
		return nil, false
	}
	return buf, true
}

// cacheCounter counts the result cache's lookups in /metrics.
func (c *comfy) cacheCounter() func(result string) {
	if c.deps.Metrics == nil {
		return nil
	}
	return c.deps.Metrics.ResultCacheLookup
}

// viewFromCluster serves /view of an output that another node of the
// cluster wrote, from the cluster's object store.
func (c *comfy) viewFromCluster(w http.ResponseWriter, r *http.Request, typ, subfolder, name string) {
	rc, err := c.deps.Cluster.OpenOutput(r.Context(), typ, subfolder, name)
	if errors.Is(err, os.ErrNotExist) {
		writeError(w, http.StatusNotFound, "not_found", "no such file")
		return
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "cluster_unavailable", "the cluster's output store did not answer; retry later")
		return
	}
	defer rc.Close()
	ct := mime.TypeByExtension(filepath.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", fmt.Sprintf("filename=%q", name))
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, rc)
}
