package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// TestMain lets the completion test run this binary as kiln.
func TestMain(m *testing.M) {
	if os.Getenv("KILN_TEST_AS_KILN") == "1" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// runKiln runs one command line in-process and returns its exit status,
// stdout and stderr.
func runKiln(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var code int
	var stderr string
	stdout := captureStdout(func() {
		stderr = captureStderr(func() { code = run(args) })
	})
	return code, stdout, stderr
}

func captureStderr(f func()) string {
	r, w, err := os.Pipe()
	if err != nil {
		return ""
	}
	old := os.Stderr
	os.Stderr = w
	done := make(chan string)
	go func() {
		var b bytes.Buffer
		_, _ = b.ReadFrom(r)
		done <- b.String()
	}()
	f()
	os.Stderr = old
	w.Close()
	return <-done
}

func TestFlagsAnywhere(t *testing.T) {
	for _, args := range [][]string{
		{"--class", "batch", "FILE", "--wait"},
		{"FILE", "--class", "batch", "--wait"},
		{"--wait", "--class=batch", "FILE"},
		{"--class", "batch", "--wait", "--", "FILE"},
	} {
		fs := newFlags("submit", "")
		class := fs.String("class", "", "")
		wait := fs.Bool("wait", false, "")
		pos, err := fs.parse(args)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if *class != "batch" || !*wait || len(pos) != 1 || pos[0] != "FILE" {
			t.Errorf("%v: class %q wait %v pos %v", args, *class, *wait, pos)
		}
	}
	// "--" ends the flags: what follows is positional even if it looks like one.
	fs := newFlags("x", "")
	wait := fs.Bool("wait", false, "")
	pos, err := fs.parse([]string{"--", "--wait", "-f"})
	if err != nil || *wait || strings.Join(pos, " ") != "--wait -f" {
		t.Errorf("after --: wait %v pos %v err %v", *wait, pos, err)
	}
	// -o, --output, --output=, --json.
	for args, want := range map[string]string{"-o json": "json", "--output yaml": "yaml", "--output=json": "json", "--json": "json", "": "table"} {
		fs := newFlags("x", "")
		out := fs.output("table")
		if _, err := fs.parse(strings.Fields(args)); err != nil || out.format != want {
			t.Errorf("%q: format %q err %v, want %q", args, out.format, err, want)
		}
	}
	fs = newFlags("x", "")
	fs.output("table")
	if _, err := fs.parse([]string{"-o", "xml"}); err == nil {
		t.Error("-o xml: no error")
	} else if ue, ok := err.(*usageError); !ok || ue.ExitCode() != exitUsage {
		t.Errorf("-o xml: %T %v, want a usage error", err, err)
	}
}

func TestSubmitHonoursWaitAfterFile(t *testing.T) {
	// The example: --wait after FILE when a flag came before it.
	// A job that is done at once: submit --wait prints its outputs.
	srv := fakeKiln(t)
	wf := t.TempDir() + "/wf.json"
	os.WriteFile(wf, []byte(`{"3": {"class_type": "KSampler", "inputs": {"steps": 20}}}`), 0o644)
	code, out, errOut := runKiln(t, "submit", "--class", "batch", wf, "--wait", "--addr", srv.URL)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, srv.URL+"/view?filename=a.png") {
		t.Errorf("submit --wait did not wait and print the output URL:\nstdout %s\nstderr %s", out, errOut)
	}
	if strings.Contains(errOut, "\r") {
		t.Errorf("progress off a terminal has \\r: %q", errOut)
	}
}

// helpLines are every command and subcommand's --help.
var helpLines = [][]string{
	{"config", "print"}, {"config", "validate"}, {"jobs", "show"}, {"models", "list"}, {"models", "refresh"},
	{"models", "synth"}, {"policy", "load"}, {"policy", "list"}, {"policy", "test"}, {"experiment", "canary"},
	{"experiment", "list"}, {"experiment", "shadow"}, {"tune", "status"}, {"sim", "gen"}, {"sim", "bench"},
}

