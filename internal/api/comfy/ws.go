package comfy

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/kiln-gpu/kiln/internal/api/apiconfig"
	"github.com/kiln-gpu/kiln/internal/job"
	"github.com/kiln-gpu/kiln/internal/workflow"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// hub turns dispatcher events into ComfyUI WebSocket messages, sent to the
// prompt's client (every client when the prompt has none), and keeps what
// /history needs beyond the store: the client's extra_data and the prompts
// answered from the result cache.
type hub struct {
	c     *comfy
	cache *resultCache

	mu        sync.Mutex
	conns     map[*wsConn]struct{}
	runs      map[string]*runState
	extra     map[string]map[string]any
	names     map[string][]job.Output  // prompt id → its outputs under ComfyUI's names (names.go)
	nameOrder []string                 // names' keys, oldest first, to bound it
	hits      map[string]*cachedPrompt // prompt id → prompt answered from the cache
	hitSeq    []string                 // hits in arrival order, for bounds and max_items
	pending   map[string][]wsMessage   // cache-hit messages waiting for the HTTP answer
	// finishing are the prompts the store has finished whose end the hub
	// is still sending (PNG metadata, ComfyUI names, executed): /queue
	// lists them as running and /history not yet, as ComfyUI keeps a
	// prompt in currently_running until task_done, so that no client
	// sees one in neither or finds the worker's file names in /history.
	finishing map[string]*job.Job
}

// runState is what the hub remembers of a running prompt.
type runState struct {
	lastNode string
	// nodes is the prompt's progress registry, as ComfyUI's
	// comfy_execution.progress keeps it: every node that started, in
	// order, with its state, for progress_state messages.
	nodes    []*nodeProgress
	executed []string
	// classes is the prompt's node id → class, read once when needed.
	classes map[string]string
	// wsSent counts the SaveImageWebsocket images sent per node.
	wsSent map[string]int
}

// wsMessage is one text frame: {"type": ..., "data": ...}.
type wsMessage struct {
	Type string `json:"type"`
	Data any    `json:"data"`
}

// wsConn is one WebSocket client.
type wsConn struct {
	id   string
	send chan wsFrame
	// previews counts the preview frames in send: the memory bound of
	// maxQueuedPreviews is about them, not about the small text frames
	// that progress_state adds several of per step.
	previews atomic.Int32
	// previewMetadata is set when the client sent feature_flags with
	// supports_preview_metadata: it then gets type 4 preview frames
	// instead of type 1. Guarded by hub.mu.
	previewMetadata bool
}

// wsFrame is one frame queued for a client: a JSON text message, or a
// binary preview frame.
type wsFrame struct {
	binary bool
	// preview marks a frame counted in wsConn.previews.
	preview bool
	data    []byte
}

// Binary frame types, from ComfyUI's protocol.BinaryEventTypes. kiln sends
// these two only: types 2 (unencoded preview, converted to 1 by ComfyUI
// before it is sent) and 3 (progress text) never leave kiln.
const (
	// binPreviewImage is [u32 1][u32 format][image bytes], big-endian,
	// format previewJPEG or previewPNG (ComfyUI's send_image).
	binPreviewImage = 1
	// binPreviewImageWithMetadata is [u32 4][u32 len][metadata JSON of len
	// bytes][image bytes], big-endian (ComfyUI's send_image_with_metadata).
	binPreviewImageWithMetadata = 4
)

// maxQueuedPreviews is how many previews a client's send queue may hold
// for another to join it: previews may be large (up to
// wire.MaxPreviewBytes each), so a client that falls behind gets text
// messages only, and a stalled one holds at most this many previews in
// memory. Text frames do not count: progress_state sends several per step,
// and counting them dropped previews from a client that was keeping up.
const maxQueuedPreviews = 16

// Image formats in a type 1 frame, as ComfyUI's send_image numbers them.
const (
	previewJPEG = 1
	previewPNG  = 2
)

func newHub(c *comfy) *hub {
	return &hub{
		c: c, cache: newResultCache(c.cfg.Cache, c.deps.Clock, c.deps.OutputDir, c.cacheCounter()),
		conns: map[*wsConn]struct{}{}, runs: map[string]*runState{}, extra: map[string]map[string]any{},
		hits: map[string]*cachedPrompt{}, pending: map[string][]wsMessage{}, names: map[string][]job.Output{},
		finishing: map[string]*job.Job{},
	}
}

func (h *hub) nowMS() int64 { return h.c.deps.Clock.Now().UnixMilli() }

// run consumes dispatcher events for the life of the process.
func (h *hub) run() {
	events, _ := h.c.deps.Dispatcher.Subscribe(8192)
	for e := range events {
		h.handle(e)
	}
}

