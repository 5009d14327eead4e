package sim

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// Model is one row of MODELS.csv: a catalog entry the trace refers to.
type Model struct {
	// ID is the catalog id, e.g. "checkpoints/sdxl_base.safetensors".
	ID string `json:"model_id"`
	// Bytes is the file's size, which is also its VRAM footprint
	// (cost.VRAMBytes) and what each tier stores.
	Bytes int64 `json:"bytes"`
	// Family picks the cost model: sd15, sdxl, sd3, flux, lora, vae,
	// controlnet, upscaler, text_encoder, ...
	Family string `json:"family"`
}

// Request is one row of TRACE.csv: a job arriving at Time.
type Request struct {
	// Time is the arrival time from the start of the trace.
	Time time.Duration
	// Models are the catalog ids the job needs resident, in trace order.
	Models []string
	// Class is interactive or batch.
	Class job.Class
	// DeadlineMS is the latency the job should meet; 0 means none.
	DeadlineMS int64
	// Samplers are the sampling steps the job runs, from its workflow;
	// empty means the family's defaults (see Simulator.work).
	Samplers []workflow.SamplerParams
	// Line is the CSV line the request came from, for messages.
	Line int
}

// Trace is a parsed trace: requests sorted by arrival time (stable, so
// requests with equal times keep their file order).
type Trace struct {
	Requests []Request
}

// ParseError is an error in a CSV input. Its message names the file, line
// and column, e.g. "trace.csv:4: column deadline_ms: "x" is not an integer".
type ParseError struct {
	File   string
	Line   int
	Column string
	Err    error
}

// Error implements error.
func (e *ParseError) Error() string {
	loc := fmt.Sprintf("%s:%d", e.File, e.Line)
	if e.Column != "" {
		return fmt.Sprintf("%s: column %s: %v", loc, e.Column, e.Err)
	}
	return fmt.Sprintf("%s: %v", loc, e.Err)
}

// Unwrap returns the underlying error.
func (e *ParseError) Unwrap() error { return e.Err }

// header reads the CSV header and maps column names to indices, requiring
// every name in required.
func header(r *csv.Reader, file string, required ...string) (map[string]int, error) {
	rec, err := r.Read()
	if err == io.EOF {
		return nil, &ParseError{File: file, Line: 1, Err: errors.New("empty file: want a header line")}
	}
	if err != nil {
		return nil, csvErr(file, err)
	}
	cols := make(map[string]int, len(rec))
	for i, name := range rec {
		name = strings.TrimSpace(strings.TrimPrefix(name, "\ufeff"))
		if _, dup := cols[name]; dup {
			return nil, &ParseError{File: file, Line: 1, Column: name, Err: errors.New("duplicate column")}
		}
		cols[name] = i
	}
	for _, name := range required {
		if _, ok := cols[name]; !ok {
			return nil, &ParseError{File: file, Line: 1, Column: name, Err: fmt.Errorf("missing column (want %s)", strings.Join(required, ","))}
		}
	}
	return cols, nil
}

func csvErr(file string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &ParseError{File: file, Line: pe.Line, Column: strconv.Itoa(pe.Column), Err: pe.Err}
	}
	return fmt.Errorf("%s: %w", file, err)
}

// ReadModels parses MODELS.csv (columns model_id,bytes,family). file names
// the input in errors.
func ReadModels(r io.Reader, file string) ([]Model, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.Comment = '#'
	cols, err := header(cr, file, "model_id", "bytes", "family")
	if err != nil {
		return nil, err
	}
	var out []Model
	seen := map[string]int{}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, csvErr(file, err)
		}
		line, _ := cr.FieldPos(0)
		get := func(c string) string {
			if i := cols[c]; i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		m := Model{ID: get("model_id"), Family: strings.ToLower(get("family"))}
		if m.ID == "" {
			return nil, &ParseError{File: file, Line: line, Column: "model_id", Err: errors.New("empty")}
		}
		if prev, dup := seen[m.ID]; dup {
			return nil, &ParseError{File: file, Line: line, Column: "model_id", Err: fmt.Errorf("%q repeats line %d", m.ID, prev)}
		}
		seen[m.ID] = line
		m.Bytes, err = strconv.ParseInt(get("bytes"), 10, 64)
		if err != nil || m.Bytes <= 0 {
			return nil, &ParseError{File: file, Line: line, Column: "bytes", Err: fmt.Errorf("%q is not a positive integer", get("bytes"))}
		}
		if m.Family == "" {
			return nil, &ParseError{File: file, Line: line, Column: "family", Err: errors.New("empty")}
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, &ParseError{File: file, Line: 1, Err: errors.New("no models")}
	}
	return out, nil
}

