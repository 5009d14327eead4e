package sim

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/workflow"
)

// Mappings of trace clients (or functions) onto models, as Clockwork and
// AlpaServe replay production traces on a smaller set of models.
const (
	// MapStripe sends client i to model i mod M: neighbouring clients,
	// which in ServeGen's files have unrelated traffic, land on different
	// models.
	MapStripe = "stripe"
	// MapBlock sends clients in contiguous blocks of ⌈C/M⌉ to one model:
	// a model's traffic is the sum of several clients'.
	MapBlock = "block"
)

// ServeGenOptions select and scale a span of a ServeGen category.
type ServeGenOptions struct {
	// FS and Dir locate the category: Dir holds one chunk-N-trace.csv per
	// client (e.g. "reason/deepseek-r1" under os.DirFS("../shared/traces/servegen")).
	FS  fs.FS
	Dir string
	// Start and Duration pick the span of the trace to replay (its windows
	// are 600 s); Duration 0 means to the end.
	Start, Duration time.Duration
	// TargetRate, when > 0, scales every client's rate by one factor so
	// that the span's mean aggregate rate is TargetRate jobs/s; otherwise
	// RateScale (default 1) is the factor. Scaling divides inter-arrival
	// times, so each window's burstiness (its CV) is kept.
	TargetRate float64
	RateScale  float64
	// Checkpoints is the number of base models clients map onto (default
	// 20), with Mapping MapStripe (default) or MapBlock. Every second
	// client of a model adds one LoRA of the model's family (a "workflow
	// family": the checkpoint alone, or with that client's LoRA).
	Checkpoints int
	Mapping     string
	// InteractiveFrac and DeadlineMS are as for GenConfig (defaults 0.5,
	// 30000).
	InteractiveFrac float64
	DeadlineMS      int64
	// MaxJobs caps the requests (0: no cap), keeping the earliest.
	MaxJobs int
	// Seed seeds every draw: the same options give the same trace.
	Seed uint64
}

// window is one row of a ServeGen client file.
type window struct {
	start        float64
	rate, cv     float64
	pattern      string
	shape, scale float64
}