func (h *hub) handle(e job.Event) {
	id := e.JobID
	switch e.Type {
	case job.EventStarted:
		h.mu.Lock()
		rs, seen := h.runs[id]
		if !seen {
			rs = &runState{}
			h.runs[id] = rs
		}
		if rs.classes == nil && e.Job != nil && e.Job.Facts != nil {
			// The classes parsed at submit: isWebsocketNode and
			// errorData read no job back.
			rs.classes = e.Job.Facts.Classes
		}
		h.mu.Unlock()
		if !seen {
			ts := h.nowMS()
			h.send(e.ClientID, "execution_start", map[string]any{"prompt_id": id, "timestamp": ts})
			h.send(e.ClientID, "execution_cached", map[string]any{"nodes": []string{}, "prompt_id": id, "timestamp": ts})
		}
		h.broadcastStatus()
	case job.EventProgress:
		h.mu.Lock()
		rs := h.runs[id]
		if rs == nil {
			rs = &runState{}
			h.runs[id] = rs
		}
		newNode := rs.lastNode != e.Node
		var finishedState, startState, stepState map[string]any
		if newNode {
			if rs.lastNode != "" {
				rs.progress(rs.lastNode).finish()
				finishedState = rs.progressState(id)
			}
			rs.lastNode = e.Node
			rs.executed = append(rs.executed, e.Node)
			rs.progress(e.Node).start()
			startState = rs.progressState(id)
		}
		var wsImage []byte
		value := e.Value
		if e.Max > 0 {
			if h.isWebsocketNode(id, rs, e.Node) {
				// A SaveImageWebsocket image is ready: send it now, while
				// its node executes, at ComfyUI's 0-based index.
				value = e.Value - 1
				wsImage = h.readWebsocketImage(id, e.Node, value)
				if wsImage != nil {
					rs.wsSent[e.Node]++
				}
			}
			rs.progress(e.Node).update(value, e.Max)
			stepState = rs.progressState(id)
		}
		h.mu.Unlock()
		// progress_state goes to the prompt's client (every client for a
		// prompt without one), as WebUIProgressHandler sends it with the
		// server's client_id.
		if finishedState != nil {
			h.send(e.ClientID, "progress_state", finishedState)
		}
		if newNode {
			// ComfyUI marks the node started (progress_state) before
			// it sends "executing".
			h.send(e.ClientID, "progress_state", startState)
			h.send(e.ClientID, "executing", map[string]any{"node": e.Node, "display_node": e.Node, "prompt_id": id})
		}
		switch {
		case wsImage != nil:
			h.sendStep(e.ClientID, id, e.Node, value, e.Max, stepState, wire.PreviewPNG, wsImage, true, true)
		case e.Max > 0:
			h.sendStep(e.ClientID, id, e.Node, value, e.Max, stepState, e.PreviewFormat, e.Preview, h.previewsOn(id), false)
		}
	case job.EventRequeued, job.EventPreempted:
		h.broadcastStatus()
	case job.EventFinished:
		h.setFinishing(id, e.Job)
		h.finished(e)
		h.broadcastStatus()
	}
}

// setFinishing marks a prompt as finishing (j, the job the store
// committed) or, with nil, as finished for the ComfyUI routes too.
func (h *hub) setFinishing(id string, j *job.Job) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if j == nil {
		delete(h.finishing, id)
		return
	}
	h.finishing[id] = j
}

// finishingJobs lists the prompts being finished; isFinishing says whether
// id is one.
func (h *hub) finishingJobs() []*job.Job {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*job.Job, 0, len(h.finishing))
	for _, j := range h.finishing {
		out = append(out, j)
	}
	return out
}

func (h *hub) isFinishing(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.finishing[id]
	return ok
}

