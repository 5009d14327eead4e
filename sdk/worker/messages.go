package worker

// ProtocolVersion is the version of the worker protocol described in
// PROTOCOL.md. The kernel sends it in hello; a worker that does not speak it
// answers with an error frame and exits.
//
// History:
//   - 1: initial protocol (hello, ping, load, unload, run, progress, result,
//     cancel, stats).
//   - 1.1: stages (the stage request, RunRequest.stages, Progress.stage,
//     LoadRequest.weight_dtype), additive: a kernel sends stages only to a
//     worker whose hello reply lists CapabilityStages, and a worker sees
//     the kernel's minor version in HelloRequest.ProtocolMinor.
//   - 1.2: weight streaming and measured activations (LoadRequest
//     vram_budget_bytes, LoadReply streamed_bytes, RunResult
//     activation_bytes), additive: a kernel sets a budget only for a
//     worker whose hello reply lists CapabilityStream.
//   - 1.3: the workflow as the client's JSON bytes (RunRequest
//     workflow_json instead of the workflow map), additive: a kernel sends
//     it only to a worker whose hello reply lists CapabilityWorkflowJSON,
//     and spares a decode and a re-encode of the graph per run. Serve
//     lists it for every handler and decodes the bytes into Workflow.
const ProtocolVersion = 1

// ProtocolMinor is the minor version of the protocol this package speaks:
// additions that older peers ignore (PROTOCOL.md §8).
const ProtocolMinor = 3

// MaxFrameBytes bounds one frame (4-byte length prefix excluded). Bulk bytes
// never travel through the socket, so a frame near this size is a bug or an
// attack, and the decoder refuses it before allocating.
const MaxFrameBytes = 16 << 20

// Message types. Requests flow kernel → worker; replies and progress flow
// worker → kernel and carry the id of the request they answer.
const (
	TypeHello    = "hello"    // request: HelloRequest; reply ok: HelloReply
	TypePing     = "ping"     // request: PingRequest; reply ok: PingReply
	TypeLoad     = "load"     // request: LoadRequest; reply ok: LoadReply
	TypeUnload   = "unload"   // request: UnloadRequest; reply ok: UnloadReply
	TypeRun      = "run"      // request: RunRequest; progress*, then result: RunResult
	TypeCancel   = "cancel"   // request: CancelRequest; reply ok: empty map
	TypeStats    = "stats"    // request: empty map; reply ok: StatsReply
	TypeStage    = "stage"    // request: StageRequest; reply ok: empty map (workers with CapabilityStages)
	TypeOK       = "ok"       // terminal reply to every request but run
	TypeError    = "error"    // terminal reply to any request: ErrorReply
	TypeProgress = "progress" // non-terminal, for a run: Progress
	TypeResult   = "result"   // terminal reply to run: RunResult
)

// Header is the first msgpack value of every frame.
type Header struct {
	// ID is chosen by the kernel for a request (non-zero, unique per
	// connection) and copied by the worker into every frame that answers it.
	ID   uint64 `msgpack:"id"`
	Type string `msgpack:"type"`
}

// Error codes carried in ErrorReply.Code.
const (
	ErrCodeBadRequest  = "bad_request"   // the request could not be decoded or is invalid
	ErrCodeUnsupported = "unsupported"   // unknown message type or protocol version
	ErrCodeNotLoaded   = "not_loaded"    // run or unload names a model that is not loaded
	ErrCodeOutOfMemory = "out_of_memory" // the device cannot hold the model
	ErrCodeCancelled   = "cancelled"     // the run was cancelled
	ErrCodeFailed      = "failed"        // the run failed (bad graph, missing file, ...)
	ErrCodeInternal    = "internal"      // anything else
)

// ErrorReply is the body of an error frame.
type ErrorReply struct {
	Code    string `msgpack:"code"`
	Message string `msgpack:"message"`
}

// HelloRequest is the first request on a connection.
type HelloRequest struct {
	Protocol int `msgpack:"protocol"`
	// ProtocolMinor (optional, additive) is the kernel's ProtocolMinor; 0
	// from a kernel that predates minor versions.
	ProtocolMinor int    `msgpack:"protocol_minor,omitempty"`
	WorkerID      string `msgpack:"worker_id"`
	// Device describes the device this worker is pinned to.
	Device DeviceInfo `msgpack:"device"`
	// OutputDir is where the worker writes output files (under the job id).
	OutputDir string `msgpack:"output_dir"`
	// Options is worker-specific configuration (for kiln-worker-sim: the cost
	// model). Workers ignore keys they do not know.
	Options map[string]any `msgpack:"options"`
}

// DeviceInfo describes the (possibly simulated) device a worker runs on.
type DeviceInfo struct {
	Index         int     `msgpack:"index"`
	Name          string  `msgpack:"name"`
	UUID          string  `msgpack:"uuid"`
	MemoryBytes   uint64  `msgpack:"memory_bytes"`
	H2DBandwidth  float64 `msgpack:"h2d_bytes_per_s"`
	ComputeFactor float64 `msgpack:"compute_factor"`
	Simulated     bool    `msgpack:"simulated"`
}