// ImportServeGen turns a span of a ServeGen category into a catalog and
// a trace: each client's windows become arrivals drawn from the window's
// fitted inter-arrival distribution (Gamma or Weibull, exponential when
// none was fitted) rescaled to the window's rate times the scale factor,
// and each client maps onto a checkpoint (and maybe a LoRA) of
// Catalog(Checkpoints, Seed). The files hold no model sizes; the catalog's
// are the realistic table of Catalog.
func ImportServeGen(o ServeGenOptions) ([]Model, []Request, error) {
	if o.FS == nil {
		return nil, nil, errors.New("sim: servegen: no file system")
	}
	if o.Checkpoints == 0 {
		o.Checkpoints = 20
	}
	if o.Mapping == "" {
		o.Mapping = MapStripe
	}
	if o.Mapping != MapStripe && o.Mapping != MapBlock {
		return nil, nil, fmt.Errorf("sim: servegen: mapping %q: want stripe or block", o.Mapping)
	}
	if o.RateScale == 0 {
		o.RateScale = 1
	}
	if o.InteractiveFrac == 0 {
		o.InteractiveFrac = 0.5
	}
	if o.DeadlineMS == 0 {
		o.DeadlineMS = 30000
	}
	if o.RateScale < 0 || o.TargetRate < 0 || o.Checkpoints < 1 {
		return nil, nil, errors.New("sim: servegen: rates and checkpoints must be positive")
	}
	entries, err := fs.ReadDir(o.FS, o.Dir)
	if err != nil {
		return nil, nil, fmt.Errorf("sim: servegen: %w", err)
	}
	type client struct {
		n       int
		windows []window
	}
	var clients []client
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "chunk-") || !strings.HasSuffix(name, "-trace.csv") {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(name, "chunk-"), "-trace.csv"))
		if err != nil {
			continue
		}
		f, err := o.FS.Open(path.Join(o.Dir, name))
		if err != nil {
			return nil, nil, fmt.Errorf("sim: servegen: %w", err)
		}
		ws, err := readWindows(f, path.Join(o.Dir, name))
		f.Close()
		if err != nil {
			return nil, nil, err
		}
		clients = append(clients, client{n: n, windows: ws})
	}
	if len(clients) == 0 {
		return nil, nil, fmt.Errorf("sim: servegen: no chunk-N-trace.csv files in %s", o.Dir)
	}
	// Directory order is by name (chunk-10 before chunk-2); the mapping
	// wants the clients' own numbering.
	sort.Slice(clients, func(a, b int) bool { return clients[a].n < clients[b].n })

	from := o.Start.Seconds()
	to := math.Inf(1)
	if o.Duration > 0 {
		to = from + o.Duration.Seconds()
	}
	scale := o.RateScale
	if o.TargetRate > 0 {
		// The span's mean aggregate rate: Σ rate × overlap / span.
		var reqs, last float64
		for _, c := range clients {
			for _, w := range c.windows {
				lo, hi := max(w.start, from), min(w.start+600, to)
				if hi > lo {
					reqs += w.rate * (hi - lo)
					last = max(last, hi)
				}
			}
		}
		if reqs == 0 {
			return nil, nil, fmt.Errorf("sim: servegen: no traffic in %s from %s", o.Dir, o.Start)
		}
		scale = o.TargetRate / (reqs / (last - from))
	}

	models := Catalog(o.Checkpoints, o.Seed)
	ckpts, loras := catalogParts(models)
	r := rand.New(rand.NewPCG(o.Seed, o.Seed^0x5e5e))
	var reqs []Request
	for ci, c := range clients {
		var m int
		if o.Mapping == MapStripe {
			m = ci % len(ckpts)
		} else {
			block := (len(clients) + len(ckpts) - 1) / len(ckpts)
			m = ci / block
		}
		ck := ckpts[m]
		set := []string{ck.ID}
		if ls := loras[ck.Family]; ci%2 == 1 && len(ls) > 0 {
			set = append(set, ls[(ci/2)%len(ls)])
		}
		// Each client draws from its own stream, so that adding a client
		// does not change the others' arrivals.
		cr := rand.New(rand.NewPCG(o.Seed^uint64(c.n)*0x9e3779b97f4a7c15, uint64(c.n)+1))
		for _, w := range c.windows {
			lo, hi := max(w.start, from), min(w.start+600, to)
			if hi <= lo || w.rate <= 0 {
				continue
			}
			mean := 1 / (w.rate * scale)
			for t := lo + w.draw(cr, mean); t < hi; t += w.draw(cr, mean) {
				req := Request{Time: time.Duration(math.Round((t-from)*1000)) * time.Millisecond, Models: set, Class: job.Batch}
				if r.Float64() < o.InteractiveFrac {
					req.Class, req.DeadlineMS = job.Interactive, o.DeadlineMS
				}
				reqs = append(reqs, req)
			}
		}
	}
	sort.SliceStable(reqs, func(a, b int) bool { return reqs[a].Time < reqs[b].Time })
	if o.MaxJobs > 0 && len(reqs) > o.MaxJobs {
		reqs = reqs[:o.MaxJobs]
	}
	return models, reqs, nil
}

// draw returns an inter-arrival time (s) of the window's fitted shape with
// the given mean: the fit's own mean is rescaled, so that only its shape
// (and so its CV) is taken from the data.
func (w window) draw(r *rand.Rand, mean float64) float64 {
	switch w.pattern {
	case "Gamma":
		if w.shape > 0 {
			return gamma(r, w.shape) / w.shape * mean
		}
	case "Weibull":
		if w.shape > 0 {
			// Mean of Weibull(k, 1) is Γ(1 + 1/k).
			return math.Pow(r.ExpFloat64(), 1/w.shape) / math.Gamma(1+1/w.shape) * mean
		}
	}
	return r.ExpFloat64() * mean
}

// gamma draws Gamma(k, 1) by Marsaglia and Tsang's method (with the
// k < 1 boost).
func gamma(r *rand.Rand, k float64) float64 {
	if k < 1 {
		return gamma(r, k+1) * math.Pow(r.Float64(), 1/k)
	}
	d := k - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := r.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := r.Float64()
		if u < 1-0.0331*x*x*x*x || math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
}