// TraceOptions tell ReadTrace how to check and complete requests.
type TraceOptions struct {
	// File names the input in errors.
	File string
	// Models is the catalog; every model a request names must be in it.
	Models []Model
	// WorkflowDir resolves relative paths in the workflow column; empty
	// means the current directory.
	WorkflowDir string
	// ReadFile reads workflow files; nil means os.ReadFile.
	ReadFile func(string) ([]byte, error)
}

// ReadTrace parses TRACE.csv (columns time_s,models,class,deadline_ms and an
// optional workflow column naming an API-format graph file whose sampler
// parameters set steps and resolution).
func ReadTrace(r io.Reader, opts TraceOptions) (*Trace, error) {
	file := opts.File
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.Comment = '#'
	cols, err := header(cr, file, "time_s", "models", "class", "deadline_ms")
	if err != nil {
		return nil, err
	}
	known := make(map[string]bool, len(opts.Models))
	for _, m := range opts.Models {
		known[m.ID] = true
	}
	readFile := opts.ReadFile
	if readFile == nil {
		readFile = os.ReadFile
	}
	graphs := map[string][]workflow.SamplerParams{}
	_, hasWorkflow := cols["workflow"]
	t := &Trace{}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, csvErr(file, err)
		}
		line, _ := cr.FieldPos(0)
		get := func(c string) string {
			if i, ok := cols[c]; ok && i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		bad := func(col string, format string, args ...any) error {
			return &ParseError{File: file, Line: line, Column: col, Err: fmt.Errorf(format, args...)}
		}
		req := Request{Line: line}
		secs, err := strconv.ParseFloat(get("time_s"), 64)
		if err != nil || secs < 0 || math.IsInf(secs, 0) || math.IsNaN(secs) {
			return nil, bad("time_s", "%q is not a non-negative number of seconds", get("time_s"))
		}
		req.Time = time.Duration(math.Round(secs * 1e9))
		for _, id := range strings.Split(get("models"), ";") {
			id = strings.TrimSpace(id)
			if id == "" {
				continue
			}
			if len(known) > 0 && !known[id] {
				return nil, bad("models", "unknown model %q (not in the models file)", id)
			}
			req.Models = append(req.Models, id)
		}
		if len(req.Models) == 0 {
			return nil, bad("models", "no models")
		}
		switch c := strings.ToLower(get("class")); c {
		case "", string(job.Batch):
			req.Class = job.Batch
		case string(job.Interactive):
			req.Class = job.Interactive
		default:
			return nil, bad("class", "%q is not interactive or batch", c)
		}
		if s := get("deadline_ms"); s != "" {
			req.DeadlineMS, err = strconv.ParseInt(s, 10, 64)
			if err != nil || req.DeadlineMS < 0 {
				return nil, bad("deadline_ms", "%q is not a non-negative integer", s)
			}
		}
		if hasWorkflow {
			if p := get("workflow"); p != "" {
				params, ok := graphs[p]
				if !ok {
					params, err = loadParams(p, opts.WorkflowDir, readFile)
					if err != nil {
						return nil, bad("workflow", "%w", err)
					}
					graphs[p] = params
				}
				req.Samplers = params
			}
		}
		t.Requests = append(t.Requests, req)
	}
	if len(t.Requests) == 0 {
		return nil, &ParseError{File: file, Line: 1, Err: errors.New("no requests")}
	}
	sort.SliceStable(t.Requests, func(i, j int) bool { return t.Requests[i].Time < t.Requests[j].Time })
	return t, nil
}

func loadParams(path, dir string, readFile func(string) ([]byte, error)) ([]workflow.SamplerParams, error) {
	if !filepath.IsAbs(path) && dir != "" {
		path = filepath.Join(dir, path)
	}
	data, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("read workflow: %w", err)
	}
	g, err := workflow.Parse(data, workflow.Limits{}.WithDefaults())
	if err != nil {
		return nil, fmt.Errorf("parse workflow %s: %w", path, err)
	}
	return g.Params(), nil
}

// WriteModels writes models as MODELS.csv.
func WriteModels(w io.Writer, models []Model) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"model_id", "bytes", "family"})
	for _, m := range models {
		_ = cw.Write([]string{m.ID, strconv.FormatInt(m.Bytes, 10), m.Family})
	}
	cw.Flush()
	return cw.Error()
}

// WriteTrace writes requests as TRACE.csv (without a workflow column).
func WriteTrace(w io.Writer, reqs []Request) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"time_s", "models", "class", "deadline_ms"})
	for _, r := range reqs {
		_ = cw.Write([]string{
			strconv.FormatFloat(r.Time.Seconds(), 'f', 3, 64),
			strings.Join(r.Models, ";"), string(r.Class), strconv.FormatInt(r.DeadlineMS, 10),
		})
	}
	cw.Flush()
	return cw.Error()
}