func TestHelpExitsZero(t *testing.T) {
	lines := append([][]string{}, helpLines...)
	for _, c := range commands {
		if !c.hidden {
			lines = append(lines, []string{c.name})
		}
	}
	singleDash := regexp.MustCompile(`(^|\s)-[a-z][a-z-]+`)
	for _, l := range lines {
		for _, h := range []string{"--help", "-h"} {
			code, out, errOut := runKiln(t, append(append([]string{}, l...), h)...)
			if code != 0 {
				t.Errorf("kiln %s %s: exit %d, stderr %q", strings.Join(l, " "), h, code, errOut)
			}
			if !strings.Contains(out, "usage") {
				t.Errorf("kiln %s %s: no usage on stdout: %q", strings.Join(l, " "), h, out)
			}
			if errOut != "" {
				t.Errorf("kiln %s %s: stderr %q", strings.Join(l, " "), h, errOut)
			}
			if m := singleDash.FindString(out); m != "" {
				t.Errorf("kiln %s %s: help spells a flag %q; want --flag", strings.Join(l, " "), h, strings.TrimSpace(m))
			}
		}
	}
	for _, args := range [][]string{{"--help"}, {"help"}, {"-h"}, {"help", "submit"}, {"help", "policy", "load"}} {
		if code, out, _ := runKiln(t, args...); code != 0 || !strings.Contains(out, "usage") {
			t.Errorf("kiln %v: exit %d", args, code)
		}
	}
	_, out, _ := runKiln(t, "--help")
	for _, want := range []string{"Exit status: 0 success; 1 failure", "2 usage", "-o/--output table|json|yaml", "completion"} {
		if !strings.Contains(out, want) {
			t.Errorf("kiln --help lacks %q", want)
		}
	}
}

func TestUsageErrorsSaidOnceExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{"jobs", "--bogus"}, {"submit"}, {"config", "frobnicate"}, {"nosuch"}, {"cancel"}, {"policy", "frob"},
		{"jobs", "-o", "xml"}, {"completion", "tcsh"}, {"experiment", "canary", "--kind"},
	} {
		code, out, errOut := runKiln(t, args...)
		if code != exitUsage {
			t.Errorf("kiln %v: exit %d, want 2 (stderr %q)", args, code, errOut)
		}
		if out != "" {
			t.Errorf("kiln %v: stdout %q", args, out)
		}
		first, _, _ := strings.Cut(errOut, "\n")
		if first == "" || strings.Count(errOut, first) != 1 {
			t.Errorf("kiln %v: the error is not said exactly once: %q", args, errOut)
		}
		if !strings.Contains(errOut, "--help") {
			t.Errorf("kiln %v: no pointer to --help: %q", args, errOut)
		}
	}
	if _, _, errOut := runKiln(t, "jobs", "--bogus"); !strings.Contains(errOut, "--bogus") {
		t.Errorf("the error names -bogus, not --bogus: %q", errOut)
	}
}

// goName matches a key that is a Go field name rather than a JSON one.
var jsonKey = regexp.MustCompile(`^[a-z0-9_]+$`)

// checkKeys fails on a key of v that is not lower_snake (a Go field name).
func checkKeys(t *testing.T, what string, v any) {
	t.Helper()
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if !jsonKey.MatchString(k) && !strings.Contains(k, "/") && !strings.Contains(k, ".") {
				t.Errorf("%s: key %q is not a JSON name", what, k)
			}
			checkKeys(t, what, e)
		}
	case []any:
		for _, e := range x {
			checkKeys(t, what, e)
		}
	}
}