// finished sends the end of a prompt. The store recorded the outcome
// before the dispatcher published it, so /queue and /history already agree
// with execution_success when a client reads them.
func (h *hub) finished(e job.Event) {
	id := e.JobID
	defer h.setFinishing(id, nil) // whatever the outcome; each ending clears it before its last message
	h.mu.Lock()
	rs := h.runs[id]
	delete(h.runs, id)
	h.mu.Unlock()
	ts := h.nowMS()
	if cl := h.c.deps.Cluster; cl != nil {
		// Deferred first, so it runs last: the files are final (PNG
		// metadata written, websocket images gone) and the cluster may
		// copy them to its object store.
		defer cl.OutputsWritten(id)
	}
	defer h.removeWebsocketImages(id, e.Outputs)
	switch e.State {
	case job.Done:
		// The dispatcher hands over the job the store committed; an
		// event without one (none today) reads it back.
		j, jerr := e.Job, error(nil)
		if j == nil {
			j, jerr = h.c.deps.Store.Get(id)
		}
		if jerr == nil {
			h.writePNGInfo(id, j.Workflow, savedOutputs(e.Outputs))
		}
		// The metadata first: the ComfyUI names are links to the same files.
		named := h.nameOutputs(id, e.Outputs)
		h.sendWebsocketImages(e, rs)
		if rs != nil {
			h.mu.Lock()
			for _, n := range rs.nodes {
				n.finish()
			}
			st := rs.progressState(id)
			h.mu.Unlock()
			if len(rs.nodes) > 0 {
				h.send(e.ClientID, "progress_state", st)
			}
		}
		saved := savedOutputs(named)
		for _, node := range outputNodes(saved) {
			h.send(e.ClientID, "executed", map[string]any{"node": node, "display_node": node,
				"output": uiOf(saved, node), "prompt_id": id})
		}
		h.setFinishing(id, nil) // in /history from here on, before execution_success
		h.send(e.ClientID, "execution_success", map[string]any{"prompt_id": id, "timestamp": ts})
		if jerr == nil {
			// A copy: the event's job is shared with its other
			// subscribers and hooks.
			done := *j
			done.Outputs = named
			h.cache.store(&done)
		}
	case job.Failed:
		h.setFinishing(id, nil)
		h.send(e.ClientID, "execution_error", h.errorData(id, rs, e.Error, ts))
	case job.Cancelled:
		h.setFinishing(id, nil)
		if rs == nil {
			return // cancelled while queued: ComfyUI says nothing
		}
		h.send(e.ClientID, "execution_interrupted", h.interruptedData(id, rs, ts))
	}
	h.send(e.ClientID, "executing", map[string]any{"node": nil, "display_node": nil, "prompt_id": id})
}

// sendStep sends one progress step in ComfyUI's order (main.py's progress
// hook): progress_state (ComfyUI's WebUIProgressHandler), the image as a
// type 4 frame to clients that support preview metadata, "progress", then
// the image as a type 1 frame to the clients without the flag — each to the
// prompt's client, or every client for a prompt without one. state nil
// sends no progress_state.
func (h *hub) sendStep(clientID, id, node string, value, max int, state map[string]any, format string, img []byte, withImage, output bool) {
	if state != nil {
		h.send(clientID, "progress_state", state)
	}
	withImage = withImage && len(img) > 0
	if withImage {
		h.sendImage(clientID, id, node, format, img, output, true)
	}
	h.send(clientID, "progress", map[string]any{"value": value, "max": max, "prompt_id": id, "node": node})
	if withImage {
		h.sendImage(clientID, id, node, format, img, output, false)
	}
}

// nodeProgress is one node's entry in a prompt's progress registry.
type nodeProgress struct {
	id         string
	state      string // running, finished (ComfyUI's NodeState; pending nodes are not sent)
	value, max float64
}

func (n *nodeProgress) start()          { n.state, n.value, n.max = "running", 0, 1 }
func (n *nodeProgress) update(v, m int) { n.state, n.value, n.max = "running", float64(v), float64(m) }
func (n *nodeProgress) finish()         { n.state, n.value = "finished", n.max }

// progress returns node's registry entry, adding it when new.
func (rs *runState) progress(node string) *nodeProgress {
	for _, n := range rs.nodes {
		if n.id == node {
			return n
		}
	}
	n := &nodeProgress{id: node, max: 1}
	rs.nodes = append(rs.nodes, n)
	return n
}

// progressState is a progress_state message's data: every node that has
// started, with ComfyUI's fields (kiln has no subgraphs: the display and
// real node are the node, and there is no parent).
func (rs *runState) progressState(id string) map[string]any {
	nodes := map[string]any{}
	for _, n := range rs.nodes {
		nodes[n.id] = map[string]any{"value": n.value, "max": n.max, "state": n.state, "node_id": n.id,
			"prompt_id": id, "display_node_id": n.id, "parent_node_id": nil, "real_node_id": n.id}
	}
	return map[string]any{"prompt_id": id, "nodes": nodes}
}

// previewsOn reports whether a prompt's sampler previews go to its client:
// its extra_data.preview_method when it names one of ComfyUI's methods
// (ComfyUI's executor calls set_preview_method with it for every prompt),
// else comfyui.preview_method; "none" turns them off.
func (h *hub) previewsOn(id string) bool {
	h.mu.Lock()
	m, _ := h.extra[id]["preview_method"].(string)
	h.mu.Unlock()
	if !apiconfig.IsPreviewMethod(m) {
		m = h.c.cfg.PreviewMethod
	}
	return m != "none"
}