// HelloReply is the ok body answering hello.
type HelloReply struct {
	Protocol     int      `msgpack:"protocol"`
	Name         string   `msgpack:"name"`
	Version      string   `msgpack:"version"`
	PID          int      `msgpack:"pid"`
	Capabilities []string `msgpack:"capabilities"` // e.g. "cancel", "node:KSampler"
	// NodeSpecs (optional, added in protocol 1 without a version change)
	// describes the node classes the worker executes, class → a ComfyUI
	// /object_info entry ({"input": {"required": {...}, "optional": {...}},
	// "output": [...], "output_node": bool, ...}). The kernel serves these on
	// /object_info and validates /prompt graphs against them. A worker that
	// sends none is validated on class names only.
	NodeSpecs map[string]any `msgpack:"node_specs,omitempty"`
}

// PingRequest carries an opaque nonce echoed in the reply.
type PingRequest struct {
	Nonce uint64 `msgpack:"nonce"`
}

// PingReply echoes the nonce.
type PingReply struct {
	Nonce uint64 `msgpack:"nonce"`
}

// CapabilityStages, in HelloReply.Capabilities, says that the worker runs a
// RunRequest's Stages: it asks for each stage after the first with a
// Progress whose Stage is set and waits for the kernel's StageRequest
// before it goes on (PROTOCOL.md §3, "Stages"). The kernel sends Stages
// only to workers that advertise it; others get every model before run.
const CapabilityStages = "stages"

// CapabilityStream, in HelloReply.Capabilities, says that the worker can
// run a model whose weights exceed the VRAM it may use: it keeps at most
// LoadRequest.VRAMBudgetBytes of them on the device and streams the rest
// from the mapped file (host memory) to the device as the layers run, each
// step (PROTOCOL.md §3, "Weight streaming"). The kernel sets a budget only
// for workers that advertise it.
const CapabilityStream = "stream"

// CapabilityWorkflowJSON, in HelloReply.Capabilities, says that the worker
// takes a run's graph as RunRequest.WorkflowJSON, the bytes the client
// sent (protocol 1.3): the kernel then sends them as stored instead of
// decoding them and encoding a msgpack map. Serve advertises it for every
// Go handler and fills RunRequest.Workflow from the bytes.
const CapabilityWorkflowJSON = "workflow_json"

// LoadRequest asks the worker to make a model resident on its device.
type LoadRequest struct {
	Model  string `msgpack:"model"`  // catalog id, e.g. "checkpoints/sd_xl_base_1.0.safetensors"
	Path   string `msgpack:"path"`   // file to map read-only (L2 segment or local file)
	Bytes  int64  `msgpack:"bytes"`  // expected file size; a mismatch is an error
	Family string `msgpack:"family"` // cost-model family: sd15, sdxl, flux, lora, vae, ...
	// WeightDType (optional, additive) is the dtype the graph's loader
	// casts the weights to (UNETLoader's weight_dtype, "fp8_e4m3fn"); the
	// footprint the kernel reserved assumes it. Empty: the file's dtype.
	WeightDType string `msgpack:"weight_dtype,omitempty"`
	// VRAMBudgetBytes (optional, 1.2, workers with CapabilityStream) is
	// the most of the model's weights the worker may keep on the device;
	// the rest it streams from the mapping as the layers run. 0: no
	// budget, every weight resident.
	VRAMBudgetBytes int64 `msgpack:"vram_budget_bytes,omitempty"`
}

// LoadReply reports what the load cost.
type LoadReply struct {
	Model     string `msgpack:"model"`
	VRAMBytes int64  `msgpack:"vram_bytes"` // device memory the model holds (the resident part when streamed)
	LoadNanos int64  `msgpack:"load_ns"`
	Checksum  string `msgpack:"checksum"` // hex digest of the sampled bytes
	// StreamedBytes (optional, 1.2) are the model's weight bytes left in
	// host memory and streamed each step under a VRAMBudgetBytes.
	StreamedBytes int64 `msgpack:"streamed_bytes,omitempty"`
}

// UnloadRequest asks the worker to free a model.
type UnloadRequest struct {
	Model string `msgpack:"model"`
}

// UnloadReply reports what was freed.
type UnloadReply struct {
	Model      string `msgpack:"model"`
	FreedBytes int64  `msgpack:"freed_bytes"`
}

