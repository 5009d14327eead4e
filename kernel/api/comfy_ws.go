package api

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/kiln-gpu/kiln/kernel/dispatch"
	"github.com/kiln-gpu/kiln/kernel/job"
	wire "github.com/kiln-gpu/kiln/sdk/worker"
)

// hub turns dispatcher events into ComfyUI WebSocket messages, sent to the
// prompt's client (every client when the prompt has none), and keeps what
// /history needs beyond the store: the client's extra_data and the prompts
// answered from the result cache.
type hub struct {
	c     *comfy
	cache *resultCache

	mu      sync.Mutex
	conns   map[*wsConn]struct{}
	runs    map[string]*runState
	extra   map[string]map[string]any
	hits    map[string]*cachedPrompt // prompt id → prompt answered from the cache
	hitSeq  []string                 // hits in arrival order, for bounds and max_items
	pending map[string][]wsMessage   // cache-hit messages waiting for the HTTP answer
}

// runState is what the hub remembers of a running prompt.
type runState struct {
	lastNode string
	executed []string
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
	// previewMetadata is set when the client sent feature_flags with
	// supports_preview_metadata: it then gets type 4 preview frames
	// instead of type 1. Guarded by hub.mu.
	previewMetadata bool
}

// wsFrame is one frame queued for a client: a JSON text message, or a
// binary preview frame.
type wsFrame struct {
	binary bool
	data   []byte
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

// maxQueuedPreviews is how full a client's send queue may be for a preview
// to join it: previews may be large (up to wire.MaxPreviewBytes each), so a
// client that falls behind gets text messages only, and a stalled one holds
// at most this many previews in memory.
const maxQueuedPreviews = 16

// Image formats in a type 1 frame, as ComfyUI's send_image numbers them.
const (
	previewJPEG = 1
	previewPNG  = 2
)

func newHub(c *comfy) *hub {
	return &hub{
		c: c, cache: newResultCache(c.cfg.Cache, c.s.deps.Clock, c.s.deps.OutputDir),
		conns: map[*wsConn]struct{}{}, runs: map[string]*runState{}, extra: map[string]map[string]any{},
		hits: map[string]*cachedPrompt{}, pending: map[string][]wsMessage{},
	}
}

func (h *hub) nowMS() int64 { return h.c.s.deps.Clock.Now().UnixMilli() }

// run consumes dispatcher events for the life of the process.
func (h *hub) run() {
	events, _ := h.c.s.deps.Dispatcher.Subscribe(8192)
	for e := range events {
		h.handle(e)
	}
}

func (h *hub) handle(e dispatch.Event) {
	id := e.JobID
	switch e.Type {
	case dispatch.EventStarted:
		h.mu.Lock()
		_, seen := h.runs[id]
		if !seen {
			h.runs[id] = &runState{}
		}
		h.mu.Unlock()
		if !seen {
			ts := h.nowMS()
			h.send(e.ClientID, "execution_start", map[string]any{"prompt_id": id, "timestamp": ts})
			h.send(e.ClientID, "execution_cached", map[string]any{"nodes": []string{}, "prompt_id": id, "timestamp": ts})
		}
		h.broadcastStatus()
	case dispatch.EventProgress:
		h.mu.Lock()
		rs := h.runs[id]
		if rs == nil {
			rs = &runState{}
			h.runs[id] = rs
		}
		newNode := rs.lastNode != e.Node
		if newNode {
			rs.lastNode = e.Node
			rs.executed = append(rs.executed, e.Node)
		}
		h.mu.Unlock()
		if newNode {
			h.send(e.ClientID, "executing", map[string]any{"node": e.Node, "display_node": e.Node, "prompt_id": id})
		}
		if e.Max > 0 {
			h.send(e.ClientID, "progress", map[string]any{"value": e.Value, "max": e.Max, "prompt_id": id, "node": e.Node})
		}
		if len(e.Preview) > 0 {
			// After its progress message, as ComfyUI sends them.
			h.sendPreview(e)
		}
	case dispatch.EventRequeued, dispatch.EventPreempted:
		h.broadcastStatus()
	case dispatch.EventFinished:
		h.finished(e)
		h.broadcastStatus()
	}
}

// finished sends the end of a prompt. The store recorded the outcome
// before the dispatcher published it, so /queue and /history already agree
// with execution_success when a client reads them.
func (h *hub) finished(e dispatch.Event) {
	id := e.JobID
	h.mu.Lock()
	rs := h.runs[id]
	delete(h.runs, id)
	h.mu.Unlock()
	ts := h.nowMS()
	switch e.State {
	case job.Done:
		for _, node := range outputNodes(e.Outputs) {
			h.send(e.ClientID, "executed", map[string]any{"node": node, "display_node": node,
				"output": map[string]any{"images": imagesOf(e.Outputs, node)}, "prompt_id": id})
		}
		h.send(e.ClientID, "execution_success", map[string]any{"prompt_id": id, "timestamp": ts})
		if j, err := h.c.s.deps.Store.Get(id); err == nil {
			h.cache.store(j)
		}
	case job.Failed:
		h.send(e.ClientID, "execution_error", h.errorData(id, rs, e.Error, ts))
	case job.Cancelled:
		if rs == nil {
			return // cancelled while queued: ComfyUI says nothing
		}
		h.send(e.ClientID, "execution_interrupted", h.interruptedData(id, rs, ts))
	}
	h.send(e.ClientID, "executing", map[string]any{"node": nil, "display_node": nil, "prompt_id": id})
}

func (h *hub) errorData(id string, rs *runState, msg string, ts int64) map[string]any {
	node, executed := "", []string{}
	if rs != nil {
		node, executed = rs.lastNode, append(executed, rs.executed...)
		if len(executed) > 0 {
			executed = executed[:len(executed)-1]
		}
	}
	return map[string]any{"prompt_id": id, "node_id": node, "node_type": h.classOf(id, node), "executed": executed,
		"exception_message": msg, "exception_type": "kiln.ExecutionError", "traceback": []string{},
		"current_inputs": map[string]any{}, "current_outputs": map[string]any{}, "timestamp": ts}
}

func (h *hub) interruptedData(id string, rs *runState, ts int64) map[string]any {
	d := h.errorData(id, rs, "", ts)
	return map[string]any{"prompt_id": id, "node_id": d["node_id"], "node_type": d["node_type"], "executed": d["executed"], "timestamp": ts}
}

// classOf is the class of a node of a stored prompt.
func (h *hub) classOf(id, node string) string {
	if node == "" {
		return ""
	}
	j, err := h.c.s.deps.Store.Get(id)
	if err != nil {
		return ""
	}
	var g map[string]struct {
		ClassType string `json:"class_type"`
	}
	_ = json.Unmarshal(j.Workflow, &g)
	return g[node].ClassType
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

func imagesOf(outs []job.Output, node string) []map[string]any {
	images := []map[string]any{}
	for _, o := range outs {
		if o.Node == node {
			images = append(images, map[string]any{"filename": o.Filename, "subfolder": o.Subfolder, "type": o.Type})
		}
	}
	return images
}

// send queues a message for a client, or for every client when id is "".
func (h *hub) send(clientID, typ string, data any) {
	b, err := json.Marshal(wsMessage{Type: typ, Data: data})
	if err != nil {
		return
	}
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

// sendPreview sends a progress event's preview image to the prompt's client
// (every client when the prompt has none), as ComfyUI does: a type 4 frame
// with metadata to a client that declared supports_preview_metadata, a type
// 1 frame to any other, never both. The dispatcher bounded the image's size
// and checked its format (dispatch.Event.Preview).
func (h *hub) sendPreview(e dispatch.Event) {
	var legacy, withMeta []byte // each built once, when first needed
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.conns {
		if e.ClientID != "" && c.id != e.ClientID {
			continue
		}
		var b []byte
		if c.previewMetadata {
			if withMeta == nil {
				withMeta = previewWithMetadataFrame(e)
			}
			b = withMeta
		} else {
			if legacy == nil {
				legacy = previewFrame(e)
			}
			b = legacy
		}
		if len(c.send) >= maxQueuedPreviews {
			continue // a slow client loses previews first; they are stale at once
		}
		select {
		case c.send <- wsFrame{binary: true, data: b}:
		default: // as for text: a client that does not read loses previews
		}
	}
}

// previewFrame is ComfyUI's type 1 frame: [u32 1][u32 format][image].
func previewFrame(e dispatch.Event) []byte {
	format := uint32(previewPNG)
	if e.PreviewFormat == wire.PreviewJPEG {
		format = previewJPEG
	}
	b := make([]byte, 0, 8+len(e.Preview))
	b = binary.BigEndian.AppendUint32(b, binPreviewImage)
	b = binary.BigEndian.AppendUint32(b, format)
	return append(b, e.Preview...)
}

// previewWithMetadataFrame is ComfyUI's type 4 frame: [u32 4][u32 len]
// [metadata JSON][image], the metadata being what ComfyUI's progress handler
// sends (node_id, prompt_id, display_node_id, parent_node_id, real_node_id)
// plus the image_type its send_image_with_metadata adds. kiln has no
// subgraph expansion, so the display and real node are the node itself and
// there is no parent.
func previewWithMetadataFrame(e dispatch.Event) []byte {
	mime := "image/png"
	if e.PreviewFormat == wire.PreviewJPEG {
		mime = "image/jpeg"
	}
	meta, _ := json.Marshal(map[string]any{
		"node_id": e.Node, "prompt_id": e.JobID, "display_node_id": e.Node,
		"parent_node_id": nil, "real_node_id": e.Node, "image_type": mime,
	})
	b := make([]byte, 0, 8+len(meta)+len(e.Preview))
	b = binary.BigEndian.AppendUint32(b, binPreviewImageWithMetadata)
	b = binary.BigEndian.AppendUint32(b, uint32(len(meta)))
	b = append(b, meta...)
	return append(b, e.Preview...)
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
	clk := h.c.s.deps.Clock
	for {
		var f wsFrame
		select {
		case <-ctx.Done():
			ws.Close(websocket.StatusNormalClosure, "")
			return
		case f = <-c.send:
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
	h.mu.Unlock()
}

// historyEntry is a finished job in /history's shape.
func (h *hub) historyEntry(j *job.Job) map[string]any {
	outputs := map[string]any{}
	meta := map[string]any{}
	for _, node := range outputNodes(j.Outputs) {
		outputs[node] = map[string]any{"images": imagesOf(j.Outputs, node)}
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
		"prompt":  []any{promptNumber(j), j.ID, j.Workflow, h.extraData(j), outputIDs(j.Workflow)},
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
		{"execution_start", map[string]any{"prompt_id": req.PromptID, "timestamp": ts}},
		{"execution_cached", map[string]any{"nodes": nodes, "prompt_id": req.PromptID, "timestamp": ts}},
	}
	for _, node := range outputNodes(hit.outputs) {
		msgs = append(msgs, wsMessage{"executed", map[string]any{"node": node, "display_node": node,
			"output": map[string]any{"images": imagesOf(hit.outputs, node)}, "prompt_id": req.PromptID}})
	}
	msgs = append(msgs, wsMessage{"execution_success", map[string]any{"prompt_id": req.PromptID, "timestamp": ts}},
		wsMessage{"executing", map[string]any{"node": nil, "display_node": nil, "prompt_id": req.PromptID}})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hits[req.PromptID] = &cachedPrompt{id: req.PromptID, at: h.c.s.deps.Clock.Now(), number: number, clientID: req.ClientID, entry: entry, nodes: nodes, outputs: hit.outputs}
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