func TestOutputJSONAndYAML(t *testing.T) {
	srv := fakeKiln(t)
	for _, args := range [][]string{
		{"jobs"}, {"jobs", "list"}, {"jobs", "show", "j1"}, {"jobs", "j1"}, {"jobs", "show", "j1", "j2"}, {"cancel", "j1"},
		{"devices"}, {"workers"}, {"models"}, {"models", "list"}, {"policy", "list"}, {"experiment", "list"},
		{"experiment", "show", "e1"}, {"tune", "status"}, {"logs", "j1"},
	} {
		for _, format := range []string{"json", "yaml"} {
			line := append(append([]string{}, args...), "-o", format, "--addr", srv.URL)
			code, out, errOut := runKiln(t, line...)
			if code != 0 {
				t.Errorf("kiln %v: exit %d: %s", line, code, errOut)
				continue
			}
			var v any
			var err error
			if format == "json" {
				err = json.Unmarshal([]byte(out), &v)
			} else {
				err = yaml.Unmarshal([]byte(out), &v)
			}
			if err != nil {
				t.Errorf("kiln %v: not %s: %v\n%s", line, format, err, out)
				continue
			}
			checkKeys(t, strings.Join(line, " "), v)
			if strings.Contains(out, "map[") {
				t.Errorf("kiln %v: Go map formatting:\n%s", line, out)
			}
		}
		// The table has no Go formatting either.
		code, out, errOut := runKiln(t, append(append([]string{}, args...), "--addr", srv.URL)...)
		if code != 0 || strings.Contains(out, "map[") {
			t.Errorf("kiln %v: exit %d, stdout:\n%s\nstderr %s", args, code, out, errOut)
		}
	}
	// --json is -o json.
	_, a, _ := runKiln(t, "jobs", "--json", "--addr", srv.URL)
	_, b, _ := runKiln(t, "jobs", "-o", "json", "--addr", srv.URL)
	if a != b || !strings.Contains(a, `"jobs"`) {
		t.Errorf("--json and -o json differ:\n%s\n%s", a, b)
	}
	// jobs show of one ID is an object; of two, an array.
	_, one, _ := runKiln(t, "jobs", "show", "j1", "-o", "json", "--addr", srv.URL)
	_, two, _ := runKiln(t, "jobs", "show", "j1", "j2", "-o", "json", "--addr", srv.URL)
	if !strings.HasPrefix(one, "{") || !strings.HasPrefix(two, "[") {
		t.Errorf("jobs show: one %q..., two %q...", one[:1], two[:1])
	}
	// The table of jobs counts states in words.
	_, table, _ := runKiln(t, "jobs", "--addr", srv.URL)
	if !strings.Contains(table, "jobs: 1 queued, 0 running, 2 done, 0 failed, 1 cancelled") {
		t.Errorf("jobs table:\n%s", table)
	}
	// version.
	if code, out, _ := runKiln(t, "version", "-o", "json"); code != 0 || !strings.Contains(out, `"go_version"`) {
		t.Errorf("version -o json: exit %d\n%s", code, out)
	}
	if code, out, _ := runKiln(t, "version"); code != 0 || !strings.HasPrefix(out, "kiln ") {
		t.Errorf("version: exit %d\n%s", code, out)
	}
	// config print: YAML by default, JSON on request.
	if code, out, _ := runKiln(t, "config", "print", "-o", "json"); code != 0 || !strings.Contains(out, `"data_dir"`) {
		t.Errorf("config print -o json: exit %d\n%.300s", code, out)
	}
	if code, out, _ := runKiln(t, "config", "print"); code != 0 || !strings.Contains(out, "data_dir:") {
		t.Errorf("config print: exit %d\n%.300s", code, out)
	}
}