// RunRequest asks the worker to execute one job's workflow.
type RunRequest struct {
	JobID   string `msgpack:"job_id"`
	Attempt int    `msgpack:"attempt"`
	// Workflow is the ComfyUI API-format graph: node id → {class_type, inputs}.
	// A 1.3 kernel leaves it out for a worker with CapabilityWorkflowJSON
	// and sends WorkflowJSON; Serve then decodes that into Workflow before
	// it calls the handler, so handlers find the graph here either way.
	Workflow map[string]any `msgpack:"workflow,omitempty"`
	// WorkflowJSON (1.3, workers with CapabilityWorkflowJSON) is the
	// graph as the client sent it: a JSON object, the bytes the kernel
	// stored. A handler that passes the graph on as JSON may use it as is.
	WorkflowJSON []byte `msgpack:"workflow_json,omitempty"`
	// Models maps the model names the graph uses ("checkpoints/x.safetensors")
	// to the ids loaded on this worker; all of them were loaded before run.
	Models []string `msgpack:"models"`
	// Stages (optional, sent only to workers with CapabilityStages) is the
	// kernel's plan of the run: the graph's nodes in stages, each with the
	// models it needs resident. Stage 0's models are loaded before run;
	// before the first node of stage k ≥ 1 the worker sends a Progress
	// with Stage k and waits for a StageRequest for k. Models holds every
	// model of the graph either way.
	Stages []RunStage `msgpack:"stages,omitempty"`
}

// RunStage is one stage of a run's plan.
type RunStage struct {
	// Models are the models the stage's nodes use; the kernel has them
	// loaded when the stage starts. Models of earlier stages that no later
	// stage lists may be unloaded meanwhile.
	Models []string `msgpack:"models"`
	// Nodes are the stage's node ids, in the order the kernel planned.
	Nodes []string `msgpack:"nodes"`
}

// StageRequest tells a worker that stage Stage of the run with request id
// Target has its models loaded: the run goes on. The worker answers ok at
// once (also for a run it no longer knows). When the kernel cannot make
// room for a stage it cancels the run instead.
type StageRequest struct {
	Target uint64 `msgpack:"target"`
	Stage  int    `msgpack:"stage"`
}

// Progress is sent while a run executes, at least once per sampler step.
type Progress struct {
	JobID string `msgpack:"job_id"`
	Node  string `msgpack:"node"`
	Value int    `msgpack:"value"`
	Max   int    `msgpack:"max"`
	// Preview (optional, added in protocol 1 without a version change) is
	// a small picture of the run so far, encoded as PreviewFormat
	// (PreviewPNG or PreviewJPEG), at most MaxPreviewBytes. The kernel
	// forwards it to ComfyUI WebSocket clients as a binary preview frame;
	// it drops a larger one or one of another format, and the step still
	// counts. Kernels that predate the field ignore it.
	Preview       []byte `msgpack:"preview,omitempty"`
	PreviewFormat string `msgpack:"preview_format,omitempty"`
	// Stage (optional, additive; workers with CapabilityStages) set to
	// k ≥ 1 says the run is about to start stage k of its RunRequest's
	// Stages, at node Node, and waits for the kernel's StageRequest. Such
	// a frame is no step and no "executing" message.
	Stage int `msgpack:"stage,omitempty"`
}

// Preview formats for Progress.PreviewFormat.
const (
	PreviewPNG  = "png"
	PreviewJPEG = "jpeg"
)

// MaxPreviewBytes bounds Progress.Preview. Previews are thumbnails that a
// client shows while it waits (ComfyUI's are 512 px at most); the bound
// keeps one step's frame small next to MaxFrameBytes.
const MaxPreviewBytes = 512 << 10

// Output names one file the run wrote.
type Output struct {
	Node      string `msgpack:"node"`
	Filename  string `msgpack:"filename"`
	Subfolder string `msgpack:"subfolder"`
	Type      string `msgpack:"type"` // output | temp
	Width     int    `msgpack:"width"`
	Height    int    `msgpack:"height"`
}

// RunResult is the terminal reply to a successful run.
type RunResult struct {
	JobID    string   `msgpack:"job_id"`
	Outputs  []Output `msgpack:"outputs"`
	RunNanos int64    `msgpack:"run_ns"`
	// ActivationBytes (optional, 1.2) is the most device memory the run
	// held beyond its models' weights (the allocator's peak less the
	// weights, measured), so that the kernel's activation estimate
	// follows what runs really take. 0: not measured.
	ActivationBytes int64 `msgpack:"activation_bytes,omitempty"`
}

// CancelRequest cancels a run in flight; the run then ends with an error frame
// whose code is ErrCodeCancelled. Cancelling an unknown or finished run is ok.
type CancelRequest struct {
	Target uint64 `msgpack:"target"` // id of the run request
}

// ModelStat is the VRAM held by one loaded model.
type ModelStat struct {
	Model     string `msgpack:"model"`
	VRAMBytes int64  `msgpack:"vram_bytes"`
}

// StatsReply reports the worker's state.
type StatsReply struct {
	Models   []ModelStat `msgpack:"models"`
	VRAMUsed int64       `msgpack:"vram_used"`
	JobsDone int64       `msgpack:"jobs_done"`
	RSSBytes int64       `msgpack:"rss_bytes"`
	Running  int         `msgpack:"running"`
	// NodeSpecs repeats HelloReply.NodeSpecs (optional, additive), so that a
	// kernel that did not keep the hello reply can ask for them again.
	NodeSpecs map[string]any `msgpack:"node_specs,omitempty"`
}
