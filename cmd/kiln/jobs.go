package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kiln-gpu/kiln/internal/worker"
)

// jobOutput is one output file of a job; URL and Path are the CLI's, not
// the API's: where to fetch it (/view) and, when kiln's output directory
// is known here, where it lies.
type jobOutput struct {
	Filename  string `json:"filename"`
	Subfolder string `json:"subfolder"`
	Type      string `json:"type"`
	URL       string `json:"url,omitempty"`
	Path      string `json:"path,omitempty"`
}

// jobProgress mirrors the API's progress of a running job.
type jobProgress struct {
	Phase string `json:"phase"`
	Node  string `json:"node,omitempty"`
	Value int    `json:"value"`
	Max   int    `json:"max"`
}

// jobView mirrors the API's job answer.
type jobView struct {
	ID         string       `json:"id"`
	State      string       `json:"state"`
	Class      string       `json:"class"`
	Attempts   int          `json:"attempts"`
	Models     []string     `json:"models"`
	DeadlineMS int64        `json:"deadline_ms,omitempty"`
	CreatedAt  *time.Time   `json:"created_at"`
	StartedAt  *time.Time   `json:"started_at"`
	FinishedAt *time.Time   `json:"finished_at"`
	Worker     string       `json:"worker,omitempty"`
	Node       string       `json:"node,omitempty"`
	Outputs    []jobOutput  `json:"outputs"`
	Error      *string      `json:"error"`
	Progress   *jobProgress `json:"progress,omitempty"`
}

func (j jobView) terminal() bool {
	return j.State == "done" || j.State == "failed" || j.State == "cancelled"
}

// jobList is GET /v1/jobs: the jobs and the count of every state.
type jobList struct {
	Jobs   []jobView      `json:"jobs"`
	Counts map[string]int `json:"counts"`
}

// submitBody turns a file into a POST /v1/jobs body: either the file is a
// bare API-format workflow, or it is already {"workflow": ...}.
func submitBody(data []byte, class string, deadlineMS int64) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	body := map[string]any{}
	if wf, ok := top["workflow"]; ok {
		for k, v := range top {
			body[k] = v
		}
		body["workflow"] = wf
	} else if p, ok := top["prompt"]; ok {
		body["workflow"] = p // a ComfyUI /prompt body
	} else {
		body["workflow"] = json.RawMessage(data)
	}
	if class != "" {
		body["class"] = class
	}
	if deadlineMS > 0 {
		body["deadline_ms"] = deadlineMS
	}
	return json.Marshal(body)
}

const addrUsage = "kiln's `URL` (default $KILN_ADDR, else http://127.0.0.1:8188)"

const submitHelp = `usage: kiln submit FILE [flags]

Submits the API-format workflow in FILE (a bare workflow, a {"workflow": ...}
body, or a ComfyUI /prompt body) and prints the job's ID. With --wait it
shows the job's overall progress, elapsed time and ETA (one line redrawn on
a terminal, plain lines otherwise), then prints each output as a URL and,
when kiln's output directory is on this machine, an absolute path; the
exit status is 1 when the job failed or was cancelled.

Ctrl-C during --wait asks whether to cancel the job (on a terminal; with
--cancel-on-interrupt it cancels without asking; otherwise it leaves the
job running and says how to cancel it) and exits 130.
`

func cmdSubmit(args []string) error {
	fs := newFlags("submit", submitHelp)
	class := fs.String("class", "", "priority `CLASS`: interactive or batch (default interactive)")
	deadline := fs.Int64("deadline-ms", 0, "deadline in milliseconds after submission")
	wait := fs.Bool("wait", false, "wait for the job to finish, showing progress")
	cancelOnInt := fs.Bool("cancel-on-interrupt", false, "with --wait: Ctrl-C cancels the job without asking")
	outDir := fs.String("output-dir", "", "kiln's output `DIR`, to print absolute paths (default: output_dir or <data_dir>/output of the config, when it exists here)")
	addr := fs.String("addr", "", addrUsage)
	var cf configFlags
	cf.register(fs.FlagSet)
	out := fs.output("table")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("submit", "want exactly one workflow FILE, got %d arguments", len(pos))
	}
	file := pos[0]
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	body, err := submitBody(data, *class, *deadline)
	if err != nil {
		return fmt.Errorf("submit %s: %w", file, err)
	}
	c := newClient(*addr)
	var acc struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if err := c.do(context.Background(), http.MethodPost, "/v1/jobs", body, &acc); err != nil {
		return err
	}
	if !*wait {
		return out.print(acc, func(w io.Writer) error { _, err := fmt.Fprintln(w, acc.ID); return err })
	}
	fmt.Fprintf(os.Stderr, "job %s %s\n", acc.ID, acc.State)
	w := newWaiter(c, acc.ID, os.Stderr, body)
	w.cancelOnInterrupt = *cancelOnInt
	j, err := w.wait()
	if err != nil {
		return err
	}
	dir := *outDir
	if dir == "" {
		dir = cf.outputDir()
	}
	resolveOutputs(c, &j, dir)
	if err := out.print(j, func(w io.Writer) error { return writeOutputs(w, j) }); err != nil {
		return err
	}
	if j.State != "done" {
		msg := "job " + j.ID + " " + j.State
		if j.Error != nil {
			msg += ": " + *j.Error
		}
		return &exitError{code: exitFailure, msg: msg}
	}
	return nil
}