func TestModelsSynthJSONNames(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runKiln(t, "models", "synth", "--dir", dir, "--from-workflows", "../../examples/workflows", "--scale", "0.00001", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var files []map[string]any
	if err := json.Unmarshal([]byte(out), &files); err != nil || len(files) == 0 {
		t.Fatalf("not a JSON array of files: %v\n%.500s", err, out)
	}
	if _, ok := files[0]["nominal_bytes"]; !ok || strings.Contains(out, "NominalBytes") {
		t.Errorf("models synth -o json: %v", files[0])
	}
	checkKeys(t, "models synth", []any{files[0]})
}

func TestCancel(t *testing.T) {
	srv := fakeKiln(t)
	code, out, errOut := runKiln(t, "cancel", "j1", "j3", "--addr", srv.URL)
	if code != 0 || out != "j1 cancelled\nj3 cancelled\n" {
		t.Errorf("cancel j1 j3 (queued; already cancelled): exit %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = runKiln(t, "cancel", "j2", "nosuch", "--addr", srv.URL)
	if code != exitFailure || !strings.Contains(errOut, "already done") || !strings.Contains(errOut, "nosuch") {
		t.Errorf("cancel of a done job and an unknown one: exit %d, %s", code, errOut)
	}
}

func TestVersion(t *testing.T) {
	bi := &debug.BuildInfo{Main: debug.Module{Path: "github.com/kiln-gpu/kiln", Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}}}
	if v := versionFrom("dev", bi); v.Version != "devel-0123456789ab-dirty" || !v.Dirty || v.Revision != "0123456789abcdef0123" {
		t.Errorf("plain go build: %+v", v)
	}
	bi.Main.Version = "v1.2.3"
	if v := versionFrom("dev", bi); v.Version != "v1.2.3" {
		t.Errorf("go install @v1.2.3: %+v", v)
	}
	if v := versionFrom("v9-3-gabc", bi); v.Version != "v9-3-gabc" {
		t.Errorf("-ldflags: %+v", v)
	}
	var b bytes.Buffer
	writeVersion(&b, versionFrom("dev", bi))
	if !strings.Contains(b.String(), "kiln v1.2.3 (revision 0123456789ab (modified)") {
		t.Errorf("kiln version: %q", b.String())
	}
}

func TestProgress(t *testing.T) {
	steps := workflowSteps([]byte(`{"workflow": {"3": {"inputs": {"steps": 20}}, "10": {"inputs": {"steps": 10}}, "4": {"inputs": {"ckpt_name": "x"}}}}`))
	if len(steps) != 2 || steps["3"] != 20 || steps["10"] != 10 {
		t.Fatalf("steps %v", steps)
	}
	p := newProgress(steps)
	t0 := time.Unix(1000, 0)
	run := func(node string, v, m int) jobView {
		return jobView{State: "running", Progress: &jobProgress{Phase: "running", Node: node, Value: v, Max: m}}
	}
	p.update(run("3", 1, 20), t0)
	p.update(run("3", 11, 20), t0.Add(10*time.Second))
	if f, _ := p.fraction(); f != 11.0/30 {
		t.Errorf("fraction %v, want 11/30", f)
	}
	// 10 steps in 10 s: the 19 left take 19 s.
	if eta, ok := p.eta(t0.Add(10 * time.Second)); !ok || eta != 19*time.Second {
		t.Errorf("eta %v %v", eta, ok)
	}
	p.update(run("10", 5, 10), t0.Add(20*time.Second))
	if f, _ := p.fraction(); f != 25.0/30 {
		t.Errorf("after the first sampler: fraction %v, want 25/30", f)
	}
	line := p.line(run("10", 5, 10), 22*time.Second, t0.Add(20*time.Second))
	for _, want := range []string{"83%", "25/30 steps", "elapsed 0:22", "ETA 0:0"} {
		if !strings.Contains(line, want) {
			t.Errorf("line %q lacks %q", line, want)
		}
	}
	if clockDuration(3723*time.Second) != "1:02:03" || clockDuration(75*time.Second) != "1:15" {
		t.Error("clockDuration")
	}
}

func TestPlainProgressLines(t *testing.T) {
	srv := fakeKiln(t)
	var b bytes.Buffer
	w := newWaiter(newClient(srv.URL), "slow", &b, []byte(`{"workflow": {"3": {"inputs": {"steps": 4}}}}`))
	w.poll = time.Millisecond
	j, err := w.wait()
	if err != nil || j.State != "done" {
		t.Fatalf("%v %v", j.State, err)
	}
	out := b.String()
	if strings.Contains(out, "\r") || strings.Contains(out, "\033") {
		t.Errorf("plain lines have terminal escapes: %q", out)
	}
	if !strings.Contains(out, "done [") || !strings.Contains(out, "100%") || !strings.Contains(out, "elapsed") {
		t.Errorf("plain lines:\n%s", out)
	}
	if n := strings.Count(out, "\n"); n > 8 {
		t.Errorf("%d lines for a 4-step job:\n%s", n, out)
	}
}

func TestCompletion(t *testing.T) {
	has := func(list []string, s string) bool { return contains(list, s) }
	if c := completions(nil, "s"); !has(c, "serve") || !has(c, "submit") || !has(c, "sim") || has(c, "jobs") {
		t.Errorf("commands: %v", c)
	}
	if c := completions([]string{"submit"}, "--"); !has(c, "--wait") || !has(c, "--cancel-on-interrupt") || !has(c, "--output") {
		t.Errorf("submit flags: %v", c)
	}
	if c := completions([]string{"policy"}, ""); !has(c, "load") || !has(c, "list") {
		t.Errorf("policy subcommands: %v", c)
	}
	if c := completions([]string{"policy", "load"}, "--k"); !has(c, "--kind") {
		t.Errorf("policy load flags: %v", c)
	}
	if c := completions([]string{"jobs", "-o"}, ""); !has(c, "json") || !has(c, "yaml") {
		t.Errorf("-o values: %v", c)
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		code, out, _ := runKiln(t, "completion", sh)
		if code != 0 || !strings.Contains(out, "__complete") {
			t.Errorf("completion %s: exit %d\n%s", sh, code, out)
		}
	}
	// The bash script, in bash, with this test binary as kiln.
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash: the script itself is not run")
	}
	self, _ := os.Executable()
	script := `source /dev/stdin <<< "$(KILN_TEST_AS_KILN=1 "$KILN" completion bash)"
COMP_WORDS=("$KILN" submit --ca); COMP_CWORD=2; _kiln; echo "${COMPREPLY[*]}"
COMP_WORDS=("$KILN" exp); COMP_CWORD=1; _kiln; echo "${COMPREPLY[*]}"`
	cmd := exec.Command(bash, "-c", script)
	cmd.Env = append(os.Environ(), "KILN="+self, "KILN_TEST_AS_KILN=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--cancel-on-interrupt") || !strings.Contains(string(out), "experiment") {
		t.Errorf("bash completion: %v\n%s", err, out)
	}
}

// fakeKiln serves the /v1 routes the CLI reads, with fixed answers: jobs
// j1 (queued), j2 (done, one output), j3 (cancelled), and "slow", which
// runs 4 steps over successive GETs.
func fakeKiln(t *testing.T) *httptest.Server {
	t.Helper()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	later := now.Add(3 * time.Second)
	errS := "boom"
	_ = errS
	jobs := map[string]*jobView{
		"j1": {ID: "j1", State: "queued", Class: "batch", Models: []string{"checkpoints/a.safetensors"}, CreatedAt: &now, Outputs: []jobOutput{}},
		"j2": {ID: "j2", State: "done", Class: "interactive", Attempts: 1, Models: []string{}, CreatedAt: &now, StartedAt: &now, FinishedAt: &later,
			Worker: "w0.0", Outputs: []jobOutput{{Filename: "a.png", Subfolder: "j2", Type: "output"}}},
		"j3": {ID: "j3", State: "cancelled", Class: "batch", Models: []string{}, CreatedAt: &now, Outputs: []jobOutput{}},
	}
	slow := 0
	write := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(v)
	}
	notFound := func(w http.ResponseWriter, id string) {
		write(w, 404, map[string]any{"error": map[string]any{"type": "job_not_found", "message": "job " + id + " not found"}})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		write(w, 200, map[string]any{"jobs": []*jobView{jobs["j1"], jobs["j2"], jobs["j3"]},
			"counts": map[string]int{"queued": 1, "running": 0, "done": 2, "failed": 0, "cancelled": 1}})
	})
	mux.HandleFunc("POST /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		write(w, 202, map[string]any{"id": "j2", "state": "queued"})
	})
	mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if id == "slow" {
			slow++
			j := jobView{ID: "slow", State: "running", Class: "batch", Outputs: []jobOutput{},
				Progress: &jobProgress{Phase: "running", Node: "3", Value: min(slow, 4), Max: 4}}
			if slow > 5 {
				j.State, j.Progress = "done", nil
			}
			write(w, 200, j)
			return
		}
		j, ok := jobs[id]
		if !ok {
			notFound(w, id)
			return
		}
		write(w, 200, j)
	})
	mux.HandleFunc("DELETE /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		j, ok := jobs[id]
		switch {
		case !ok:
			notFound(w, id)
		case j.terminal():
			write(w, 409, map[string]any{"error": map[string]any{"type": "invalid_state", "message": "job is " + j.State}})
		default:
			c := *j
			c.State = "cancelled"
			write(w, 200, c)
		}
	})
	mux.HandleFunc("GET /v1/devices", func(w http.ResponseWriter, r *http.Request) {
		write(w, 200, map[string]any{"devices": []map[string]any{{"index": 0, "name": "sim-gpu-0", "backend": "sim", "simulated": true,
			"memory_total": 24 << 30, "memory_used": nil, "reserved": 1 << 30, "usable": 20 << 30, "degraded": false}}})
	})
	mux.HandleFunc("GET /v1/workers", func(w http.ResponseWriter, r *http.Request) {
		write(w, 200, map[string]any{"workers": []map[string]any{{"id": "w0.0", "device": 0, "device_name": "sim-gpu-0", "state": "ready",
			"pid": 42, "generation": 1, "jobs_done": 3, "restarts": 0, "resident": map[string]int64{"checkpoints/a.safetensors": 1 << 30}}}})
	})
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		write(w, 200, map[string]any{"models": []map[string]any{{"id": "checkpoints/a.safetensors", "bytes": 1 << 20, "vram_bytes": 1 << 30,
			"format": "safetensors", "family": "sd15", "component": "checkpoint", "backend": "fs"}}})
	})
	mux.HandleFunc("GET /v1/policies", func(w http.ResponseWriter, r *http.Request) {
		write(w, 200, map[string]any{"policies": []map[string]any{{"kind": "eviction", "active": "lru@1", "builtins": []string{"lru"},
			"versions": []map[string]any{{"kind": "eviction", "name": "lru", "version": 1, "source": "builtin", "active": true,
				"loaded_at": now, "params": map[string]float64{"x": 1}}}}}})
	})
	mux.HandleFunc("GET /v1/experiments", func(w http.ResponseWriter, r *http.Request) {
		write(w, 200, map[string]any{"experiments": []map[string]any{{"id": "e1", "type": "canary", "kind": "eviction", "candidate": "lfu@1",
			"baseline": "lru@1", "state": "running", "step": 1, "share": 5, "started_at": now}}})
	})
	mux.HandleFunc("GET /v1/experiments/{id}", func(w http.ResponseWriter, r *http.Request) {
		write(w, 200, map[string]any{"id": "e1", "spec": map[string]any{"type": "canary", "kind": "eviction", "policy": "lfu"},
			"state": "running", "candidate": "lfu@1", "baseline": "lru@1", "started_at": now})
	})
	mux.HandleFunc("GET /v1/tune", func(w http.ResponseWriter, r *http.Request) {
		write(w, 200, map[string]any{"auto": false, "running": false, "runs": []any{}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}
