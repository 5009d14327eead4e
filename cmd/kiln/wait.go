package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
)

// exitInterrupted is the status of a --wait that Ctrl-C ended.
const exitInterrupted = 130

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	return isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
}

// waiter follows one job to its end, drawing its overall progress.
type waiter struct {
	c   *client
	id  string
	w   io.Writer
	tty bool // redraw one line; else plain lines
	// ask: on Ctrl-C, ask on the terminal whether to cancel the job.
	ask               bool
	cancelOnInterrupt bool
	poll              time.Duration
	prog              progress
	// now is the clock (tests set it).
	now func() time.Time
	// lastLine and lastPrinted pace the plain lines.
	lastLine    string
	lastPrinted time.Time
	lastPct     int
}

// newWaiter follows job id, writing progress to w; body is the submitted
// request (its workflow's sampler steps make the overall progress), or nil.
func newWaiter(c *client, id string, w io.Writer, body []byte) *waiter {
	wt := &waiter{c: c, id: id, w: w, poll: 200 * time.Millisecond, now: time.Now, lastPct: -1}
	if f, ok := w.(*os.File); ok {
		wt.tty = isTerminal(f)
		wt.ask = wt.tty && isTerminal(os.Stdin)
	}
	wt.prog = newProgress(workflowSteps(body))
	return wt
}

// wait polls the job until it ends. Ctrl-C asks whether to cancel the job
// (or cancels it with cancelOnInterrupt, or says how to) and returns an
// exit status 130 error unless the job was cancelled and ended.
func (wt *waiter) wait() (jobView, error) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	start := wt.now()
	ctx := context.Background()
	for {
		j, err := getJob(ctx, wt.c, wt.id)
		if err != nil {
			wt.endLine()
			return j, err
		}
		wt.draw(j, start)
		if j.terminal() {
			wt.endLine()
			return j, nil
		}
		select {
		case <-sig:
			wt.endLine()
			return j, wt.interrupted(sig, j.State)
		case <-time.After(wt.poll):
		}
	}
}

// interrupted handles Ctrl-C during a wait.
func (wt *waiter) interrupted(sig chan os.Signal, state string) error {
	cancel := wt.cancelOnInterrupt
	if !cancel && wt.ask {
		fmt.Fprintf(wt.w, "cancel job %s? [y/N] ", wt.id)
		answer := make(chan string, 1)
		go func() {
			line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
			answer <- strings.TrimSpace(strings.ToLower(line))
		}()
		select {
		case a := <-answer:
			cancel = a == "y" || a == "yes"
		case <-sig: // a second Ctrl-C: leave it running
			fmt.Fprintln(wt.w)
		}
	}
	if !cancel {
		fmt.Fprintf(wt.w, "job %s is still %s; cancel it with: kiln cancel %s%s\n", wt.id, state, wt.id, wt.addrHint())
		return &exitError{code: exitInterrupted, msg: "interrupted; the job was left running"}
	}
	var j jobView
	err := wt.c.do(context.Background(), http.MethodDelete, "/v1/jobs/"+url.PathEscape(wt.id), nil, &j)
	if err != nil {
		return fmt.Errorf("cancel job %s: %w", wt.id, err)
	}
	fmt.Fprintf(wt.w, "job %s %s\n", wt.id, j.State)
	return &exitError{code: exitInterrupted, msg: "interrupted; job " + wt.id + " cancelled"}
}

func (wt *waiter) addrHint() string {
	if os.Getenv("KILN_ADDR") != "" || wt.c.base == "http://127.0.0.1:8188" {
		return ""
	}
	return " --addr " + wt.c.base
}

// draw shows the job's state: a redrawn line on a terminal; otherwise a
// plain line when the state, phase or node changes, or every 10% (at most
// one every 2 s).
func (wt *waiter) draw(j jobView, start time.Time) {
	now := wt.now()
	wt.prog.update(j, now)
	line := wt.prog.line(j, now.Sub(start), now)
	if wt.tty {
		// One line, redrawn: cut to the terminal's width, or it wraps and
		// the redraw leaves the wrapped part behind.
		if f, ok := wt.w.(*os.File); ok {
			if width := termWidth(f); width > 1 {
				if r := []rune(line); len(r) > width-1 {
					line = string(r[:width-1])
				}
			}
		}
		fmt.Fprintf(wt.w, "\r\033[K%s", line)
		wt.lastLine = line
		return
	}
	key := wt.prog.key(j)
	pct := -1
	if f, ok := wt.prog.fraction(); ok {
		pct = int(f * 10)
	}
	changed := key != wt.lastLine
	if changed || (pct != wt.lastPct && now.Sub(wt.lastPrinted) >= 2*time.Second) {
		fmt.Fprintln(wt.w, line)
		wt.lastLine, wt.lastPct, wt.lastPrinted = key, pct, now
	}
}

