package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/coder/websocket"
)

const eventsHelp = `usage: kiln events [--job ID] [--count N] [--all] [flags]

Follows the node's job events as they happen, over kiln's WebSocket (/ws,
the ComfyUI-compatible event stream): the queue's size, a job starting,
each node executing, sampling progress, outputs, and how the job ended.
Events of jobs submitted through /v1/jobs and the node's status reach
every listener; a ComfyUI client's own jobs reach only that client.

It runs until Ctrl-C, --count events, or (with --job) until that job ends.
-o json prints one JSON object a line: {"time", "type", "job", "data"}.
--all adds the frequent progress_state messages.
`

// event is one message of the stream, as kiln events prints it.
type event struct {
	Time time.Time       `json:"time"`
	Type string          `json:"type"`
	Job  string          `json:"job,omitempty"`
	Data json.RawMessage `json:"data"`
}

func cmdEvents(args []string) error {
	fs := newFlags("events", eventsHelp)
	addr := fs.String("addr", "", addrUsage)
	jobID := fs.String("job", "", "only the events of this job `ID`, until it ends")
	count := fs.Int("count", 0, "stop after N events (0: no limit)")
	all := fs.Bool("all", false, "include progress_state messages")
	fs.Bool("follow", true, "follow the stream (the default; kept for kiln logs' spelling)")
	fs.alias("f", "follow")
	out := fs.output("table")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("events", "unexpected argument %q (a job is --job ID)", pos[0])
	}
	c := newClient(*addr)
	ctx, stop := signalContext()
	defer stop()
	if *jobID != "" {
		j, err := getJob(ctx, c, *jobID)
		if err != nil {
			return err
		}
		if j.terminal() {
			fmt.Fprintf(os.Stderr, "job %s already %s\n", j.ID, j.State)
			return nil
		}
	}
	u, err := url.Parse(c.base)
	if err != nil {
		return err
	}
	u.Scheme = map[string]string{"https": "wss"}[u.Scheme]
	if u.Scheme == "" {
		u.Scheme = "ws"
	}
	u.Path = "/ws"
	u.RawQuery = url.Values{"clientId": {fmt.Sprintf("kiln-cli-%d", os.Getpid())}}.Encode()
	ws, _, err := websocket.Dial(ctx, u.String(), nil)
	if err != nil {
		return fmt.Errorf("is kiln running at %s? %w", c.base, err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(64 << 20)
	n := 0
	for {
		typ, data, err := ws.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("event stream: %w", err)
		}
		if typ != websocket.MessageText {
			continue // preview images
		}
		var m struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		if m.Type == "progress_state" && !*all || m.Type == "feature_flags" || m.Type == "crystools.monitor" {
			continue
		}
		var ref struct {
			PromptID string `json:"prompt_id"`
		}
		_ = json.Unmarshal(m.Data, &ref)
		if *jobID != "" && ref.PromptID != *jobID {
			continue
		}
		e := event{Time: time.Now(), Type: m.Type, Job: ref.PromptID, Data: m.Data}
		if err := printEvent(os.Stdout, out, e); err != nil {
			return err
		}
		n++
		if *count > 0 && n >= *count {
			return nil
		}
		if *jobID != "" && (m.Type == "execution_success" || m.Type == "execution_error" || m.Type == "execution_interrupted") {
			return nil
		}
	}
}

func printEvent(w io.Writer, out *output, e event) error {
	switch out.format {
	case "json":
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case "yaml":
		fmt.Fprintln(w, "---")
		return writeYAML(w, e)
	}
	_, err := fmt.Fprintf(w, "%s  %-22s %s\n", e.Time.Local().Format("15:04:05.000"), e.Type, describeEvent(e))
	return err
}

// describeEvent is an event's data in a few words.
func describeEvent(e event) string {
	var d map[string]any
	_ = json.Unmarshal(e.Data, &d)
	var parts []string
	if e.Job != "" {
		parts = append(parts, "job "+e.Job)
	}
	switch e.Type {
	case "status":
		if st, ok := d["status"].(map[string]any); ok {
			if ei, ok := st["exec_info"].(map[string]any); ok {
				parts = append(parts, fmt.Sprintf("queue %v", cell(ei["queue_remaining"])))
			}
		}
	case "executing", "executed":
		if n, ok := d["node"].(string); ok {
			parts = append(parts, "node "+n)
		} else if e.Type == "executing" {
			parts = append(parts, "finished")
		}
		if o, ok := d["output"].(map[string]any); ok {
			for kind, v := range o {
				if list, ok := v.([]any); ok {
					for _, x := range list {
						if f, ok := x.(map[string]any); ok {
							parts = append(parts, fmt.Sprintf("%s %v", strings.TrimSuffix(kind, "s"), path(fmt.Sprint(f["subfolder"]), fmt.Sprint(f["filename"]))))
						}
					}
				}
			}
		}
	case "progress":
		parts = append(parts, fmt.Sprintf("node %v step %v/%v", d["node"], cell(d["value"]), cell(d["max"])))
	case "execution_error":
		parts = append(parts, fmt.Sprintf("%v: %v", d["exception_type"], d["exception_message"]))
	case "execution_interrupted":
		parts = append(parts, "interrupted")
	}
	return strings.Join(parts, "  ")
}

// cell formats a JSON number as an integer where it is one.
func cell(v any) string {
	if x, ok := v.(float64); ok && x == float64(int64(x)) {
		return fmt.Sprint(int64(x))
	}
	if v == nil {
		return "-"
	}
	return fmt.Sprint(v)
}
