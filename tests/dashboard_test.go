package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// dashboardPages are the dashboard's pages (its #fragments), in the order
// the screenshots are taken.
var dashboardPages = []string{"overview", "gpus", "tiers", "workers", "policies", "experiments"}

// chromium finds Debian's chromium (.ci/run installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("skip: the dashboard's browser test needs chromium (apt-get install chromium; .ci/run installs it)")
	return ""
}

// TestDashboardInBrowser opens kiln's dashboard in a real headless
// chromium while kiln runs jobs and a canary: every page loads with no
// console error, no uncaught exception and no failed request, and the
// numbers the page shows are the API's. With DASHBOARD_SCREENSHOTS=DIR (make
// screenshots) it writes DIR/<page>.png of each page.
func TestDashboardInBrowser(t *testing.T) {
	browser := chromium(t)
	shots := os.Getenv("DASHBOARD_SCREENSHOTS")
	dataDir := t.TempDir()
	k := startKiln(t, dataDir, "cost.time_scale=0.05", "workers.per_device=2", "limits.max_steps=9000")

	// Traffic: short jobs, then a canary that decides on the jobs that
	// follow, and one long job that is still running for the pictures.
	for i := 0; i < 4; i++ {
		k.submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 4, i), "batch")
	}
	spec, _ := json.Marshal(map[string]any{"kind": "scheduling", "policy": "edf", "type": "canary", "steps": []int{50, 100},
		"step_duration": "1s", "min_samples": 4, "deadline": "5m", "guards": []string{"faults==0"}})
	if code, data := k.admin("POST", "/v1/experiments", spec); code != http.StatusCreated {
		t.Fatalf("start a canary: HTTP %d: %s", code, data)
	}
	var ids []string
	for i := 0; i < 8; i++ {
		class := []string{"batch", "interactive"}[i%2]
		ids = append(ids, k.submit(loadWorkflow(t, "comfyui__tests_inference_graphs_default_graph_sdxl1_0.api.json", 3, 10+i), class))
	}
	waitFor(t, 60*time.Second, "the first jobs to finish", func() bool {
		for _, id := range ids {
			if s := k.job(id).State; s == "queued" || s == "running" {
				return false
			}
		}
		return true
	})
	long := k.submit(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 9000, 99), "interactive")
	waitFor(t, 20*time.Second, "the long job's progress", func() bool {
		j := k.job(long)
		return j.State == "running" && j.Progress != nil && j.Progress.Value > 0
	})

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1440, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	// The browser lives as long as this context: the whole test's bound.
	ctx, cancelCtx := chromedp.NewContext(actx)
	defer cancelCtx()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()

	var mu sync.Mutex
	var problems []string
	err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range e.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				problems = append(problems, "console."+string(e.Type)+": "+strings.Join(args, " "))
			}
		case *runtime.EventExceptionThrown:
			d := e.ExceptionDetails
			what := d.Text
			if d.Exception != nil {
				what += " " + d.Exception.Description
			}
			problems = append(problems, fmt.Sprintf("uncaught: %s at %s:%d", what, d.URL, d.LineNumber))
		case *log.EventEntryAdded:
			// Failed requests, CSP violations and the like.
			if e.Entry.Level == log.EntryLevelError {
				problems = append(problems, "log: "+e.Entry.Text+" "+e.Entry.URL)
			}
		}
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}

	for _, page := range dashboardPages {
		err := chromedp.Do(ctx,
			chromedp.Navigate(k.base+"/#"+page),
			chromedp.WaitVisible(chromedp.CSS("#page-"+page+".active")))
		if err == nil {
			// Rendered: the page holds its tables (or its notes).
			_, err = chromedp.Run(ctx, chromedp.Poll[int](fmt.Sprintf(`document.querySelectorAll("#page-%s table, #page-%s .empty").length`, page, page),
				chromedp.WithPollingTimeout(15*time.Second)))
		}
		if err != nil {
			t.Fatalf("page %s: %v", page, err)
		}
		if shots != "" {
			// Let the charts and the live progress draw once more.
			if err := chromedp.Do(ctx, chromedp.Sleep(2500*time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatalf("screenshot %s: %v", page, err)
			}
			if err := os.MkdirAll(shots, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(shots, page+".png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The page's numbers are the API's. The page redraws every 2 s and
	// the long job moves on meanwhile, so compare until they agree.
	var last string
	compared := 0
	waitFor(t, 20*time.Second, "the page's numbers to match the API", func() bool {
		shown, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](
			`Object.fromEntries([...document.querySelectorAll("[data-k]")].map(e => [e.dataset.k, e.dataset.v ?? e.textContent]))`))
		if err != nil {
			t.Fatalf("read the page: %v", err)
		}
		want := dashboardWant(t, k)
		var diffs []string
		for key, v := range want {
			if shown[key] != v {
				diffs = append(diffs, fmt.Sprintf("%s: page %q, API %q", key, shown[key], v))
			}
		}
		last, compared = strings.Join(diffs, "; "), len(want)
		return len(diffs) == 0
	})
	if compared < 30 {
		t.Errorf("only %d numbers compared", compared)
	}

	// The running job's bar moves without a reload: progress arrives over
	// the event stream (and the 2 s refresh).
	sel := fmt.Sprintf(`document.querySelector('tr[data-job="%s"] td.num')?.textContent`, long)
	if err := chromedp.Do(ctx, chromedp.Navigate(k.base+"/#overview")); err != nil {
		t.Fatal(err)
	}
	first, err := chromedp.Run(ctx, chromedp.Poll[string](sel, chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil {
		t.Fatalf("the running job is not on the overview: %v", err)
	}
	waitFor(t, 15*time.Second, "the running job's progress to move", func() bool {
		later, err := chromedp.Run(ctx, chromedp.Evaluate[string](sel))
		if err != nil {
			t.Fatal(err)
		}
		return later != first
	})
	if _, err := chromedp.Run(ctx, chromedp.Poll[string](`document.getElementById("status").textContent.startsWith("live") && document.getElementById("status").textContent`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Errorf("the page never said it was live: %v (last numbers compared: %s)", err, last)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Errorf("the browser reported:\n%s", strings.Join(problems, "\n"))
	}
}

// dashboardWant reads, from the API, the numbers the page shows under
// data-k keys.
func dashboardWant(t *testing.T, k *kilnProc) map[string]string {
	t.Helper()
	get := func(path string, v any) {
		code, data := k.do("GET", path, nil)
		if code != 200 {
			t.Fatalf("GET %s: HTTP %d: %s", path, code, data)
		}
		if err := json.Unmarshal(data, v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	want := map[string]string{}
	itoa := func(n int64) string { return strconv.FormatInt(n, 10) }

	var dash struct {
		Queue  map[string]map[string]int64
		Counts map[string]int64
	}
	get("/v1/dashboard", &dash)
	for class, states := range dash.Queue {
		for state, n := range states {
			want["queue."+class+"."+state] = itoa(n)
		}
	}
	var jobs struct{ Counts map[string]int64 }
	get("/v1/jobs?limit=1", &jobs)
	for state, n := range jobs.Counts {
		want["counts."+state] = itoa(n)
	}
	var devs struct {
		Devices []struct {
			Index            int
			Reserved, Usable int64
			MemoryTotal      int64 `json:"memory_total"`
		}
	}
	get("/v1/devices", &devs)
	for _, d := range devs.Devices {
		p := "device." + strconv.Itoa(d.Index) + "."
		want[p+"reserved"], want[p+"usable"], want[p+"total"] = itoa(d.Reserved), itoa(d.Usable), itoa(d.MemoryTotal)
	}
	var tiers struct {
		Tiers []struct {
			Name                             string
			Entries, Hits, Misses, Evictions int64
			UsedBytes                        int64 `json:"used_bytes"`
			CapacityBytes                    int64 `json:"capacity_bytes"`
		}
	}
	get("/v1/tiers", &tiers)
	for _, tr := range tiers.Tiers {
		p := "tier." + tr.Name + "."
		want[p+"used_bytes"], want[p+"capacity_bytes"], want[p+"entries"] = itoa(tr.UsedBytes), itoa(tr.CapacityBytes), itoa(tr.Entries)
		want[p+"hits"], want[p+"misses"], want[p+"evictions"] = itoa(tr.Hits), itoa(tr.Misses), itoa(tr.Evictions)
	}
	var ws struct {
		Workers []struct {
			ID       string
			JobsDone int64 `json:"jobs_done"`
			Restarts int64
		}
	}
	get("/v1/workers", &ws)
	for _, w := range ws.Workers {
		want["worker."+w.ID+".jobs_done"], want["worker."+w.ID+".restarts"] = itoa(w.JobsDone), itoa(w.Restarts)
	}
	var pol struct {
		Policies []struct {
			Kind     string
			Versions []struct {
				Name          string
				Version       int64
				Calls, Faults int64
			}
		}
	}
	get("/v1/policies", &pol)
	for _, p := range pol.Policies {
		for _, v := range p.Versions {
			key := "policy." + p.Kind + "." + v.Name + "@" + itoa(v.Version) + "."
			want[key+"calls"], want[key+"faults"] = itoa(v.Calls), itoa(v.Faults)
		}
	}
	var ex struct {
		Experiments []struct {
			ID              string
			Step, Decisions int64
		}
	}
	get("/v1/experiments", &ex)
	for _, e := range ex.Experiments {
		want["experiment."+e.ID+".step"], want["experiment."+e.ID+".decisions"] = itoa(e.Step), itoa(e.Decisions)
	}
	return want
}