func (wt *waiter) endLine() {
	if wt.tty && wt.lastLine != "" {
		fmt.Fprintln(wt.w)
		wt.lastLine = ""
	}
}

// workflowSteps reads the sampling steps of each node of a submitted
// body's workflow: the nodes with a numeric "steps" input (KSampler,
// KSamplerAdvanced, schedulers). Nil when there is none.
func workflowSteps(body []byte) map[string]int {
	if body == nil {
		return nil
	}
	var req struct {
		Workflow map[string]struct {
			Inputs map[string]json.RawMessage `json:"inputs"`
		} `json:"workflow"`
	}
	if json.Unmarshal(body, &req) != nil {
		return nil
	}
	steps := map[string]int{}
	for id, n := range req.Workflow {
		var s float64
		if raw, ok := n.Inputs["steps"]; ok && json.Unmarshal(raw, &s) == nil && s >= 1 {
			steps[id] = int(s)
		}
	}
	if len(steps) == 0 {
		return nil
	}
	return steps
}

// progress turns a job's per-node progress into the whole job's: the
// steps of the nodes that finished plus the current node's, over the
// steps of every sampling node (a node's observed max replaces the
// workflow's count), with the elapsed time and an ETA from the rate so far.
type progress struct {
	steps     map[string]int // node → steps
	done      map[string]bool
	node      string
	value     int
	firstStep time.Time // when the first step was seen
	firstDone int
}

func newProgress(steps map[string]int) progress {
	if steps == nil {
		steps = map[string]int{}
	}
	return progress{steps: steps, done: map[string]bool{}}
}

func (p *progress) update(j jobView, now time.Time) {
	if j.State == "done" {
		for n := range p.steps {
			p.done[n] = true
		}
		p.node = ""
		return
	}
	pr := j.Progress
	if j.State != "running" || pr == nil || pr.Max <= 0 || pr.Node == "" {
		return
	}
	if pr.Node != p.node {
		if p.node != "" {
			p.done[p.node] = true
		}
		p.node = pr.Node
	}
	p.steps[pr.Node] = pr.Max
	p.value = pr.Value
	if p.firstStep.IsZero() && pr.Value > 0 {
		p.firstStep, p.firstDone = now, p.completed()
	}
}

func (p *progress) total() int {
	t := 0
	for _, s := range p.steps {
		t += s
	}
	return t
}

func (p *progress) completed() int {
	c := 0
	for n := range p.done {
		c += p.steps[n]
	}
	if p.node != "" && !p.done[p.node] {
		c += min(p.value, p.steps[p.node])
	}
	return c
}

// fraction is the overall progress in [0, 1]; false when unknown.
func (p *progress) fraction() (float64, bool) {
	t := p.total()
	if t == 0 {
		return 0, false
	}
	return min(float64(p.completed())/float64(t), 1), true
}

// eta is the time left at the rate since the first step; false while
// unknown.
func (p *progress) eta(now time.Time) (time.Duration, bool) {
	if p.firstStep.IsZero() {
		return 0, false
	}
	el := now.Sub(p.firstStep)
	did := p.completed() - p.firstDone
	if did <= 0 || el <= 0 {
		return 0, false
	}
	left := p.total() - p.completed()
	return time.Duration(float64(el) * float64(left) / float64(did)), true
}

// key changes when a plain-lines reader wants a new line.
func (p *progress) key(j jobView) string {
	k := j.State
	if j.Progress != nil {
		k += "/" + j.Progress.Phase + "/" + j.Progress.Node
	}
	return k
}

func (p *progress) line(j jobView, elapsed time.Duration, now time.Time) string {
	var b strings.Builder
	b.WriteString(j.State)
	switch {
	case j.State == "running" && j.Progress != nil && j.Progress.Phase == "loading":
		fmt.Fprintf(&b, " (loading models on %s)", dash(j.Worker))
	case j.State == "running" || j.State == "done":
		if f, ok := p.fraction(); ok {
			const width = 24
			filled := int(f * width)
			fmt.Fprintf(&b, " [%s%s] %3.0f%%  %d/%d steps", strings.Repeat("#", filled), strings.Repeat(".", width-filled),
				100*f, p.completed(), p.total())
		}
		if j.State == "running" && j.Progress != nil && j.Progress.Node != "" && j.Progress.Max > 0 {
			fmt.Fprintf(&b, "  node %s %d/%d", j.Progress.Node, j.Progress.Value, j.Progress.Max)
		}
	}
	fmt.Fprintf(&b, "  elapsed %s", clockDuration(elapsed))
	if j.State == "running" {
		if eta, ok := p.eta(now); ok {
			fmt.Fprintf(&b, "  ETA %s", clockDuration(eta))
		}
	}
	if j.Error != nil {
		fmt.Fprintf(&b, ": %s", *j.Error)
	}
	return b.String()
}

// clockDuration writes d as m:ss or h:mm:ss.
func clockDuration(d time.Duration) string {
	s := int(d.Round(time.Second).Seconds())
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
