package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"math"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-gpu/kiln/internal/cost"
	"github.com/kiln-gpu/kiln/internal/workflow"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// runLimits are generous: the kernel checked the workflow against the
// configured limits at submit time; the worker only refuses what it cannot
// execute at all.
var runLimits = workflow.Limits{MaxNodes: 100000, MaxSteps: 10000, MaxResolution: 16384, MaxBatchSize: 256}

// Run executes a job's workflow with the cost model: it checks that every
// model the graph names is loaded, then runs the nodes in dependency order,
// sleeping for each node's cost, reporting progress after every sampler
// step, and writing real PNGs for the output nodes.
func (s *sim) Run(ctx context.Context, req wire.RunRequest, progress func(wire.Progress)) (wire.RunResult, error) {
	start := s.clock.Now()
	if err := checkJobID(req.JobID); err != nil {
		return wire.RunResult{}, wire.Errorf(wire.ErrCodeBadRequest, "run: %v", err)
	}
	g, err := workflow.FromMap(req.Workflow, runLimits)
	if err != nil {
		return wire.RunResult{}, wire.Errorf(wire.ErrCodeFailed, "run %s: %v", req.JobID, err)
	}

	// With a stage plan only the first stage's models are loaded now;
	// the others are checked as their stages begin (enterStage).
	stageOf, err := planStages(g, req.Stages)
	if err != nil {
		return wire.RunResult{}, wire.Errorf(wire.ErrCodeBadRequest, "run %s: %v", req.JobID, err)
	}
	s.mu.Lock()
	for _, m := range g.Models() {
		if len(req.Stages) > 0 && !slices.Contains(req.Stages[0].Models, m.ID) {
			continue
		}
		if s.models[m.ID] == nil {
			s.mu.Unlock()
			return wire.RunResult{}, wire.Errorf(wire.ErrCodeNotLoaded, "run %s: model %q (node %s) is not loaded", req.JobID, m.ID, m.NodeID)
		}
	}
	s.started++
	crash := s.crashAfter > 0 && s.started == s.crashAfter
	s.running++
	e := &execution{
		sim:      s,
		ctx:      ctx,
		jobID:    req.JobID,
		graph:    g,
		cost:     s.cost,
		dev:      s.dev,
		outDir:   s.outputDir,
		values:   map[string]value{},
		counters: map[string]int{},
		progress: progress,
		crash:    crash,
		stages:   req.Stages,
		stageOf:  stageOf,
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running--
		s.mu.Unlock()
	}()

	if err := e.run(); err != nil {
		s.log.Info().Err(err).Str("job_id", req.JobID).Msg("run ended with an error")
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return wire.RunResult{}, ctx.Err()
		}
		return wire.RunResult{}, err
	}
	took := s.clock.Since(start)
	s.mu.Lock()
	s.jobsDone++
	s.mu.Unlock()
	s.log.Info().Str("job_id", req.JobID).Int("outputs", len(e.outputs)).Dur("took", took).Msg("run done")
	return wire.RunResult{JobID: req.JobID, Outputs: e.outputs, RunNanos: took.Nanoseconds()}, nil
}

// checkJobID refuses job ids that are not one safe path segment: outputs
// are written under <output_dir>/<job_id>.
func checkJobID(id string) error {
	switch {
	case id == "":
		return errors.New("job_id is empty")
	case id == "." || id == "..", strings.ContainsAny(id, "/\\\x00"), len(id) > 255:
		return fmt.Errorf("job_id %q is not a safe directory name", id)
	}
	return nil
}

// value is what a node hands on through its outputs, as far as the cost
// model cares: the model family of its chain, the image or latent size, the
// seed, and for upscale models their factor.
type value struct {
	family        string
	width, height int
	batch         int
	sized         bool
	seed          uint64
	upscale       float64
	// pixels, when set, are the images themselves (one per batch item),
	// from the nodes that do real pixel work (corenodes.go); nil means the
	// picture the seed draws. Only a node's own output carries them:
	// inherit does not pass them on.
	pixels []*image.RGBA
}

