package comfy

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/rs/zerolog"
)

// storeJobs gives the ComfyUI routes a real job store, as internal/api's
// comfyJobs does on a single node.
type storeJobs struct{ s *job.Store }

func (j storeJobs) Submit(ctx context.Context, jb *job.Job, _ bool) (*job.Job, bool, error) {
	return jb, false, j.s.Submit(ctx, jb)
}
func (j storeJobs) Lookup(_ context.Context, id string) (*job.Job, string, error) {
	jb, err := j.s.Get(id)
	return jb, "", err
}
func (j storeJobs) List(state job.State, limit int) ([]*job.Job, []string, error) {
	jobs, err := j.s.List(state, limit)
	return jobs, nil, err
}
func (j storeJobs) Counts() map[job.State]int                    { return nil }
func (j storeJobs) RefuseSubmit(http.ResponseWriter, error) bool { return false }

var _ Jobs = storeJobs{}

// TestFinishingPromptIsRunning checks the window between the store
// finishing a prompt and the hub sending its end (PNG metadata, ComfyUI
// names, executed): the prompt is still running for /queue and not yet in
// /history, as ComfyUI keeps it in currently_running until task_done; a
// client that polls /queue then /history (the @saintno/comfyui-sdk
// CallWrapper on every status message) never finds it in neither, nor
// reads the worker's file names from /history.
func TestFinishingPromptIsRunning(t *testing.T) {
	st, err := job.Open(filepath.Join(t.TempDir(), "queue.db"), job.Config{}.WithDefaults(), clock.Real())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := &comfy{deps: Deps{Store: st, Jobs: storeJobs{st}, Clock: clock.Real(), Log: zerolog.Nop()}}
	c.hub = newHub(c)
	ctx := context.Background()
	if err := st.Submit(ctx, &job.Job{ID: "p1", Class: job.Interactive, Workflow: json.RawMessage(txt2img)}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Start("p1", "w0"); err != nil {
		t.Fatal(err)
	}
	done, err := st.Finish("p1", []job.Output{{Node: "9", Filename: "ComfyUI_00001_.png", Subfolder: "p1", Type: "output"}})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string, h http.HandlerFunc, pattern string) string {
		mux := http.NewServeMux()
		mux.HandleFunc(pattern, h)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Body.String()
	}
	check := func(finishing bool) {
		t.Helper()
		queue := get("/queue", c.getQueue, "GET /queue")
		one := get("/history/p1", c.getHistoryID, "GET /history/{id}")
		all := get("/history", c.getHistory, "GET /history")
		var q struct {
			Running [][]any `json:"queue_running"`
		}
		if err := json.Unmarshal([]byte(queue), &q); err != nil {
			t.Fatal(err)
		}
		running := len(q.Running) == 1 && q.Running[0][1] == "p1"
		inHistory := strings.Contains(one, `"p1"`) && strings.Contains(all, `"p1"`)
		if running != finishing || inHistory == finishing {
			t.Errorf("finishing %v: /queue %s, /history/p1 %s, /history %s; want it running xor in the history", finishing, queue, one, all)
		}
	}
	c.hub.setFinishing("p1", done)
	check(true)
	c.hub.setFinishing("p1", nil)
	check(false)
}