// outputDir is kiln's output directory as the config here describes it,
// absolute; "" when it cannot be told.
func (c *configFlags) outputDir() string {
	cfg, err := c.load()
	if err != nil {
		return ""
	}
	dir := cfg.OutputDir
	if dir == "" {
		dir = filepath.Join(cfg.DataDir, "output")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	if st, err := os.Stat(abs); err != nil || !st.IsDir() {
		return ""
	}
	return abs
}

// resolveOutputs fills each output's URL (GET /view on kiln) and, when the
// file is found under dir, its absolute path.
func resolveOutputs(c *client, j *jobView, dir string) {
	for i := range j.Outputs {
		o := &j.Outputs[i]
		typ := o.Type
		if typ == "" {
			typ = "output"
		}
		q := url.Values{"filename": {o.Filename}, "type": {typ}}
		if o.Subfolder != "" {
			q.Set("subfolder", o.Subfolder)
		}
		o.URL = c.base + "/view?" + q.Encode()
		if dir != "" && typ != "input" {
			p := filepath.Join(dir, filepath.FromSlash(o.Subfolder), o.Filename)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				o.Path = p
			}
		}
	}
}

func writeOutputs(w io.Writer, j jobView) error {
	if len(j.Outputs) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "OUTPUT\tURL\tPATH")
	for _, o := range j.Outputs {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", path(o.Subfolder, o.Filename), o.URL, dash(o.Path))
	}
	return tw.Flush()
}

func path(subfolder, name string) string {
	if subfolder == "" {
		return name
	}
	return subfolder + "/" + name
}

const jobsHelp = `usage: kiln jobs [list] [--state S] [--limit N] [flags]
       kiln jobs show ID... [flags]
       kiln jobs ID...            (the same as jobs show)

Lists the newest jobs with their class, state, attempts, worker, latency
and models, then the number of jobs in each state; show prints jobs whole.
-o json prints {"jobs": [...], "counts": {...}} (list) or the job (show:
one object for one ID, an array for several).
`

func cmdJobs(args []string) error {
	fs := newFlags("jobs", jobsHelp)
	state := fs.String("state", "", "only jobs in this `STATE`: queued, running, done, failed or cancelled")
	limit := fs.Int("limit", 50, "at most this many jobs")
	addr := fs.String("addr", "", addrUsage)
	out := fs.output("table")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 && pos[0] == "list" {
		pos = pos[1:]
		if len(pos) > 0 {
			return usagef("jobs", "list takes no arguments, got %q", pos[0])
		}
	}
	c := newClient(*addr)
	if len(pos) > 0 {
		if pos[0] == "show" {
			pos = pos[1:]
		}
		if len(pos) == 0 {
			return usagef("jobs", "show: want one or more job IDs")
		}
		return showJobs(c, pos, out)
	}
	var list jobList
	path := fmt.Sprintf("/v1/jobs?limit=%d", *limit)
	if *state != "" {
		path += "&state=" + url.QueryEscape(*state)
	}
	if err := c.do(context.Background(), http.MethodGet, path, nil, &list); err != nil {
		return err
	}
	if list.Jobs == nil {
		list.Jobs = []jobView{}
	}
	return out.print(list, func(w io.Writer) error { return writeJobs(w, list) })
}

var jobStates = []string{"queued", "running", "done", "failed", "cancelled"}