// execution is the state of one Run.
type execution struct {
	sim      *sim
	ctx      context.Context
	jobID    string
	graph    *workflow.Graph
	cost     cost.Config
	dev      cost.Device
	outDir   string
	values   map[string]value
	counters map[string]int // per output prefix, ComfyUI's file counter
	outputs  []wire.Output
	progress func(wire.Progress)
	crash    bool // exit in the middle of this run
	params   map[string]workflow.SamplerParams
	// stages is the kernel's stage plan (nil: every model was loaded
	// before the run), stageOf each node's stage in it, and stage the
	// stage the run is in.
	stages  []wire.RunStage
	stageOf map[string]int
	stage   int
}

// nodeFunc executes one node and returns the value it hands on.
type nodeFunc func(e *execution, n *workflow.Node) (value, error)

// nodeTable maps every node class the sim executes to its implementation.
var nodeTable map[string]nodeFunc

func init() {
	nodeTable = map[string]nodeFunc{
		"CheckpointLoaderSimple":  (*execution).modelLoader,
		"CheckpointLoader":        (*execution).modelLoader,
		"UNETLoader":              (*execution).modelLoader,
		"UnetLoaderGGUF":          (*execution).modelLoader,
		"CLIPLoader":              (*execution).clipLoader,
		"DualCLIPLoader":          (*execution).clipLoader,
		"TripleCLIPLoader":        (*execution).clipLoader,
		"CLIPLoaderGGUF":          (*execution).clipLoader,
		"DualCLIPLoaderGGUF":      (*execution).clipLoader,
		"LoraLoader":              (*execution).loraLoader,
		"LoraLoaderModelOnly":     (*execution).loraLoader,
		"UpscaleModelLoader":      (*execution).upscaleLoader,
		"CLIPTextEncode":          (*execution).textEncode,
		"CLIPTextEncodeSDXL":      (*execution).textEncode,
		"CLIPTextEncodeSD3":       (*execution).textEncode,
		"CLIPTextEncodeFlux":      (*execution).textEncode,
		"RandomNoise":             (*execution).randomNoise,
		"EmptyLatentImage":        (*execution).emptyLatent,
		"EmptySD3LatentImage":     (*execution).emptyLatent,
		"LatentUpscale":           (*execution).resize,
		"LatentUpscaleBy":         (*execution).resize,
		"ImageScale":              (*execution).resize,
		"ImageScaleBy":            (*execution).resize,
		"ImageScaleToTotalPixels": (*execution).resize,
		"RepeatLatentBatch":       (*execution).repeatBatch,
		"KSampler":                (*execution).sample,
		"KSamplerAdvanced":        (*execution).sample,
		"SamplerCustom":           (*execution).sample,
		"SamplerCustomAdvanced":   (*execution).sample,
		"VAEDecode":               (*execution).vaeCode,
		"VAEDecodeTiled":          (*execution).vaeCode,
		"VAEEncode":               (*execution).vaeCode,
		"ImageUpscaleWithModel":   (*execution).upscale,
		"LoadImage":               (*execution).loadImage,
		"SaveImage":               (*execution).save,
		"PreviewImage":            (*execution).save,
		"SaveImageWebsocket":      (*execution).saveWebsocket,
	}
	// Nodes that cost nothing measurable: they pass on what they receive.
	for _, class := range []string{
		"VAELoader", "ControlNetLoader", "DiffControlNetLoader", "CLIPVisionLoader", "StyleModelLoader",
		"CLIPSetLastLayer", "ConditioningZeroOut", "ConditioningCombine", "ConditioningConcat",
		"ConditioningAverage", "ConditioningSetArea", "ConditioningSetMask", "ConditioningSetTimestepRange",
		"FluxGuidance", "ControlNetApply", "ControlNetApplyAdvanced", "ControlNetApplySD3",
		"SetUnionControlNetType", "ModelSamplingSD3", "ModelSamplingFlux", "ModelSamplingDiscrete",
		"ModelSamplingAuraFlow", "FreeU", "FreeU_V2", "BasicGuider", "CFGGuider", "DualCFGGuider",
		"KSamplerSelect", "BasicScheduler", "KarrasScheduler", "ExponentialScheduler", "SDTurboScheduler",
		"AlignYourStepsScheduler", "BetaSamplingScheduler", "SplitSigmas", "SamplerEulerAncestral",
		"SamplerDPMPP_2M_SDE", "SamplerDPMPP_SDE", "DisableNoise", "Canny",
		"PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline", "PrimitiveBoolean",
	} {
		nodeTable[class] = (*execution).passThrough
	}
	for class, f := range coreNodeFuncs {
		nodeTable[class] = f
	}
}

