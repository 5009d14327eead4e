package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// client is a small HTTP client for kiln's /v1 API.
type client struct {
	base string
	http *http.Client
}

func newClient(addr string) *client {
	if addr == "" {
		addr = os.Getenv("KILN_ADDR")
	}
	if addr == "" {
		addr = "http://127.0.0.1:8188"
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &client{base: strings.TrimRight(addr, "/"), http: &http.Client{Timeout: 30 * time.Second}}
}

// apiError is an error answer from the API.
type apiError struct {
	Status  int
	Type    string `json:"type"`
	Message string `json:"message"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (HTTP %d): %s", e.Type, e.Status, e.Message)
}

func (c *client) do(ctx context.Context, method, path string, body []byte, out any) error {
	contentType := ""
	if body != nil {
		contentType = "application/json"
	}
	data, err := c.send(ctx, method, path, contentType, "", body)
	if err != nil {
		return err
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}

// send makes one API call and returns the answer's body, or the API's
// error (or the HTTP status) as an *apiError. A token, when given, is sent
// as the admin bearer token.
func (c *client) send(ctx context.Context, method, path, contentType, token string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("is kiln running at %s? %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 400 {
		var env struct {
			Error apiError `json:"error"`
		}
		if json.Unmarshal(data, &env) == nil && env.Error.Type != "" {
			env.Error.Status = resp.StatusCode
			return nil, &env.Error
		}
		return nil, &apiError{Status: resp.StatusCode, Type: "http_error", Message: strings.TrimSpace(string(data))}
	}
	return data, nil
}

// jobView mirrors the API's job answer.
type jobView struct {
	ID         string     `json:"id"`
	State      string     `json:"state"`
	Class      string     `json:"class"`
	Attempts   int        `json:"attempts"`
	Models     []string   `json:"models"`
	CreatedAt  *time.Time `json:"created_at"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	Worker     string     `json:"worker"`
	Outputs    []struct {
		Filename  string `json:"filename"`
		Subfolder string `json:"subfolder"`
		Type      string `json:"type"`
	} `json:"outputs"`
	Error    *string `json:"error"`
	Progress *struct {
		Phase string `json:"phase"`
		Node  string `json:"node"`
		Value int    `json:"value"`
		Max   int    `json:"max"`
	} `json:"progress"`
}

func (j jobView) terminal() bool {
	return j.State == "done" || j.State == "failed" || j.State == "cancelled"
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

func cmdSubmit(args []string) error {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	class := fs.String("class", "", "priority class: interactive or batch (default interactive)")
	deadline := fs.Int64("deadline-ms", 0, "deadline in milliseconds after submission")
	wait := fs.Bool("wait", false, "wait for the job to finish, showing progress")
	addr := fs.String("addr", "", "kiln address (default $KILN_ADDR or http://127.0.0.1:8188)")
	file, rest := splitFirstArg(args)
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if file == "" && fs.NArg() > 0 {
		file = fs.Arg(0)
	}
	if file == "" {
		return errors.New("submit: a workflow FILE is required")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	body, err := submitBody(data, *class, *deadline)
	if err != nil {
		return fmt.Errorf("submit %s: %w", file, err)
	}
	c := newClient(*addr)
	ctx, stop := signalContext()
	defer stop()
	var acc struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if err := c.do(ctx, http.MethodPost, "/v1/jobs", body, &acc); err != nil {
		return err
	}
	if !*wait {
		fmt.Println(acc.ID)
		return nil
	}
	fmt.Fprintf(os.Stderr, "job %s queued\n", acc.ID)
	j, err := waitJob(ctx, c, acc.ID, os.Stderr)
	if err != nil {
		return err
	}
	for _, o := range j.Outputs {
		fmt.Printf("%s/%s\n", o.Subfolder, o.Filename)
	}
	if j.State != "done" {
		msg := "job " + j.ID + " " + j.State
		if j.Error != nil {
			msg += ": " + *j.Error
		}
		return &exitError{code: 1, msg: msg}
	}
	return nil
}

// splitFirstArg lets FILE come before the flags, as in `kiln submit f.json --wait`.
func splitFirstArg(args []string) (string, []string) {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return args[0], args[1:]
	}
	return "", args
}

// waitJob polls a job until it ends, drawing a progress bar on w.
func waitJob(ctx context.Context, c *client, id string, w io.Writer) (jobView, error) {
	var last string
	for {
		var j jobView
		if err := c.do(ctx, http.MethodGet, "/v1/jobs/"+id, nil, &j); err != nil {
			return j, err
		}
		line := progressLine(j)
		if line != last {
			fmt.Fprintf(w, "\r\033[K%s", line)
			last = line
		}
		if j.terminal() {
			fmt.Fprintln(w)
			return j, nil
		}
		select {
		case <-ctx.Done():
			fmt.Fprintln(w)
			return j, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func progressLine(j jobView) string {
	switch {
	case j.State == "running" && j.Progress != nil && j.Progress.Max > 0:
		const width = 30
		filled := j.Progress.Value * width / j.Progress.Max
		return fmt.Sprintf("%s [%s%s] %d/%d step (node %s)", j.State, strings.Repeat("#", filled),
			strings.Repeat(".", width-filled), j.Progress.Value, j.Progress.Max, j.Progress.Node)
	case j.State == "running" && j.Progress != nil:
		return fmt.Sprintf("running (%s models on %s)", j.Progress.Phase, j.Worker)
	case j.Error != nil:
		return fmt.Sprintf("%s: %s", j.State, *j.Error)
	}
	return j.State
}

func cmdJobs(args []string) error {
	fs := flag.NewFlagSet("jobs", flag.ContinueOnError)
	state := fs.String("state", "", "only jobs in this state")
	limit := fs.Int("limit", 50, "at most this many jobs")
	addr := fs.String("addr", "", "kiln address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var out struct {
		Jobs   []jobView      `json:"jobs"`
		Counts map[string]int `json:"counts"`
	}
	path := fmt.Sprintf("/v1/jobs?limit=%d", *limit)
	if *state != "" {
		path += "&state=" + *state
	}
	if err := newClient(*addr).do(context.Background(), http.MethodGet, path, nil, &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCLASS\tSTATE\tATTEMPTS\tWORKER\tLATENCY\tMODELS")
	for _, j := range out.Jobs {
		lat := "-"
		if j.FinishedAt != nil && j.CreatedAt != nil {
			lat = j.FinishedAt.Sub(*j.CreatedAt).Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", j.ID, j.Class, j.State, j.Attempts, j.Worker, lat, strings.Join(j.Models, ","))
	}
	tw.Flush()
	fmt.Printf("counts: %v\n", out.Counts)
	return nil
}