// outputWebsocket is the output type of an image that a SaveImageWebsocket
// node produced: a file the worker wrote for the kernel to send on the
// WebSocket, not a saved output (kiln-worker-sim's OutputWebsocket).
const outputWebsocket = "websocket"

// savedOutputs are the outputs that /history and "executed" list: all but
// SaveImageWebsocket's, whose node returns no ui in ComfyUI.
func savedOutputs(outs []job.Output) []job.Output {
	saved := make([]job.Output, 0, len(outs))
	for _, o := range outs {
		if o.Type != outputWebsocket {
			saved = append(saved, o)
		}
	}
	return saved
}

// sendWebsocketImages sends, when the prompt ends, the images of its
// SaveImageWebsocket nodes that were not sent while the node ran (a worker
// that reports no progress for them), as ComfyUI's node does (custom_nodes/websocket_image_save.py):
// while the node is the executing one, for each image a progress message
// (value = the image's index, max = their number, as its
// ProgressBar.update_absolute) and then the full-size PNG in a binary
// frame, type 1 with format 2, or type 4 with metadata for a client that
// asked for it — the frames a preview uses. The worker wrote them as files;
// they are read here, after the run, so an "executing" for the node goes
// first when another node ran after it.
func (h *hub) sendWebsocketImages(e job.Event, rs *runState) {
	last := ""
	if rs != nil {
		last = rs.lastNode
	}
	for _, node := range outputNodes(e.Outputs) {
		var imgs []job.Output
		for _, o := range e.Outputs {
			if o.Node == node && o.Type == outputWebsocket {
				imgs = append(imgs, o)
			}
		}
		if len(imgs) == 0 {
			continue
		}
		sent := 0
		if rs != nil {
			h.mu.Lock()
			sent = rs.wsSent[node]
			h.mu.Unlock()
		}
		if sent >= len(imgs) {
			continue // all sent while the node ran
		}
		if last != node {
			h.send(e.ClientID, "executing", map[string]any{"node": node, "display_node": node, "prompt_id": e.JobID})
			last = node
		}
		for i, o := range imgs[sent:] {
			i += sent
			p, err := h.c.safePath(h.c.deps.OutputDir, o.Subfolder, o.Filename)
			if err != nil {
				continue
			}
			img, err := os.ReadFile(p)
			if err != nil {
				h.c.deps.Log.Warn().Err(err).Str("prompt_id", e.JobID).Msg("read websocket image")
				continue
			}
			var st map[string]any
			if rs != nil {
				h.mu.Lock()
				rs.progress(node).update(i, len(imgs))
				st = rs.progressState(e.JobID)
				h.mu.Unlock()
			}
			h.sendStep(e.ClientID, e.JobID, node, i, len(imgs), st, wire.PreviewPNG, img, true, true)
		}
	}
}

// isWebsocketNode reports whether node is a SaveImageWebsocket node of the
// prompt. Called with h.mu held; the prompt's classes came with its start
// (the job's Facts), else they are read from the store once.
func (h *hub) isWebsocketNode(id string, rs *runState, node string) bool {
	if rs.wsSent == nil {
		rs.wsSent = map[string]int{}
	}
	if rs.classes == nil {
		rs.classes = h.storedClasses(id)
	}
	return rs.classes[node] == "SaveImageWebsocket"
}

// storedClasses reads a prompt's node classes from the store, for a
// prompt whose start event carried none: its Facts when the store keeps
// them (a queued or running job), else one decode of its workflow. Never
// nil.
func (h *hub) storedClasses(id string) map[string]string {
	j, err := h.c.deps.Store.Get(id)
	if err != nil {
		return map[string]string{}
	}
	if j.Facts != nil {
		return j.Facts.Classes
	}
	classes := map[string]string{}
	if g, err := workflow.Decode(j.Workflow); err == nil {
		for nid, n := range g {
			node, _ := n.(map[string]any)
			if c, ok := node["class_type"].(string); ok {
				classes[nid] = c
			}
		}
	}
	return classes
}