// nodeClasses returns the classes the sim executes, sorted.
func nodeClasses() []string {
	out := make([]string, 0, len(nodeTable))
	for c := range nodeTable {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

func (e *execution) run() error {
	e.params = map[string]workflow.SamplerParams{}
	for _, p := range e.graph.Params() {
		e.params[p.NodeID] = p
	}
	nodes := e.graph.Nodes()
	for _, n := range nodes {
		if nodeTable[n.ClassType] == nil {
			return wire.Errorf(wire.ErrCodeFailed, "run %s: node %s: unknown node class %s", e.jobID, n.ID, n.ClassType)
		}
	}
	for _, n := range nodes {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		if err := e.enterStage(n); err != nil {
			return err
		}
		// Max 0: node n starts executing (ComfyUI's "executing" message).
		e.progress(wire.Progress{JobID: e.jobID, Node: n.ID})
		v, err := nodeTable[n.ClassType](e, n)
		if err != nil {
			var we *wire.Error
			if errors.As(err, &we) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
				errors.Is(err, errCrashed) {
				return err
			}
			return wire.Errorf(wire.ErrCodeFailed, "run %s: node %s (%s): %v", e.jobID, n.ID, n.ClassType, err)
		}
		e.values[n.ID] = v
	}
	return nil
}

// planStages maps each node of g to its stage in plan, checking that the
// plan covers every node once; an empty plan maps nothing.
func planStages(g *workflow.Graph, plan []wire.RunStage) (map[string]int, error) {
	if len(plan) == 0 {
		return nil, nil
	}
	stageOf := make(map[string]int, g.Len())
	for k, st := range plan {
		for _, id := range st.Nodes {
			if g.Node(id) == nil {
				return nil, fmt.Errorf("stage %d names node %q, which is not in the workflow", k, id)
			}
			if _, dup := stageOf[id]; dup {
				return nil, fmt.Errorf("node %q is in two stages", id)
			}
			stageOf[id] = k
		}
	}
	if len(stageOf) != g.Len() {
		return nil, fmt.Errorf("the stages hold %d of the workflow's %d nodes", len(stageOf), g.Len())
	}
	return stageOf, nil
}

// enterStage moves the run on to node n's stage when n is the first node of
// a later one: it asks the kernel for each stage in turn (AwaitStage) and
// checks that the stage's models are loaded once the kernel says so.
func (e *execution) enterStage(n *workflow.Node) error {
	k, ok := e.stageOf[n.ID]
	for ok && e.stage < k {
		e.stage++
		if err := wire.AwaitStage(e.ctx, e.stage, n.ID); err != nil {
			return err
		}
		e.sim.mu.Lock()
		for _, m := range e.stages[e.stage].Models {
			if e.sim.models[m] == nil {
				e.sim.mu.Unlock()
				return wire.Errorf(wire.ErrCodeNotLoaded, "run %s: stage %d: model %q is not loaded", e.jobID, e.stage, m)
			}
		}
		e.sim.mu.Unlock()
	}
	return nil
}

// charge sleeps for d on the sim's clock, or until the run is cancelled.
func (e *execution) charge(d time.Duration) error {
	return e.sim.clock.Sleep(e.ctx, d)
}

// in returns the value of the node an input links to.
func (e *execution) in(n *workflow.Node, input string) (value, bool) {
	l, ok := n.Link(input)
	if !ok {
		return value{}, false
	}
	v, ok := e.values[l.NodeID]
	return v, ok
}

// inherit merges the values of all linked inputs (in input name order): the
// first family, the first size and the first seed found.
func (e *execution) inherit(n *workflow.Node) value {
	names := make([]string, 0, len(n.Inputs))
	for name := range n.Inputs {
		names = append(names, name)
	}
	sort.Strings(names)
	var out value
	for _, name := range names {
		v, ok := e.in(n, name)
		if !ok {
			continue
		}
		if out.family == "" {
			out.family = v.family
		}
		if !out.sized && v.sized {
			out.width, out.height, out.batch, out.sized = v.width, v.height, v.batch, true
		}
		if out.seed == 0 {
			out.seed = v.seed
		}
	}
	return out
}

func (e *execution) passThrough(n *workflow.Node) (value, error) { return e.inherit(n), nil }

func (e *execution) modelLoader(n *workflow.Node) (value, error) {
	for _, m := range e.graph.Models() {
		if m.NodeID == n.ID && (m.Folder == "checkpoints" || m.Folder == "diffusion_models" || m.Folder == "diffusers") {
			return value{family: m.Family}, nil
		}
	}
	return value{}, nil
}

func (e *execution) clipLoader(n *workflow.Node) (value, error) {
	// DualCLIPLoader and kin say which model the encoders are for.
	if t, ok := n.Inputs["type"].(string); ok {
		if _, known := e.cost.Lookup(t); known {
			return value{family: t}, nil
		}
	}
	return value{}, nil
}

func (e *execution) loraLoader(n *workflow.Node) (value, error) {
	v := e.inherit(n)
	if m, ok := e.in(n, "model"); ok && m.family != "" {
		v.family = m.family
	}
	return v, e.charge(e.cost.LoRAApplyTime(v.family, e.dev))
}

// upscaleFactor guesses an upscale model's factor from its name
// ("4x-UltraSharp", "RealESRGAN_x2plus"); 4 when the name does not say.
var upscaleFactor = regexp.MustCompile(`(?i)(?:^|[^0-9a-z])x?([1-8])x(?:[^0-9a-z]|$)|x([1-8])(?:plus|[^0-9a-z]|$)`)

func (e *execution) upscaleLoader(n *workflow.Node) (value, error) {
	name, _ := n.Inputs["model_name"].(string)
	f := 4.0
	if m := upscaleFactor.FindStringSubmatch(path.Base(name)); m != nil {
		d := m[1]
		if d == "" {
			d = m[2]
		}
		f, _ = strconv.ParseFloat(d, 64)
	}
	return value{upscale: f}, nil
}

func (e *execution) textEncode(n *workflow.Node) (value, error) {
	v := e.inherit(n)
	return v, e.charge(e.cost.TextEncodeTime(v.family, e.dev))
}

func (e *execution) randomNoise(n *workflow.Node) (value, error) {
	seed, err := seedInput(n, "noise_seed")
	return value{seed: seed}, err
}

func (e *execution) emptyLatent(n *workflow.Node) (value, error) {
	w, err1 := intInput(n, "width", workflow.DefaultWidth)
	h, err2 := intInput(n, "height", workflow.DefaultHeight)
	b, err3 := intInput(n, "batch_size", workflow.DefaultBatchSize)
	if err := errors.Join(err1, err2, err3); err != nil {
		return value{}, err
	}
	return sized(value{}, w, h, b)
}

// sized sets v's size after checking it.
func sized(v value, w, h, b int) (value, error) {
	if w < 1 || h < 1 || b < 1 || w > runLimits.MaxResolution || h > runLimits.MaxResolution || b > runLimits.MaxBatchSize {
		return value{}, fmt.Errorf("size %d×%d batch %d out of range", w, h, b)
	}
	v.width, v.height, v.batch, v.sized = w, h, b, true
	return v, nil
}

// resize implements the latent and image scaling nodes.
func (e *execution) resize(n *workflow.Node) (value, error) {
	v := e.inherit(n)
	if !v.sized {
		v.width, v.height, v.batch, v.sized = workflow.DefaultWidth, workflow.DefaultHeight, 1, true
	}
	w, h := v.width, v.height
	switch n.ClassType {
	case "LatentUpscale", "ImageScale":
		nw, err1 := intInput(n, "width", 0)
		nh, err2 := intInput(n, "height", 0)
		if err := errors.Join(err1, err2); err != nil {
			return value{}, err
		}
		switch {
		case nw == 0 && nh == 0:
		case nw == 0:
			w, h = int(math.Round(float64(w)*float64(nh)/float64(h))), nh
		case nh == 0:
			w, h = nw, int(math.Round(float64(h)*float64(nw)/float64(w)))
		default:
			w, h = nw, nh
		}
	case "LatentUpscaleBy", "ImageScaleBy":
		f, err := floatInput(n, "scale_by", 1)
		if err != nil {
			return value{}, err
		}
		w, h = int(math.Round(float64(w)*f)), int(math.Round(float64(h)*f))
	case "ImageScaleToTotalPixels":
		mp, err := floatInput(n, "megapixels", 1)
		if err != nil {
			return value{}, err
		}
		f := math.Sqrt(mp * 1024 * 1024 / float64(w*h))
		w, h = int(math.Round(float64(w)*f)), int(math.Round(float64(h)*f))
	}
	return sized(v, max(w, 1), max(h, 1), v.batch)
}

func (e *execution) repeatBatch(n *workflow.Node) (value, error) {
	v := e.inherit(n)
	k, err := intInput(n, "amount", 1)
	if err != nil {
		return value{}, err
	}
	if !v.sized {
		v.width, v.height, v.batch = workflow.DefaultWidth, workflow.DefaultHeight, 1
	}
	return sized(v, v.width, v.height, v.batch*max(k, 1))
}

func (e *execution) loadImage(n *workflow.Node) (value, error) {
	// The input file lives on the kernel's side; the sim assumes 512².
	return sized(value{}, workflow.DefaultWidth, workflow.DefaultHeight, 1)
}

// sample runs a sampler node: steps × StepTime, with progress and a
// PreviewSize² PNG preview after each step.
func (e *execution) sample(n *workflow.Node) (value, error) {
	p, ok := e.params[n.ID]
	if !ok {
		return value{}, fmt.Errorf("no sampling parameters")
	}
	lat, _ := e.in(n, "latent_image")
	model, _ := e.in(n, "model")
	if model.family == "" {
		model, _ = e.in(n, "guider")
	}
	out := lat
	out.family = p.Family
	if p.Model == "" && model.family != "" {
		out.family = model.family
	}
	if !out.sized {
		out.width, out.height, out.batch, out.sized = p.Width, p.Height, p.BatchSize, true
	}
	var err error
	switch n.ClassType {
	case "KSampler":
		out.seed, err = seedInput(n, "seed")
	case "KSamplerAdvanced", "SamplerCustom":
		out.seed, err = seedInput(n, "noise_seed")
	default:
		if noise, ok := e.in(n, "noise"); ok {
			out.seed = noise.seed
		}
	}
	if err != nil {
		return value{}, err
	}
	step := e.cost.StepTime(out.family, out.width, out.height, out.batch, e.dev)
	// A model loaded under a VRAM budget moves its streamed weights to the
	// device every step (cost.StreamTime).
	e.sim.mu.Lock()
	if m := e.sim.models[p.Model]; m != nil {
		step += e.cost.StreamTime(m.streamed, 1, e.dev)
	}
	e.sim.mu.Unlock()
	for i := 1; i <= p.Steps; i++ {
		if err := e.charge(step); err != nil {
			return value{}, err
		}
		pr := wire.Progress{JobID: e.jobID, Node: n.ID, Value: i, Max: p.Steps}
		// A preview with every step, as ComfyUI's latent previewer sends
		// one per step; a preview that fails to encode is left out.
		if img, err := renderPreview(out.seed, i, p.Steps); err == nil {
			pr.Preview, pr.PreviewFormat = img, wire.PreviewPNG
		}
		e.progress(pr)
		if e.crash {
			e.sim.log.Warn().Str("job_id", e.jobID).Str("env", EnvCrashAfterJobs).Msg("simulated crash")
			e.sim.exit(CrashExitCode)
			return value{}, errCrashed // only reached when exit is a test double
		}
	}
	return out, nil
}

// vaeCode decodes a latent to images (or encodes images to a latent).
func (e *execution) vaeCode(n *workflow.Node) (value, error) {
	v := e.inherit(n)
	if !v.sized {
		v.width, v.height, v.batch, v.sized = workflow.DefaultWidth, workflow.DefaultHeight, 1, true
	}
	// Encoding is charged like decoding (⚠ assumption: no COSTS.md row).
	return v, e.charge(e.cost.DecodeTime(v.family, v.width, v.height, v.batch, e.dev))
}

func (e *execution) upscale(n *workflow.Node) (value, error) {
	img, _ := e.in(n, "image")
	m, _ := e.in(n, "upscale_model")
	if !img.sized {
		img.width, img.height, img.batch, img.sized = workflow.DefaultWidth, workflow.DefaultHeight, 1, true
	}
	f := m.upscale
	if f <= 0 {
		f = 4
	}
	out, err := sized(img, int(math.Round(float64(img.width)*f)), int(math.Round(float64(img.height)*f)), img.batch)
	if err != nil {
		return value{}, err
	}
	return out, e.charge(e.cost.UpscaleTime(out.width, out.height, out.batch, e.dev))
}

// save writes the node's images as PNGs, named as ComfyUI names them:
// <prefix>_<NNNNN>_.png under <output_dir>/<job_id>[/<prefix's folder>],
// the counter per prefix within the job. The job's folder is the worker
// protocol's (sdk/worker/PROTOCOL.md: a re-run of the job overwrites its
// files); the kernel gives the files ComfyUI's names in the output folder
// itself, with a counter that continues across prompts
// (docs/comfyui.md). PreviewImage's prefix is "ComfyUI_temp_" and five
// letters, as in ComfyUI, drawn from the job and node ids so that a re-run
// writes the same names.
func (e *execution) save(n *workflow.Node) (value, error) {
	img, ok := e.in(n, "images")
	if !ok {
		return value{}, fmt.Errorf("input images is not linked")
	}
	if !img.sized {
		img.width, img.height, img.batch = workflow.DefaultWidth, workflow.DefaultHeight, 1
	}
	typ, prefix := "output", "ComfyUI"
	if p, ok := n.Inputs["filename_prefix"].(string); ok && p != "" {
		prefix = p
	}
	if n.ClassType == "PreviewImage" {
		typ, prefix = "temp", "ComfyUI_temp_"+previewLettersFor(e.jobID, n.ID)
	}
	prefix = expandPrefix(prefix, img.width, img.height, e.sim.clock.Now())
	clean := path.Clean(strings.ReplaceAll(prefix, "\\", "/"))
	if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") || strings.ContainsRune(clean, 0) {
		return value{}, fmt.Errorf("filename_prefix %q leaves the output directory", prefix)
	}
	dir, base := path.Split(clean)
	subfolder := path.Join(e.jobID, dir)
	for i := 0; i < img.batch; i++ {
		if err := e.ctx.Err(); err != nil {
			return value{}, err
		}
		e.counters[clean]++
		name := fmt.Sprintf("%s_%05d_.png", strings.ReplaceAll(base, "%batch_num%", strconv.Itoa(i)), e.counters[clean])
		file := filepath.Join(e.outDir, filepath.FromSlash(subfolder), name)
		if err := writeImagePNG(file, img.picture(i)); err != nil {
			return value{}, err
		}
		e.outputs = append(e.outputs, wire.Output{
			Node: n.ID, Filename: name, Subfolder: subfolder, Type: typ,
			Width: img.width, Height: img.height,
		})
	}
	return img, nil
}

// OutputWebsocket is the output type of a SaveImageWebsocket image: the
// kernel sends the file to the prompt's WebSocket client as a binary frame
// and then deletes it; it is not a saved output (see docs/comfyui.md).
const OutputWebsocket = "websocket"

// websocketDir is where SaveImageWebsocket images wait for the kernel,
// below the job's folder: a dot folder, so that no filename_prefix of a
// SaveImage names it by accident.
const websocketDir = ".websocket"

// saveWebsocket is ComfyUI's SaveImageWebsocket: each image goes to the
// client as a full-size PNG on the WebSocket instead of into the output
// folder. The sim writes image i as <job id>/websocketDir/<node>_<i>.png,
// then reports progress i+1 of n for the node, on which the kernel frames
// and sends it; the images are also reported as OutputWebsocket outputs,
// for the kernel to send any it missed and to delete them.
// ComfyUI's node writes no metadata into these images.
func (e *execution) saveWebsocket(n *workflow.Node) (value, error) {
	img, ok := e.in(n, "images")
	if !ok {
		return value{}, fmt.Errorf("input images is not linked")
	}
	if !img.sized {
		img.width, img.height, img.batch = workflow.DefaultWidth, workflow.DefaultHeight, 1
	}
	subfolder := path.Join(e.jobID, websocketDir)
	for i := 0; i < img.batch; i++ {
		if err := e.ctx.Err(); err != nil {
			return value{}, err
		}
		name := fmt.Sprintf("%s_%05d.png", n.ID, i)
		if err := writePNG(filepath.Join(e.outDir, filepath.FromSlash(subfolder), name), img.width, img.height, img.seed+uint64(i)); err != nil {
			return value{}, err
		}
		e.outputs = append(e.outputs, wire.Output{
			Node: n.ID, Filename: name, Subfolder: subfolder, Type: OutputWebsocket,
			Width: img.width, Height: img.height,
		})
		// Image i is on disk: the kernel sends it while the node runs,
		// as ComfyUI's node does with each image.
		e.progress(wire.Progress{JobID: e.jobID, Node: n.ID, Value: i + 1, Max: img.batch})
	}
	return img, nil
}

// expandPrefix replaces the variables ComfyUI's get_save_image_path
// expands in a filename prefix: %width%, %height% and the date and time.
func expandPrefix(p string, w, h int, now time.Time) string {
	if !strings.Contains(p, "%") {
		return p
	}
	return strings.NewReplacer(
		"%width%", strconv.Itoa(w), "%height%", strconv.Itoa(h),
		"%year%", strconv.Itoa(now.Year()), "%month%", fmt.Sprintf("%02d", int(now.Month())),
		"%day%", fmt.Sprintf("%02d", now.Day()), "%hour%", fmt.Sprintf("%02d", now.Hour()),
		"%minute%", fmt.Sprintf("%02d", now.Minute()), "%second%", fmt.Sprintf("%02d", now.Second()),
	).Replace(p)
}

// intInput reads a literal integer input; absent or linked inputs give def.
func intInput(n *workflow.Node, name string, def int) (int, error) {
	v, ok := n.Inputs[name]
	if !ok {
		return def, nil
	}
	if _, isLink := n.Link(name); isLink {
		return def, nil
	}
	f, err := toFloat(v)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > math.MaxInt32 {
		return 0, fmt.Errorf("input %s: want an integer, got %v", name, v)
	}
	return int(f), nil
}

// floatInput reads a literal number input; absent or linked inputs give def.
func floatInput(n *workflow.Node, name string, def float64) (float64, error) {
	v, ok := n.Inputs[name]
	if !ok {
		return def, nil
	}
	if _, isLink := n.Link(name); isLink {
		return def, nil
	}
	f, err := toFloat(v)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("input %s: want a number, got %v", name, v)
	}
	return f, nil
}

