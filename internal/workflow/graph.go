package workflow

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Node is one node of a workflow graph. Its fields must be treated as
// read-only: a Graph shares them with every caller.
type Node struct {
	// ID is the node's key in the workflow object.
	ID string
	// ClassType is the ComfyUI node class, e.g. "KSampler".
	ClassType string
	// Inputs maps input names to literals or links. Numbers are json.Number
	// when the graph came from Parse, float64 when it came from FromMap on a
	// map decoded without UseNumber.
	Inputs map[string]any
	// Title is _meta.title when the workflow has one.
	Title string
}

// Link is a reference to another node's output.
type Link struct {
	NodeID string
	Output int
}

// Link returns the input name as a link, if it is one. It is valid only on
// nodes of a parsed Graph, whose links have been checked.
func (n *Node) Link(name string) (Link, bool) {
	v, ok := n.Inputs[name]
	if !ok {
		return Link{}, false
	}
	l, isLink, err := parseLink(v)
	if !isLink || err != nil {
		return Link{}, false
	}
	return l, true
}

// Graph is a validated workflow. It is immutable and safe for concurrent use.
type Graph struct {
	nodes  map[string]*Node
	order  []*Node // topological: every node after the nodes it links to
	raw    map[string]any
	models []ModelRef
	params []SamplerParams
}

// Parse decodes and validates a ComfyUI API-format workflow. Zero fields of
// lim take their defaults. A refused workflow yields an *Error.
func Parse(data []byte, lim Limits) (*Graph, error) {
	if !utf8.Valid(data) {
		return nil, newErr(ErrInvalidPrompt, "", "", "workflow is not valid utf-8")
	}
	decodes.Add(1)
	if m, ok := decodeObject(data); ok {
		// An object with nothing after it: the value the decoder below
		// would give, for less than half its cost.
		return FromMap(m, lim)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, newErr(ErrInvalidPrompt, "", err.Error(), "workflow is not valid json")
	}
	if _, err := dec.Token(); err == nil {
		return nil, newErr(ErrInvalidPrompt, "", "", "trailing data after the workflow object")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, newErr(ErrInvalidPrompt, "", "", "workflow must be a json object of nodes")
	}
	return FromMap(m, lim)
}

// FromMap validates a workflow that was already decoded, for example as the
// "workflow" or "prompt" member of a larger request body. Numbers may be
// json.Number, float64 or Go integers. The Graph keeps m: the caller must not
// change it afterwards. Zero fields of lim take their defaults.
func FromMap(m map[string]any, lim Limits) (*Graph, error) {
	graphs.Add(1)
	lim = lim.WithDefaults()
	if err := lim.Validate(); err != nil {
		return nil, fmt.Errorf("workflow: %w", err)
	}
	if len(m) == 0 {
		return nil, newErr(ErrInvalidPrompt, "", "", "workflow has no nodes")
	}
	if len(m) > lim.MaxNodes {
		return nil, newErr(ErrLimitExceeded, "", fmt.Sprintf("%d nodes, limit %d", len(m), lim.MaxNodes),
			"workflow has too many nodes")
	}
	g := &Graph{nodes: make(map[string]*Node, len(m)), raw: m}
	for _, id := range sortedKeys(m) {
		n, err := decodeNode(id, m[id])
		if err != nil {
			return nil, err
		}
		g.nodes[id] = n
	}
	if err := g.sort(); err != nil {
		return nil, err
	}
	if err := g.checkLimits(lim); err != nil {
		return nil, err
	}
	if len(g.OutputNodes()) == 0 {
		return nil, newErr(ErrNoOutputs, "", "", "prompt has no outputs")
	}
	var err error
	if g.models, err = g.extractModels(); err != nil {
		return nil, err
	}
	if g.params, err = g.extractParams(); err != nil {
		return nil, err
	}
	return g, nil
}

func decodeNode(id string, v any) (*Node, error) {
	if id == "" || !utf8.ValidString(id) {
		return nil, newErr(ErrInvalidPrompt, id, "", "node id must be a non-empty utf-8 string")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, newErr(ErrInvalidPrompt, id, "", "node must be a json object")
	}
	ct, ok := obj["class_type"].(string)
	if !ok || ct == "" || !utf8.ValidString(ct) {
		return nil, newErr(ErrInvalidPrompt, id, "", "node has no class_type string")
	}
	in, ok := obj["inputs"].(map[string]any)
	if !ok {
		return nil, newErr(ErrInvalidPrompt, id, ct, "node has no inputs object")
	}
	n := &Node{ID: id, ClassType: ct, Inputs: in}
	if meta, ok := obj["_meta"].(map[string]any); ok {
		if t, ok := meta["title"].(string); ok {
			n.Title = t
		}
	}
	for name, v := range in {
		if !utf8.ValidString(name) {
			return nil, newErr(ErrInvalidPrompt, id, "", "input name is not valid utf-8")
		}
		if s, ok := v.(string); ok && !utf8.ValidString(s) {
			return nil, newErr(ErrInvalidPrompt, id, name, "input is not valid utf-8")
		}
		if _, _, err := parseLink(v); err != nil {
			return nil, newErr(ErrInvalidLink, id, "input "+name, "%v", err)
		}
	}
	return n, nil
}