// readWebsocketImage reads image i of a SaveImageWebsocket node, which the
// worker wrote as <job id>/.websocket/<node>_<i>.png before it reported
// image i done (the convention kiln-worker-sim follows; docs/comfyui.md).
// It returns nil when there is no such file: the image then goes out when
// the prompt ends, from the outputs the worker reports.
func (h *hub) readWebsocketImage(id, node string, i int) []byte {
	p, err := h.c.safePath(h.c.deps.OutputDir, id+"/.websocket", fmt.Sprintf("%s_%05d.png", node, i))
	if err != nil {
		return nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	return b
}

// removeWebsocketImages deletes the files of SaveImageWebsocket images once
// sent (or once the prompt failed): ComfyUI never stores them.
func (h *hub) removeWebsocketImages(jobID string, outs []job.Output) {
	dirs := map[string]bool{}
	for _, o := range outs {
		// Only files in the job's folder: a worker's report must not
		// delete saved outputs.
		if o.Type != outputWebsocket || !inJobFolder(o.Subfolder, jobID) {
			continue
		}
		if p, err := h.c.safePath(h.c.deps.OutputDir, o.Subfolder, o.Filename); err == nil {
			_ = os.Remove(p)
			dirs[filepath.Dir(p)] = true
		}
	}
	for d := range dirs {
		_ = os.Remove(d) // only when empty
	}
}

func (h *hub) errorData(id string, rs *runState, msg string, ts int64) map[string]any {
	node, executed := "", []string{}
	if rs != nil {
		node, executed = rs.lastNode, append(executed, rs.executed...)
		if len(executed) > 0 {
			executed = executed[:len(executed)-1]
		}
	}
	return map[string]any{"prompt_id": id, "node_id": node, "node_type": h.classOf(id, rs, node), "executed": executed,
		"exception_message": msg, "exception_type": "kiln.ExecutionError", "traceback": []string{},
		"current_inputs": map[string]any{}, "current_outputs": map[string]any{}, "timestamp": ts}
}

func (h *hub) interruptedData(id string, rs *runState, ts int64) map[string]any {
	d := h.errorData(id, rs, "", ts)
	return map[string]any{"prompt_id": id, "node_id": d["node_id"], "node_type": d["node_type"], "executed": d["executed"], "timestamp": ts}
}

// classOf is the class of a node of a prompt: from the classes its run
// came with, else from the store.
func (h *hub) classOf(id string, rs *runState, node string) string {
	if node == "" {
		return ""
	}
	if rs != nil {
		h.mu.Lock()
		classes := rs.classes
		h.mu.Unlock()
		if classes != nil {
			return classes[node]
		}
	}
	return h.storedClasses(id)[node]
}

// outputNodes lists the nodes of outputs in order of first appearance.
func outputNodes(outs []job.Output) []string {
	var nodes []string
	seen := map[string]bool{}
	for _, o := range outs {
		if !seen[o.Node] {
			seen[o.Node] = true
			nodes = append(nodes, o.Node)
		}
	}
	return nodes
}

// uiOf is a node's output as ComfyUI's "executed" and /history give it: its
// files by kind, "latents" for SaveLatent's .latent files (nodes.py), else
// "images".
func uiOf(outs []job.Output, node string) map[string]any {
	ui := map[string]any{}
	for _, o := range outs {
		if o.Node != node {
			continue
		}
		kind := "images"
		if strings.EqualFold(path.Ext(o.Filename), ".latent") {
			kind = "latents"
		}
		list, _ := ui[kind].([]map[string]any)
		ui[kind] = append(list, map[string]any{"filename": o.Filename, "subfolder": o.Subfolder, "type": o.Type})
	}
	if len(ui) == 0 {
		ui["images"] = []map[string]any{}
	}
	return ui
}

// send queues a message for a client, or for every client when id is "".
func (h *hub) send(clientID, typ string, data any) {
	b, err := json.Marshal(wsMessage{Type: typ, Data: data})
	if err != nil {
		return
	}
	h.deliver(clientID, b)
	if cl := h.c.deps.Cluster; cl != nil && clientID != "" {
		// The prompt's client may be connected to another node of the
		// cluster. Messages for every client (status) are each node's own.
		cl.ForwardWS(clientID, wsKindText, b)
	}
}

// The kinds of WebSocket messages forwarded to the other nodes of a
// cluster: a text frame as is, or an image event (forwardedImage), which
// the node the client is on frames as that client asked.
const (
	wsKindText  = "text"
	wsKindImage = "image"
)

// forwardedImage describes an image event forwarded to other nodes; the
// forwarded frame is [u32 length of this JSON][JSON][image bytes].
type forwardedImage struct {
	PromptID string `json:"prompt_id"`
	Node     string `json:"node"`
	Format   string `json:"format"`
	Output   bool   `json:"output"`
	Meta     bool   `json:"meta"`
}

// deliverForwarded delivers a message another node forwarded to the
// client clientID, if it is connected here.
func (h *hub) deliverForwarded(clientID, kind string, frame []byte) {
	switch kind {
	case wsKindImage:
		if len(frame) < 4 {
			return
		}
		n := binary.BigEndian.Uint32(frame)
		if uint64(n) > uint64(len(frame)-4) {
			return
		}
		var e forwardedImage
		if json.Unmarshal(frame[4:4+n], &e) != nil {
			return
		}
		h.deliverImage(clientID, e.PromptID, e.Node, e.Format, frame[4+n:], e.Output, e.Meta)
	default:
		h.deliver(clientID, frame)
	}
}

// deliver queues a text frame for the client clientID, or every client
// when it is empty.
func (h *hub) deliver(clientID string, b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.conns {
		if clientID == "" || c.id == clientID {
			select {
			case c.send <- wsFrame{data: b}:
			default: // a client that does not read loses messages, not the hub
			}
		}
	}
}

// sendImage sends an image frame to the clients whose
// supports_preview_metadata flag equals meta, in the format that flag asks
// for (see sendStep). A preview is dropped for a client that has fallen behind;
// an output image (SaveImageWebsocket's) is not, unless the client's queue
// is full.
//
// In a cluster the event also goes to the other nodes, where the prompt's
// client may be connected: previews and SaveImageWebsocket's images reach
// it there as the text messages do.
func (h *hub) sendImage(clientID, promptID, node, format string, img []byte, output, meta bool) {
	h.deliverImage(clientID, promptID, node, format, img, output, meta)
	cl := h.c.deps.Cluster
	if cl == nil || clientID == "" {
		return
	}
	e, err := json.Marshal(forwardedImage{PromptID: promptID, Node: node, Format: format, Output: output, Meta: meta})
	if err != nil {
		return
	}
	b := make([]byte, 0, 4+len(e)+len(img))
	b = binary.BigEndian.AppendUint32(b, uint32(len(e)))
	b = append(append(b, e...), img...)
	cl.ForwardWS(clientID, wsKindImage, b)
}

// deliverImage is sendImage's delivery to the clients connected here.
func (h *hub) deliverImage(clientID, promptID, node, format string, img []byte, output, meta bool) {
	var legacy, withMeta []byte // each built once, when first needed
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.conns {
		if (clientID != "" && c.id != clientID) || c.previewMetadata != meta {
			continue
		}
		var b []byte
		if c.previewMetadata {
			if withMeta == nil {
				withMeta = previewWithMetadataFrame(promptID, node, format, img)
			}
			b = withMeta
		} else {
			if legacy == nil {
				legacy = previewFrame(format, img)
			}
			b = legacy
		}
		if !output && c.previews.Load() >= maxQueuedPreviews {
			continue // a slow client loses previews first; they are stale at once
		}
		if !output {
			c.previews.Add(1) // before the send: the writer may take it at once
		}
		select {
		case c.send <- wsFrame{binary: true, data: b, preview: !output}:
		default: // as for text: a client that does not read loses frames
			if !output {
				c.previews.Add(-1)
			}
		}
	}
}

// previewFrame is ComfyUI's type 1 frame: [u32 1][u32 format][image].
func previewFrame(format string, img []byte) []byte {
	f := uint32(previewPNG)
	if format == wire.PreviewJPEG {
		f = previewJPEG
	}
	b := make([]byte, 0, 8+len(img))
	b = binary.BigEndian.AppendUint32(b, binPreviewImage)
	b = binary.BigEndian.AppendUint32(b, f)
	return append(b, img...)
}

// previewWithMetadataFrame is ComfyUI's type 4 frame: [u32 4][u32 len]
// [metadata JSON][image], the metadata being what ComfyUI's progress handler
// sends (node_id, prompt_id, display_node_id, parent_node_id, real_node_id)
// plus the image_type its send_image_with_metadata adds. kiln has no
// subgraph expansion, so the display and real node are the node itself and
// there is no parent.
func previewWithMetadataFrame(promptID, node, format string, img []byte) []byte {
	mime := "image/png"
	if format == wire.PreviewJPEG {
		mime = "image/jpeg"
	}
	meta, _ := json.Marshal(map[string]any{
		"node_id": node, "prompt_id": promptID, "display_node_id": node,
		"parent_node_id": nil, "real_node_id": node, "image_type": mime,
	})
	b := make([]byte, 0, 8+len(meta)+len(img))
	b = binary.BigEndian.AppendUint32(b, binPreviewImageWithMetadata)
	b = binary.BigEndian.AppendUint32(b, uint32(len(meta)))
	b = append(b, meta...)
	return append(b, img...)
}

func (h *hub) statusData(sid string) map[string]any {
	d := map[string]any{"status": map[string]any{"exec_info": map[string]any{"queue_remaining": h.c.queueRemaining()}}}
	if sid != "" {
		d["sid"] = sid
	}
	return d
}

// broadcastStatus tells every client the queue changed.
func (h *hub) broadcastStatus() { h.send("", "status", h.statusData("")) }

// serveWS is GET /ws?clientId=.
func (h *hub) serveWS(w http.ResponseWriter, r *http.Request) {
	// The server's read and write timeouts must not end a long-lived socket.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	id := r.URL.Query().Get("clientId")
	if id == "" {
		id = newUUID()
	}
	c := &wsConn{id: id, send: make(chan wsFrame, 1024)}
	first, _ := json.Marshal(wsMessage{Type: "status", Data: h.statusData(id)})
	c.send <- wsFrame{data: first}
	h.mu.Lock()
	h.conns[c] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.conns, c)
		h.mu.Unlock()
	}()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		defer cancel()
		for {
			typ, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			if typ != websocket.MessageText {
				continue
			}
			var m struct {
				Type string `json:"type"`
				Data struct {
					SupportsPreviewMetadata bool `json:"supports_preview_metadata"`
				} `json:"data"`
			}
			if json.Unmarshal(data, &m) == nil && m.Type == "feature_flags" {
				h.mu.Lock()
				c.previewMetadata = m.Data.SupportsPreviewMetadata
				h.mu.Unlock()
				// ComfyUI answers a client's flags with its own.
				reply, _ := json.Marshal(wsMessage{Type: "feature_flags", Data: h.c.featureFlags()})
				select {
				case c.send <- wsFrame{data: reply}:
				default:
				}
			}
		}
	}()
	clk := h.c.deps.Clock
	for {
		var f wsFrame
		select {
		case <-ctx.Done():
			ws.Close(websocket.StatusNormalClosure, "")
			return
		case f = <-c.send:
			if f.preview {
				c.previews.Add(-1)
			}
		case <-clk.After(h.c.cfg.Keepalive):
			// Clients reconnect after 10 s of silence (models may take
			// longer to load): a status frame keeps them.
			f.data, _ = json.Marshal(wsMessage{Type: "status", Data: h.statusData("")})
		}
		typ := websocket.MessageText
		if f.binary {
			typ = websocket.MessageBinary
		}
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		err := ws.Write(wctx, typ, f.data)
		wcancel()
		if err != nil {
			return
		}
	}
}