// seedInput reads a seed: any integer ComfyUI accepts (up to 2⁶⁴−1);
// absent or linked seeds give 0.
func seedInput(n *workflow.Node, name string) (uint64, error) {
	v, ok := n.Inputs[name]
	if !ok {
		return 0, nil
	}
	if _, isLink := n.Link(name); isLink {
		return 0, nil
	}
	switch x := v.(type) {
	case uint64:
		return x, nil
	case int64:
		return uint64(x), nil
	case int:
		return uint64(x), nil
	case json.Number:
		if u, err := strconv.ParseUint(string(x), 10, 64); err == nil {
			return u, nil
		}
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return uint64(i), nil
		}
	}
	f, err := toFloat(v)
	if err != nil || f != math.Trunc(f) || f < math.MinInt64 || f >= 1<<64 {
		return 0, fmt.Errorf("input %s: want an integer seed, got %v", name, v)
	}
	if f < 0 {
		return uint64(int64(f)), nil
	}
	return uint64(f), nil
}

// toFloat converts the numbers a decoded workflow may hold (JSON, msgpack
// or Go literals) to float64.
func toFloat(v any) (float64, error) {
	switch x := v.(type) {
	case float64:
		return x, nil
	case float32:
		return float64(x), nil
	case int:
		return float64(x), nil
	case int8:
		return float64(x), nil
	case int16:
		return float64(x), nil
	case int32:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case uint:
		return float64(x), nil
	case uint8:
		return float64(x), nil
	case uint16:
		return float64(x), nil
	case uint32:
		return float64(x), nil
	case uint64:
		return float64(x), nil
	case json.Number:
		return x.Float64()
	case bool:
		return 0, fmt.Errorf("want a number, got a bool")
	}
	return 0, fmt.Errorf("want a number, got %T", v)
}