func writeJobs(w io.Writer, list jobList) error {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCLASS\tSTATE\tATTEMPTS\tWORKER\tLATENCY\tMODELS")
	for _, j := range list.Jobs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", j.ID, j.Class, j.State, j.Attempts, dash(j.Worker), latency(j), dash(strings.Join(j.Models, ",")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var parts []string
	seen := map[string]bool{}
	for _, s := range jobStates {
		seen[s] = true
		parts = append(parts, fmt.Sprintf("%d %s", list.Counts[s], s))
	}
	var other []string
	for s := range list.Counts {
		if !seen[s] {
			other = append(other, s)
		}
	}
	sort.Strings(other)
	for _, s := range other {
		parts = append(parts, fmt.Sprintf("%d %s", list.Counts[s], s))
	}
	_, err := fmt.Fprintf(w, "\njobs: %s\n", strings.Join(parts, ", "))
	return err
}

func latency(j jobView) string {
	if j.FinishedAt != nil && j.CreatedAt != nil {
		return j.FinishedAt.Sub(*j.CreatedAt).Round(time.Millisecond).String()
	}
	return "-"
}

func getJob(ctx context.Context, c *client, id string) (jobView, error) {
	var j jobView
	err := c.do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id), nil, &j)
	return j, err
}

func showJobs(c *client, ids []string, out *output) error {
	var jobs []jobView
	for _, id := range ids {
		j, err := getJob(context.Background(), c, id)
		if err != nil {
			return fmt.Errorf("job %s: %w", id, err)
		}
		resolveOutputs(c, &j, "")
		jobs = append(jobs, j)
	}
	var v any = jobs
	if len(jobs) == 1 {
		v = jobs[0]
	}
	return out.print(v, func(w io.Writer) error {
		for i, j := range jobs {
			if i > 0 {
				fmt.Fprintln(w)
			}
			if err := writeJob(w, j); err != nil {
				return err
			}
		}
		return nil
	})
}

// writeJob prints one job, a field a line.
func writeJob(w io.Writer, j jobView) error {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("id", j.ID)
	row("state", j.State)
	row("class", j.Class)
	row("attempts", fmt.Sprint(j.Attempts))
	row("worker", dash(j.Worker))
	row("models", dash(strings.Join(j.Models, ", ")))
	if j.DeadlineMS > 0 {
		row("deadline", (time.Duration(j.DeadlineMS) * time.Millisecond).String())
	}
	row("created", timeOrDash(j.CreatedAt))
	row("started", timeOrDash(j.StartedAt))
	row("finished", timeOrDash(j.FinishedAt))
	row("latency", latency(j))
	if j.Progress != nil {
		row("progress", fmt.Sprintf("%s %d/%d (node %s)", j.Progress.Phase, j.Progress.Value, j.Progress.Max, dash(j.Progress.Node)))
	}
	if j.Error != nil {
		row("error", *j.Error)
	}
	for _, o := range j.Outputs {
		row("output", o.URL)
	}
	return tw.Flush()
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05.000")
}

const cancelHelp = `usage: kiln cancel ID... [flags]

Cancels queued or running jobs (DELETE /v1/jobs/ID) and prints each one's
state. A job that was already cancelled is not an error; one that already
finished, or an unknown ID, is (exit status 1, after trying every ID).
`

func cmdCancel(args []string) error {
	fs := newFlags("cancel", cancelHelp)
	addr := fs.String("addr", "", addrUsage)
	out := fs.output("table")
	ids, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return usagef("cancel", "want one or more job IDs")
	}
	c := newClient(*addr)
	type result struct {
		ID    string `json:"id"`
		State string `json:"state"`
		Error string `json:"error,omitempty"`
	}
	var results []result
	failed := 0
	for _, id := range ids {
		var j jobView
		err := c.do(context.Background(), http.MethodDelete, "/v1/jobs/"+url.PathEscape(id), nil, &j)
		var ae *apiError
		if errors.As(err, &ae) && ae.Status == http.StatusConflict {
			// Finished already: cancelled is what was asked.
			if cur, gerr := getJob(context.Background(), c, id); gerr == nil {
				j, err = cur, nil
				if cur.State != "cancelled" {
					err = fmt.Errorf("already %s", cur.State)
				}
			}
		}
		r := result{ID: id, State: j.State}
		if err != nil {
			r.Error = err.Error()
			failed++
		}
		results = append(results, r)
	}
	if err := out.print(results, func(w io.Writer) error {
		for _, r := range results {
			if r.Error != "" {
				fmt.Fprintf(os.Stderr, "kiln: cancel %s: %s\n", r.ID, r.Error)
				continue
			}
			fmt.Fprintf(w, "%s %s\n", r.ID, r.State)
		}
		return nil
	}); err != nil {
		return err
	}
	if failed > 0 {
		return &exitError{code: exitFailure, msg: ""}
	}
	return nil
}