// rememberExtra keeps a prompt's extra_data for /queue and /history
// (in memory: after a restart, extra_data holds the client id only).
func (h *hub) rememberExtra(id string, extra map[string]any) {
	if len(extra) == 0 {
		return
	}
	h.mu.Lock()
	h.extra[id] = extra
	h.mu.Unlock()
}

func (h *hub) extraData(j *job.Job) map[string]any {
	out := map[string]any{}
	h.mu.Lock()
	for k, v := range h.extra[j.ID] {
		out[k] = v
	}
	h.mu.Unlock()
	if j.ClientID != "" {
		out["client_id"] = j.ClientID
	}
	return out
}

// forget drops what the hub keeps of a deleted prompt.
func (h *hub) forget(id string) {
	h.mu.Lock()
	delete(h.extra, id)
	delete(h.runs, id)
	delete(h.names, id)
	h.mu.Unlock()
}

// historyEntry is a finished job in /history's shape.
func (h *hub) historyEntry(j *job.Job) map[string]any {
	outputs := map[string]any{}
	meta := map[string]any{}
	saved := savedOutputs(h.outputsOf(j))
	for _, node := range outputNodes(saved) {
		outputs[node] = uiOf(saved, node)
		meta[node] = map[string]any{"node_id": node, "display_node": node, "parent_node": nil, "real_node_id": node}
	}
	start, end := j.StartedAt.UnixMilli(), j.FinishedAt.UnixMilli()
	if j.StartedAt.IsZero() {
		start = end
	}
	msgs := []any{}
	status := "success"
	if !j.StartedAt.IsZero() {
		msgs = append(msgs, []any{"execution_start", map[string]any{"prompt_id": j.ID, "timestamp": start}},
			[]any{"execution_cached", map[string]any{"nodes": []string{}, "prompt_id": j.ID, "timestamp": start}})
	}
	switch j.State {
	case job.Done:
		msgs = append(msgs, []any{"execution_success", map[string]any{"prompt_id": j.ID, "timestamp": end}})
	case job.Failed:
		status = "error"
		msgs = append(msgs, []any{"execution_error", h.errorData(j.ID, nil, j.Error, end)})
	case job.Cancelled:
		status = "error"
		msgs = append(msgs, []any{"execution_interrupted", map[string]any{"prompt_id": j.ID, "node_id": "", "node_type": "",
			"executed": []string{}, "timestamp": end}})
	}
	return map[string]any{
		"prompt":  []any{promptNumber(j), j.ID, j.Workflow, h.extraData(j), outputIDs(j)},
		"outputs": outputs,
		"status":  map[string]any{"status_str": status, "completed": j.State == job.Done, "messages": msgs},
		"meta":    meta,
	}
}