// parseLink reports whether v is a link (a two-element array) and, if so,
// whether it is well formed.
func parseLink(v any) (Link, bool, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) != 2 {
		return Link{}, false, nil
	}
	id, ok := arr[0].(string)
	if !ok || id == "" {
		return Link{}, true, fmt.Errorf("link must be [\"nodeid\", outputIndex] with a string node id")
	}
	if !utf8.ValidString(id) {
		return Link{}, true, fmt.Errorf("link node id is not valid utf-8")
	}
	idx, err := toInt(arr[1])
	if err != nil {
		return Link{}, true, fmt.Errorf("link output index: %w", err)
	}
	if idx < 0 || idx > math.MaxInt32 {
		return Link{}, true, fmt.Errorf("link output index %d out of range", idx)
	}
	return Link{NodeID: id, Output: int(idx)}, true, nil
}

// toInt converts an integral number to int64. It takes json.Number (Parse),
// float64 (encoding/json without UseNumber) and Go integer types (msgpack).
func toInt(v any) (int64, error) {
	switch x := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return i, nil
		}
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return 0, fmt.Errorf("number %s out of range", x)
		}
		return floatToInt(f)
	case float64:
		return floatToInt(x)
	case float32:
		return floatToInt(float64(x))
	case int:
		return int64(x), nil
	case int8:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case int64:
		return x, nil
	case uint8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case uint:
		if uint64(x) > math.MaxInt64 {
			return 0, fmt.Errorf("number %d out of range", x)
		}
		return int64(x), nil
	case uint64:
		if x > math.MaxInt64 {
			return 0, fmt.Errorf("number %d out of range", x)
		}
		return int64(x), nil
	default:
		return 0, fmt.Errorf("want an integer, got %s", typeName(v))
	}
}

func floatToInt(f float64) (int64, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) || f != math.Trunc(f) {
		return 0, fmt.Errorf("want an integer, got %v", f)
	}
	if f >= 1<<63 || f < -(1<<63) {
		return 0, fmt.Errorf("number %g out of range", f)
	}
	return int64(f), nil
}

// toFloat converts a JSON number to float64.
func toFloat(v any) (float64, error) {
	switch x := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return 0, fmt.Errorf("number %s out of range", x)
		}
		return f, nil
	case float64:
		return x, nil
	case float32:
		return float64(x), nil
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		i, err := toInt(x)
		return float64(i), err
	default:
		return 0, fmt.Errorf("want a number, got %s", typeName(v))
	}
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "bool"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// sort orders the nodes topologically (Kahn's algorithm, no recursion) and
// checks that every link names an existing node.
func (g *Graph) sort() error {
	indeg := make(map[string]int, len(g.nodes))
	users := make(map[string][]string, len(g.nodes))
	ids := sortedIDs(g.nodes)
	for _, id := range ids {
		n := g.nodes[id]
		indeg[id] += 0
		for _, name := range sortedKeys(n.Inputs) {
			l, ok, _ := parseLink(n.Inputs[name])
			if !ok {
				continue
			}
			if _, exists := g.nodes[l.NodeID]; !exists {
				return newErr(ErrInvalidLink, id, "input "+name,
					"input links to node %q, which does not exist", l.NodeID)
			}
			if l.NodeID == id {
				return newErr(ErrCycle, id, "input "+name, "node links to itself")
			}
			indeg[id]++
			users[l.NodeID] = append(users[l.NodeID], id)
		}
	}
	queue := make([]string, 0, len(ids))
	for _, id := range ids {
		if indeg[id] == 0 {
			queue = append(queue, id)
		}
	}
	g.order = make([]*Node, 0, len(ids))
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		g.order = append(g.order, g.nodes[id])
		for _, u := range users[id] {
			if indeg[u]--; indeg[u] == 0 {
				queue = append(queue, u)
			}
		}
	}
	if len(g.order) == len(ids) {
		return nil
	}
	// Nodes left have unmet inputs; drop those that only hang below a cycle
	// so that the reported node is on one.
	left := map[string]bool{}
	for _, id := range ids {
		if indeg[id] > 0 {
			left[id] = true
		}
	}
	for changed := true; changed; {
		changed = false
		for id := range left {
			feeds := false
			for _, u := range users[id] {
				if left[u] {
					feeds = true
					break
				}
			}
			if !feeds {
				delete(left, id)
				changed = true
			}
		}
	}
	first := ""
	for _, id := range ids {
		if left[id] {
			first = id
			break
		}
	}
	return newErr(ErrCycle, first, fmt.Sprintf("%d nodes on or between cycles", len(left)),
		"workflow graph has a cycle")
}