const logsHelp = `usage: kiln logs ID [--follow] [flags]

Prints a job's timeline: submitted, started (worker, attempt), progress,
and how it ended, with its error or outputs. --follow (-f) keeps printing
its progress until it ends; the exit status is then 1 when it failed.
`

func cmdLogs(args []string) error {
	fs := newFlags("logs", logsHelp)
	addr := fs.String("addr", "", addrUsage)
	follow := fs.Bool("follow", false, "follow the job until it ends")
	fs.alias("f", "follow")
	out := fs.output("table")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("logs", "want exactly one job ID")
	}
	c := newClient(*addr)
	j, err := getJob(context.Background(), c, pos[0])
	if err != nil {
		return err
	}
	if *follow && !j.terminal() {
		if !out.structured() {
			writeTimeline(os.Stdout, j, false)
		}
		w := newWaiter(c, j.ID, os.Stdout, nil)
		w.tty = false // a log: plain lines
		if j, err = w.wait(); err != nil {
			return err
		}
		resolveOutputs(c, &j, "")
		if err := out.print(j, func(w io.Writer) error { writeTimeline(w, j, true); return nil }); err != nil {
			return err
		}
		if j.State != "done" {
			return &exitError{code: exitFailure, msg: ""}
		}
		return nil
	}
	resolveOutputs(c, &j, "")
	return out.print(j, func(w io.Writer) error { writeTimeline(w, j, false); writeTimeline(w, j, true); return nil })
}

// writeTimeline prints the start of a job's timeline (submitted, started)
// or, with end, its end (progress while running, or how it finished).
func writeTimeline(w io.Writer, j jobView, end bool) {
	at := func(t *time.Time) string {
		if t == nil {
			return strings.Repeat(" ", 23)
		}
		return t.Local().Format("2006-01-02 15:04:05.000")
	}
	if !end {
		fmt.Fprintf(w, "%s  submitted  %s job %s, models %s\n", at(j.CreatedAt), j.Class, j.ID, dash(strings.Join(j.Models, ", ")))
		if j.StartedAt != nil {
			fmt.Fprintf(w, "%s  started    on %s (attempt %d)\n", at(j.StartedAt), dash(j.Worker), j.Attempts)
		}
		return
	}
	switch {
	case !j.terminal():
		line := j.State
		if j.Progress != nil {
			line += fmt.Sprintf(": %s %d/%d (node %s)", j.Progress.Phase, j.Progress.Value, j.Progress.Max, dash(j.Progress.Node))
		}
		fmt.Fprintf(w, "%s  %s\n", at(nil), line)
	default:
		line := fmt.Sprintf("%-9s  after %s", j.State, latency(j))
		if j.Error != nil {
			line += ": " + *j.Error
		}
		fmt.Fprintf(w, "%s  %s\n", at(j.FinishedAt), line)
		for _, o := range j.Outputs {
			fmt.Fprintf(w, "%s  output     %s\n", at(j.FinishedAt), o.URL)
		}
	}
}

const workersHelp = `usage: kiln workers [flags]

Lists kiln's worker processes (GET /v1/workers).
`

func cmdWorkers(args []string) error {
	fs := newFlags("workers", workersHelp)
	addr := fs.String("addr", "", addrUsage)
	out := fs.output("table")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("workers", "unexpected argument %q", pos[0])
	}
	var list struct {
		Workers []worker.Info `json:"workers"`
	}
	if err := newClient(*addr).do(context.Background(), http.MethodGet, "/v1/workers", nil, &list); err != nil {
		return err
	}
	if list.Workers == nil {
		list.Workers = []worker.Info{}
	}
	return out.print(list, func(w io.Writer) error { return writeWorkers(w, list.Workers) })
}

func writeWorkers(w io.Writer, workers []worker.Info) error {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tDEVICE\tSTATE\tPID\tJOBS\tRESTARTS\tRESIDENT\tLAST ERROR")
	for _, wk := range workers {
		res := make([]string, 0, len(wk.Resident))
		for m := range wk.Resident {
			res = append(res, m)
		}
		sort.Strings(res)
		pid := "-"
		if wk.PID > 0 {
			pid = fmt.Sprint(wk.PID)
		}
		fmt.Fprintf(tw, "%s\t%d %s\t%s\t%s\t%d\t%d\t%s\t%s\n", wk.ID, wk.Device, wk.DeviceName, wk.State, pid, wk.JobsDone,
			wk.Restarts, dash(strings.Join(res, ",")), dash(wk.LastError))
	}
	return tw.Flush()
}