// cachedPrompt is a prompt answered from the result cache.
type cachedPrompt struct {
	id       string
	at       time.Time // when it was answered, to order /history
	number   float64
	clientID string
	entry    map[string]any
	nodes    []string
	outputs  []job.Output
}

// answerFromCache records a cache hit in the history before the HTTP answer
// and queues its messages for replayCached.
func (h *hub) answerFromCache(req *PromptRequest, hit *cacheHit, number float64) {
	ts := h.nowMS()
	nodes := make([]string, 0, req.Graph.Len())
	for _, n := range req.Graph.Nodes() {
		nodes = append(nodes, n.ID)
	}
	sort.Strings(nodes)
	j := &job.Job{ID: req.PromptID, Order: &number, ClientID: req.ClientID, Workflow: req.Workflow, Outputs: hit.outputs, State: job.Done}
	h.rememberExtra(req.PromptID, req.ExtraData)
	entry := h.historyEntry(j)
	entry["status"] = map[string]any{"status_str": "success", "completed": true, "messages": []any{
		[]any{"execution_start", map[string]any{"prompt_id": req.PromptID, "timestamp": ts}},
		[]any{"execution_cached", map[string]any{"nodes": nodes, "prompt_id": req.PromptID, "timestamp": ts}},
		[]any{"execution_success", map[string]any{"prompt_id": req.PromptID, "timestamp": ts}},
	}}
	msgs := []wsMessage{
		{Type: "execution_start", Data: map[string]any{"prompt_id": req.PromptID, "timestamp": ts}},
		{Type: "execution_cached", Data: map[string]any{"nodes": nodes, "prompt_id": req.PromptID, "timestamp": ts}},
	}
	// Every node is cached: ComfyUI walks them in execution order, sends
	// "executed" for those with output and marks each finished
	// (progress_state).
	hasOutput := map[string]bool{}
	for _, node := range outputNodes(hit.outputs) {
		hasOutput[node] = true
	}
	rs := &runState{}
	for _, n := range req.Graph.Nodes() {
		if hasOutput[n.ID] {
			msgs = append(msgs, wsMessage{Type: "executed", Data: map[string]any{"node": n.ID, "display_node": n.ID,
				"output": uiOf(hit.outputs, n.ID), "prompt_id": req.PromptID}})
		}
		rs.progress(n.ID).finish()
		msgs = append(msgs, wsMessage{Type: "progress_state", Data: rs.progressState(req.PromptID)})
	}
	msgs = append(msgs, wsMessage{Type: "execution_success", Data: map[string]any{"prompt_id": req.PromptID, "timestamp": ts}},
		wsMessage{Type: "executing", Data: map[string]any{"node": nil, "display_node": nil, "prompt_id": req.PromptID}})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hits[req.PromptID] = &cachedPrompt{id: req.PromptID, at: h.c.deps.Clock.Now(), number: number, clientID: req.ClientID, entry: entry, nodes: nodes, outputs: hit.outputs}
	h.hitSeq = append(h.hitSeq, req.PromptID)
	h.pending[req.PromptID] = msgs
	for len(h.hitSeq) > max(h.c.cfg.Cache.MaxEntries, 1) {
		delete(h.hits, h.hitSeq[0])
		h.hitSeq = h.hitSeq[1:]
	}
}

// replayCached sends a cache hit's messages, after its HTTP answer.
func (h *hub) replayCached(id string) {
	h.mu.Lock()
	msgs := h.pending[id]
	delete(h.pending, id)
	hit := h.hits[id]
	h.mu.Unlock()
	if hit == nil {
		return
	}
	for _, m := range msgs {
		h.send(hit.clientID, m.Type, m.Data)
	}
	h.broadcastStatus()
}

func (h *hub) cachedHistoryEntry(id string) map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	if hit := h.hits[id]; hit != nil {
		return hit.entry
	}
	return nil
}

// cachedHistory lists the cache hits still remembered, oldest first.
func (h *hub) cachedHistory() []*cachedPrompt {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*cachedPrompt, 0, len(h.hitSeq))
	for _, id := range h.hitSeq {
		if hit := h.hits[id]; hit != nil {
			out = append(out, hit)
		}
	}
	return out
}

func (h *hub) deleteCachedHistory(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.hits, id)
	for i, x := range h.hitSeq {
		if x == id {
			h.hitSeq = append(h.hitSeq[:i:i], h.hitSeq[i+1:]...)
			break
		}
	}
}

func (h *hub) clearCachedHistory() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hits = map[string]*cachedPrompt{}
	h.hitSeq = nil
}