// readWindows parses one ServeGen client file: rows ts,rate,cv,pattern,
// shape,scale without a header.
func readWindows(rd io.Reader, file string) ([]window, error) {
	cr := csv.NewReader(bufio.NewReader(rd))
	cr.FieldsPerRecord = -1
	var out []window
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, csvErr(file, err)
		}
		line, _ := cr.FieldPos(0)
		if len(rec) < 6 {
			return nil, &ParseError{File: file, Line: line, Err: fmt.Errorf("%d columns, want ts,rate,cv,pattern,shape,scale", len(rec))}
		}
		if _, err := strconv.ParseFloat(strings.TrimSpace(rec[0]), 64); err != nil && line == 1 {
			continue // a header line
		}
		var w window
		var vals [5]float64
		for i, col := range []int{0, 1, 2, 4, 5} {
			s := strings.TrimSpace(rec[col])
			if s == "" {
				continue
			}
			v, err := strconv.ParseFloat(s, 64)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				return nil, &ParseError{File: file, Line: line, Column: strconv.Itoa(col + 1), Err: fmt.Errorf("%q is not a non-negative number", s)}
			}
			vals[i] = v
		}
		w.start, w.rate, w.cv, w.shape, w.scale = vals[0], vals[1], vals[2], vals[3], vals[4]
		w.pattern = strings.TrimSpace(rec[3])
		out = append(out, w)
	}
	return out, nil
}

// catalogParts splits a Catalog into its checkpoints and its LoRAs by
// family.
func catalogParts(models []Model) (ckpts []Model, loras map[string][]string) {
	loras = map[string][]string{}
	for _, m := range models {
		switch {
		case strings.HasPrefix(m.ID, "checkpoints/"):
			ckpts = append(ckpts, m)
		case m.Family == workflow.FamilyLoRA:
			for _, f := range []string{workflow.FamilySD15, workflow.FamilySDXL, workflow.FamilySD3, workflow.FamilyFlux} {
				if strings.HasPrefix(m.ID, "loras/"+f+"-") {
					loras[f] = append(loras[f], m.ID)
				}
			}
		}
	}
	return ckpts, loras
}

// AzureOptions scale the Azure LLM inference trace's arrivals.
type AzureOptions struct {
	// RateScale divides the inter-arrival times (default 1); TargetRate,
	// when > 0, sets the factor so that the mean rate is TargetRate jobs/s.
	RateScale, TargetRate float64
	// Checkpoints, ZipfS, InteractiveFrac, DeadlineMS and Seed pick each
	// request's models as Generate does (Zipf popularity over a Catalog):
	// the trace has no models, only times and token counts.
	Checkpoints     int
	ZipfS           float64
	InteractiveFrac float64
	DeadlineMS      int64
	MaxJobs         int
	Seed            uint64
}

// azureLayout is the trace's timestamp format (fractional seconds of
// varying length are accepted by the parser).
const azureLayout = "2006-01-02 15:04:05"

// ImportAzure reads the Azure LLM inference trace 2023
// (TIMESTAMP,ContextTokens,GeneratedTokens) and keeps its arrival times,
// relative to the first request and scaled; models are drawn by Zipf
// popularity over Catalog(Checkpoints, Seed) as in Generate.
func ImportAzure(rd io.Reader, file string, o AzureOptions) ([]Model, []Request, error) {
	cr := csv.NewReader(bufio.NewReader(rd))
	cols, err := header(cr, file, "TIMESTAMP")
	if err != nil {
		return nil, nil, err
	}
	var times []time.Time
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, csvErr(file, err)
		}
		line, _ := cr.FieldPos(0)
		ts, err := time.Parse(azureLayout, strings.TrimSpace(rec[cols["TIMESTAMP"]]))
		if err != nil {
			return nil, nil, &ParseError{File: file, Line: line, Column: "TIMESTAMP", Err: err}
		}
		times = append(times, ts)
	}
	if len(times) < 2 {
		return nil, nil, &ParseError{File: file, Line: 1, Err: errors.New("fewer than two requests")}
	}
	sort.Slice(times, func(a, b int) bool { return times[a].Before(times[b]) })
	span := times[len(times)-1].Sub(times[0]).Seconds()
	scale := o.RateScale
	if scale == 0 {
		scale = 1
	}
	if o.TargetRate > 0 && span > 0 {
		scale = o.TargetRate / (float64(len(times)) / span)
	}
	if scale <= 0 {
		return nil, nil, errors.New("sim: azure: rate scale must be positive")
	}
	arrivals := make([]time.Duration, len(times))
	for i, ts := range times {
		arrivals[i] = time.Duration(float64(ts.Sub(times[0])) / scale).Round(time.Millisecond)
	}
	if o.MaxJobs > 0 && len(arrivals) > o.MaxJobs {
		arrivals = arrivals[:o.MaxJobs]
	}
	return Generate(GenConfig{Kind: kindTimes, Jobs: len(arrivals), Checkpoints: o.Checkpoints, ZipfS: o.ZipfS,
		InteractiveFrac: o.InteractiveFrac, DeadlineMS: o.DeadlineMS, Seed: o.Seed, times: arrivals})
}