// checkLimits checks steps, sizes and batch sizes on every node that has
// them, following links to literal-valued nodes.
func (g *Graph) checkLimits(lim Limits) error {
	for _, n := range g.order {
		for _, c := range []struct {
			input string
			max   int
			what  string
		}{
			{"steps", lim.MaxSteps, "steps"},
			{"width", lim.MaxResolution, "resolution"},
			{"height", lim.MaxResolution, "resolution"},
			{"batch_size", lim.MaxBatchSize, "batch size"},
		} {
			v, ok := g.literal(n, c.input)
			if !ok {
				continue
			}
			i, err := toInt(v)
			if err != nil {
				if strings.Contains(err.Error(), "out of range") {
					return newErr(ErrLimitExceeded, n.ID, "input "+c.input, "%s: %v", c.what, err)
				}
				return newErr(ErrInvalidInput, n.ID, "input "+c.input, "%s: %v", c.what, err)
			}
			if i > int64(c.max) {
				return newErr(ErrLimitExceeded, n.ID, fmt.Sprintf("input %s: %d, limit %d", c.input, i, c.max),
					"%s exceeds the limit", c.what)
			}
			min := int64(0)
			if c.input != "steps" && latentSources[n.ClassType] {
				min = 1
			}
			if i < min {
				return newErr(ErrInvalidInput, n.ID, fmt.Sprintf("input %s: %d", c.input, i),
					"%s must be ≥ %d", c.input, min)
			}
		}
	}
	return nil
}

// literalKeys are the inputs of value nodes (primitives, constants) whose
// output 0 is the literal itself.
var literalKeys = []string{"value", "string", "text", "int", "float", "number"}

// literal returns the input's value, following links through value nodes.
// ok is false when the input is absent or linked to a computed output.
func (g *Graph) literal(n *Node, input string) (any, bool) {
	v, present := n.Inputs[input]
	if !present {
		return nil, false
	}
	for hops := 0; hops <= len(g.nodes); hops++ {
		l, isLink, _ := parseLink(v)
		if !isLink {
			if _, isArr := v.([]any); isArr || v == nil {
				return nil, false
			}
			return v, true
		}
		src := g.nodes[l.NodeID]
		if src == nil || l.Output != 0 {
			return nil, false
		}
		found := false
		for _, k := range literalKeys {
			if nv, ok := src.Inputs[k]; ok {
				v, found = nv, true
				break
			}
		}
		if !found {
			return nil, false
		}
	}
	return nil, false
}

// Nodes returns the nodes in topological order: every node comes after the
// nodes its inputs link to. Ties are broken by node id, numerically when ids
// are numbers.
func (g *Graph) Nodes() []*Node {
	return append([]*Node(nil), g.order...)
}

// Node returns the node with the given id, or nil.
func (g *Graph) Node(id string) *Node { return g.nodes[id] }

// Len returns the number of nodes.
func (g *Graph) Len() int { return len(g.nodes) }

// Map returns the decoded workflow the graph was built from (Parse's
// decode, or the map given to FromMap), for a caller that needs the
// inputs as the client sent them without decoding the bytes again (the
// ComfyUI result cache's canonical hashes). It is shared: read only.
func (g *Graph) Map() map[string]any { return g.raw }

// MarshalJSON encodes the graph back to API format, as it was given.
func (g *Graph) MarshalJSON() ([]byte, error) { return json.Marshal(g.raw) }

// outputClasses are ComfyUI's core output nodes; classes named Save* or
// Preview* (and "... Save" custom nodes) are treated as outputs too.
var outputClasses = map[string]bool{
	"SaveImage": true, "PreviewImage": true, "SaveAnimatedWEBP": true, "SaveAnimatedPNG": true,
	"SaveLatent": true, "SaveVideo": true, "SaveWEBM": true, "SaveAudio": true, "PreviewAudio": true,
	"SaveImageWebsocket": true, "SaveGLB": true, "PreviewAny": true, "VHS_VideoCombine": true,
}

// IsOutputClass reports whether nodes of the class are workflow outputs.
func IsOutputClass(class string) bool {
	return outputClasses[class] || strings.HasPrefix(class, "Save") ||
		strings.HasPrefix(class, "Preview") || strings.HasSuffix(class, "Save")
}

// OutputNodes returns the output nodes in topological order.
func (g *Graph) OutputNodes() []*Node {
	var out []*Node
	for _, n := range g.order {
		if IsOutputClass(n.ClassType) {
			out = append(out, n)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return idLess(keys[i], keys[j]) })
	return keys
}

func sortedIDs(m map[string]*Node) []string { return sortedKeys(m) }

// idLess orders numeric ids numerically and before other ids.
func idLess(a, b string) bool {
	ai, aok := parseID(a)
	bi, bok := parseID(b)
	switch {
	case aok && bok:
		if ai != bi {
			return ai < bi
		}
		return a < b
	case aok:
		return true
	case bok:
		return false
	}
	return a < b
}

// parseID reads a decimal node id without allocating: it runs inside sort
// comparisons on the submit path, where strconv's error values showed up as
// a tenth of the CPU time.
func parseID(s string) (uint64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}
