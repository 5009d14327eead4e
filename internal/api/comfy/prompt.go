package comfy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/kiln-gpu/kiln/internal/workflow"
)

// PromptRequest is a decoded and validated POST /prompt body.
type PromptRequest struct {
	// Workflow is the graph, compacted; Graph is its parse.
	Workflow json.RawMessage
	Graph    *workflow.Graph
	Models   []string
	// Outputs are the ids of the graph's output nodes, sorted.
	Outputs   []string
	ClientID  string
	PromptID  string
	ExtraData map[string]any
	// Front and Number are ComfyUI's queue position: Number, when given,
	// orders the prompt among the others (lower first); Front, without a
	// Number, puts it ahead of them.
	Front  bool
	Number *float64
}

// ComfyError is one error in ComfyUI's shape.
type ComfyError struct {
	Type      string         `json:"type"`
	Message   string         `json:"message"`
	Details   string         `json:"details"`
	ExtraInfo map[string]any `json:"extra_info"`
}

// NodeError lists the errors of one node, in ComfyUI's node_errors shape.
type NodeError struct {
	Errors           []ComfyError `json:"errors"`
	DependentOutputs []string     `json:"dependent_outputs"`
	ClassType        string       `json:"class_type"`
}

// PromptError is a refused /prompt: HTTP status, then the body
// {"error": {...}, "node_errors": {...}}.
type PromptError struct {
	Status     int                   `json:"-"`
	Err        ComfyError            `json:"error"`
	NodeErrors map[string]*NodeError `json:"node_errors"`
}

func (e *PromptError) Error() string { return e.Err.Type + ": " + e.Err.Message }

func promptErr(status int, typ, msg, details string) *PromptError {
	return &PromptError{Status: status, Err: ComfyError{Type: typ, Message: msg, Details: details, ExtraInfo: map[string]any{}},
		NodeErrors: map[string]*NodeError{}}
}

// PromptEnv is what validation checks a prompt against. Every field is
// optional: nil specs skip input validation, nil funcs accept every model
// and input file.
type PromptEnv struct {
	Limits workflow.Limits
	Specs  *NodeSpecs
	// Classes are the executable classes when no worker sent specs (nil:
	// any class).
	Classes map[string]bool
	// ModelExists reports whether folder/name is in the model catalog.
	ModelExists func(folder, name string) bool
	// ModelNames lists a folder's models, for error details.
	ModelNames func(folder string) []string
}

type promptBody struct {
	Prompt    json.RawMessage `json:"prompt"`
	ClientID  any             `json:"client_id"`
	ExtraData any             `json:"extra_data"`
	Front     any             `json:"front"`
	Number    any             `json:"number"`
	PromptID  any             `json:"prompt_id"`
}

// DecodePrompt parses and validates a ComfyUI /prompt body the way ComfyUI
// does (execution.validate_prompt): unknown classes, missing outputs, and
// every input of every node an output depends on, against the workers' node
// specs and kiln's model catalog. It never panics; every refusal is a
// *PromptError with status 400.
func DecodePrompt(body []byte, env PromptEnv) (*PromptRequest, *PromptError) {
	bad := func(typ, msg, details string) *PromptError {
		return promptErr(http.StatusBadRequest, typ, msg, details)
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' || !utf8.Valid(body) {
		return nil, bad("invalid_prompt", "invalid prompt: the body must be a JSON object", "")
	}
	var pb promptBody
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&pb); err != nil {
		return nil, bad("invalid_prompt", "invalid prompt: the body is not valid JSON", err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, bad("invalid_prompt", "invalid prompt: data after the JSON object", "")
	}
	if len(pb.Prompt) == 0 || string(pb.Prompt) == "null" {
		return nil, bad("no_prompt", "No prompt provided", "No prompt provided")
	}
	// The one decode of the graph (numbers as json.Number): the graph is
	// built from this map, and the result cache hashes it (Graph.Map).
	graph, err := workflow.Decode(pb.Prompt)
	if err != nil || graph == nil {
		return nil, bad("invalid_prompt", "invalid prompt: prompt must be an object of node id → node", "")
	}
	req := &PromptRequest{}
	if s, ok := pb.ClientID.(string); ok {
		req.ClientID = s
	}
	if len(req.ClientID) > 256 {
		return nil, bad("invalid_prompt", "client_id is limited to 256 bytes", "")
	}
	if m, ok := pb.ExtraData.(map[string]any); ok {
		req.ExtraData = m
	}
	if b, ok := pb.Front.(bool); ok {
		req.Front = b
	}
	// ComfyUI takes float(number): a JSON number or a numeric string. kiln
	// also needs it finite (it orders the queue); anything else is
	// ignored, as a number of another type always was.
	switch v := pb.Number.(type) {
	case float64:
		req.Number = &v
	case string:
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
			req.Number = &f
		}
	}
	switch v := pb.PromptID.(type) {
	case nil:
	case string:
		if err := checkPromptID(v); err != nil {
			return nil, bad("invalid_prompt", "invalid prompt_id", err.Error())
		}
		req.PromptID = v
	default:
		return nil, bad("invalid_prompt", "invalid prompt_id", "prompt_id must be a string")
	}
	if perr := validateGraph(graph, env); perr != nil {
		return nil, perr
	}
	g, err := workflow.FromMap(graph, env.Limits)
	if err != nil {
		return nil, graphError(err, graph)
	}
	// pb.Prompt is one JSON value the body's decoder has already checked
	// (and Decode has decoded): compacting it needs no second scanner.
	req.Workflow, req.Graph = workflow.AppendCompact(make([]byte, 0, len(pb.Prompt)), pb.Prompt), g
	for _, m := range g.Models() {
		req.Models = append(req.Models, m.ID)
		if env.ModelExists != nil && !env.ModelExists(m.Folder, m.Name) {
			n := g.Node(m.NodeID)
			perr := failedValidation()
			perr.NodeErrors[m.NodeID] = &NodeError{ClassType: n.ClassType, DependentOutputs: []string{},
				Errors: []ComfyError{{Type: "value_not_in_list", Message: "Value not in list",
					Details:   fmt.Sprintf("%s: '%s' not in the model catalog", m.Folder, m.Name),
					ExtraInfo: map[string]any{"received_value": m.Name, "folder": m.Folder}}}}
			return nil, perr
		}
	}
	for _, n := range g.OutputNodes() {
		req.Outputs = append(req.Outputs, n.ID)
	}
	sort.Strings(req.Outputs)
	return req, nil
}

// checkPromptID applies the job store's id rules: 1-128 of [A-Za-z0-9._:-].
func checkPromptID(id string) error {
	if id == "" || len(id) > 128 {
		return errors.New("prompt_id must be 1 to 128 characters")
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._:-", r)
		if !ok {
			return fmt.Errorf("prompt_id %q: only letters, digits and ._:- are allowed", id)
		}
	}
	return nil
}

func failedValidation() *PromptError {
	return promptErr(http.StatusBadRequest, "prompt_outputs_failed_validation", "Prompt outputs failed validation", "")
}

// graphError turns a workflow parse error into ComfyUI's shape.
func graphError(err error, graph map[string]any) *PromptError {
	var werr *workflow.Error
	if !errors.As(err, &werr) {
		return promptErr(http.StatusBadRequest, "invalid_prompt", "invalid prompt", err.Error())
	}
	switch werr.Type {
	case workflow.ErrNoOutputs:
		return promptErr(http.StatusBadRequest, "prompt_no_outputs", "Prompt has no outputs", "")
	case workflow.ErrInvalidPrompt:
		return promptErr(http.StatusBadRequest, "invalid_prompt", "invalid prompt: "+werr.Message, werr.Details)
	}
	typ, msg := werr.Type, werr.Message
	if werr.Type == workflow.ErrCycle {
		typ, msg = "dependency_cycle", "Dependency cycle detected"
	}
	if werr.Type == workflow.ErrInvalidLink {
		typ = "bad_linked_input"
	}
	if werr.NodeID == "" {
		return promptErr(http.StatusBadRequest, typ, msg, werr.Details)
	}
	perr := failedValidation()
	if werr.Type == workflow.ErrCycle {
		perr.Err = ComfyError{Type: typ, Message: msg, Details: werr.Details, ExtraInfo: map[string]any{"node_id": werr.NodeID}}
	}
	class := ""
	if n, ok := graph[werr.NodeID].(map[string]any); ok {
		class, _ = n["class_type"].(string)
	}
	perr.NodeErrors[werr.NodeID] = &NodeError{ClassType: class, DependentOutputs: []string{},
		Errors: []ComfyError{{Type: typ, Message: msg, Details: werr.Details, ExtraInfo: map[string]any{}}}}
	return perr
}

// validateGraph is ComfyUI's validate_prompt over the decoded graph.
func validateGraph(graph map[string]any, env PromptEnv) *PromptError {
	ids := make([]string, 0, len(graph))
	for id := range graph {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var outputs []string
	for _, id := range ids {
		node, ok := graph[id].(map[string]any)
		if !ok {
			return promptErr(http.StatusBadRequest, "invalid_prompt",
				"Cannot execute because a node is not an object.", fmt.Sprintf("Node ID '#%s'", id))
		}
		raw, has := node["class_type"]
		if !has {
			// The current validate_prompt's answer (older releases said
			// invalid_prompt, "missing the class_type property").
			var title any
			label := "ID #" + id
			if t := nodeTitle(node, ""); t != "" {
				title, label = t, t
			}
			perr := promptErr(http.StatusBadRequest, "missing_node_type",
				fmt.Sprintf("Node '%s' has no class_type. The workflow may be corrupted or a custom node is missing.", label),
				fmt.Sprintf("Node ID '#%s'", id))
			perr.Err.ExtraInfo = map[string]any{"node_id": id, "class_type": nil, "node_title": title}
			return perr
		}
		class, ok := raw.(string)
		if !ok {
			// ComfyUI looks a class_type that is not a string up and
			// finds no such class either.
			class = fmt.Sprint(raw)
		}
		if !ok || class == "" {
			perr := promptErr(http.StatusBadRequest, "missing_node_type",
				fmt.Sprintf("Node '%s' not found. The custom node may not be installed.", nodeTitle(node, class)), fmt.Sprintf("Node ID '#%s'", id))
			perr.Err.ExtraInfo = map[string]any{"node_id": id, "class_type": raw, "node_title": nodeTitle(node, class)}
			return perr
		}
		known := true
		switch {
		case env.Specs.Len() > 0:
			known = env.Specs.Has(class)
		case env.Classes != nil:
			known = env.Classes[class]
		}
		if !known {
			// The message names the node's title (its class when it has
			// none), as validate_prompt's does.
			perr := promptErr(http.StatusBadRequest, "missing_node_type",
				fmt.Sprintf("Node '%s' not found. The custom node may not be installed.", nodeTitle(node, class)), fmt.Sprintf("Node ID '#%s'", id))
			perr.Err.ExtraInfo = map[string]any{"node_id": id, "class_type": class, "node_title": nodeTitle(node, class)}
			return perr
		}
		isOut := workflow.IsOutputClass(class)
		if env.Specs.Len() > 0 {
			isOut = env.Specs.classes[class].outputNode
		}
		if isOut {
			outputs = append(outputs, id)
		}
	}
	if len(outputs) == 0 {
		return promptErr(http.StatusBadRequest, "prompt_no_outputs", "Prompt has no outputs", "")
	}
	if env.Specs.Len() == 0 {
		return nil
	}
	v := &validator{graph: graph, env: env, state: map[string]int{}, errs: map[string]*NodeError{}}
	for _, out := range outputs {
		v.node(out)
	}
	for _, out := range outputs {
		for id := range ancestors(graph, out) {
			if ne := v.errs[id]; ne != nil {
				ne.DependentOutputs = append(ne.DependentOutputs, out)
			}
		}
	}
	if len(v.errs) == 0 {
		return nil
	}
	perr := failedValidation()
	var lines []string
	for _, id := range sortedErrIDs(v.errs) {
		ne := v.errs[id]
		for _, e := range ne.Errors {
			lines = append(lines, fmt.Sprintf("%s: %s", e.Message, e.Details))
		}
	}
	perr.Err.Details = strings.Join(lines, "\n")
	perr.NodeErrors = v.errs
	return perr
}

func nodeTitle(node map[string]any, class string) string {
	if meta, ok := node["_meta"].(map[string]any); ok {
		if t, ok := meta["title"].(string); ok {
			return t
		}
	}
	return class
}

// ancestors returns a node and every node it depends on through links.
func ancestors(graph map[string]any, id string) map[string]bool {
	seen := map[string]bool{}
	stack := []string{id}
	for len(stack) > 0 {
		cur := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[cur] {
			continue
		}
		seen[cur] = true
		node, _ := graph[cur].(map[string]any)
		inputs, _ := node["inputs"].(map[string]any)
		for _, val := range inputs {
			if arr, ok := val.([]any); ok && len(arr) == 2 {
				switch x := arr[0].(type) {
				case string:
					stack = append(stack, x)
				case json.Number:
					stack = append(stack, x.String())
				}
			}
		}
	}
	return seen
}

func sortedErrIDs(m map[string]*NodeError) []string {
	out := make([]string, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// validator walks the graph from the outputs, as ComfyUI's validate_inputs.
type validator struct {
	graph map[string]any
	env   PromptEnv
	state map[string]int // 1 visiting, 2 valid, 3 invalid
	errs  map[string]*NodeError
}

func (v *validator) node(id string) bool {
	switch v.state[id] {
	case 1:
		return true // a cycle: workflow.FromMap reports it
	case 2:
		return true
	case 3:
		return false
	}
	v.state[id] = 1
	node, _ := v.graph[id].(map[string]any)
	class, _ := node["class_type"].(string)
	spec := v.env.Specs.classes[class]
	inputs, _ := node["inputs"].(map[string]any)
	var errs []ComfyError
	valid := true
	for _, in := range spec.inputs {
		val, present := inputs[in.name]
		if !present {
			if in.required {
				errs = append(errs, ComfyError{Type: "required_input_missing", Message: "Required input is missing",
					Details: in.name, ExtraInfo: map[string]any{"input_name": in.name}})
			}
			continue
		}
		if arr, isList := val.([]any); isList {
			e, linkedOK := v.link(in, arr)
			if e != nil {
				errs = append(errs, *e)
			}
			if !linkedOK {
				valid = false
			}
			continue
		}
		if e := v.literal(in, val); e != nil {
			errs = append(errs, *e)
		}
	}
	if len(errs) > 0 {
		v.errs[id] = &NodeError{Errors: errs, DependentOutputs: []string{}, ClassType: class}
		valid = false
	}
	if valid {
		v.state[id] = 2
	} else {
		v.state[id] = 3
	}
	return valid
}

// link checks a linked input; ok is false when the linked node is invalid.
func (v *validator) link(in *inputSpec, arr []any) (e *ComfyError, ok bool) {
	badLink := func(details string) *ComfyError {
		return &ComfyError{Type: "bad_linked_input", Message: "Bad linked input, must be a length-2 list of [node_id, slot_index]",
			Details:   fmt.Sprintf("%s, %s", in.name, details),
			ExtraInfo: map[string]any{"input_name": in.name, "received_value": arr}}
	}
	if len(arr) != 2 {
		return badLink(fmt.Sprintf("a list of %d values", len(arr))), true
	}
	var src string
	switch x := arr[0].(type) {
	case string:
		src = x
	case json.Number:
		src = x.String()
	default:
		return badLink("the node id is not a string"), true
	}
	slotNum, isNum := arr[1].(json.Number)
	slot, err := strconv.Atoi(string(slotNum))
	if !isNum || err != nil || slot < 0 {
		return badLink("the slot index is not a non-negative integer"), true
	}
	srcNode, exists := v.graph[src].(map[string]any)
	if !exists {
		return badLink(fmt.Sprintf("node %q does not exist", src)), true
	}
	srcClass, _ := srcNode["class_type"].(string)
	srcSpec := v.env.Specs.classes[srcClass]
	if srcSpec == nil {
		return badLink(fmt.Sprintf("node %q has no known class", src)), true
	}
	if slot >= len(srcSpec.outputs) {
		return badLink(fmt.Sprintf("node %q (%s) has %d outputs, no slot %d", src, srcClass, len(srcSpec.outputs), slot)), true
	}
	received := srcSpec.outputs[slot]
	want := in.typ
	if in.typ == "COMBO" {
		want = "COMBO,STRING,INT,FLOAT,BOOLEAN"
	}
	if !typesMatch(received, want) {
		return &ComfyError{Type: "return_type_mismatch", Message: "Return type mismatch between linked nodes",
			Details:   fmt.Sprintf("%s, received_type(%s) mismatch input_type(%s)", in.name, received, in.typ),
			ExtraInfo: map[string]any{"input_name": in.name, "received_type": received, "linked_node": arr}}, true
	}
	return nil, v.node(src)
}

// literal checks a literal input against its spec.
func (v *validator) literal(in *inputSpec, val any) *ComfyError {
	info := func() map[string]any { return map[string]any{"input_name": in.name, "received_value": val} }
	switch in.typ {
	case "INT", "FLOAT":
		n, ok := toNumber(val, in.typ == "INT")
		if !ok {
			return &ComfyError{Type: "invalid_input_type", Message: fmt.Sprintf("Failed to convert an input value to a %s value", in.typ),
				Details: fmt.Sprintf("%s, %v", in.name, val), ExtraInfo: info()}
		}
		if in.min != nil && n.Cmp(bigOf(in.minRaw)) < 0 {
			return &ComfyError{Type: "value_smaller_than_min", Message: fmt.Sprintf("Value %s smaller than min of %s", n.Text('g', 20), in.minRaw),
				Details: in.name, ExtraInfo: info()}
		}
		if in.max != nil && n.Cmp(bigOf(in.maxRaw)) > 0 {
			return &ComfyError{Type: "value_bigger_than_max", Message: fmt.Sprintf("Value %s bigger than max of %s", n.Text('g', 20), in.maxRaw),
				Details: in.name, ExtraInfo: info()}
		}
	case "COMBO":
		s, isStr := val.(string)
		switch {
		case in.folder != "":
			if !isStr || (v.env.ModelExists != nil && !v.env.ModelExists(in.folder, s)) {
				var names []string
				if v.env.ModelNames != nil {
					names = v.env.ModelNames(in.folder)
				}
				return notInList(in, val, names)
			}
		case in.files:
			typ, name := annotatedFile(s)
			if !isStr || (v.env.ModelExists != nil && !v.env.ModelExists(typ, name)) {
				return notInList(in, val, nil)
			}
		default:
			for _, c := range in.combo {
				if c == val || (isStr && c == s) {
					return nil
				}
			}
			names := make([]string, 0, len(in.combo))
			for _, c := range in.combo {
				names = append(names, fmt.Sprint(c))
			}
			return notInList(in, val, names)
		}
	}
	return nil
}

// annotatedFile is ComfyUI's folder_paths.annotated_filepath, which the
// file-loading nodes' VALIDATE_INPUTS use: "name.png [output]", "[input]" or
// "[temp]" picks the folder (the suffix and the space before it dropped),
// and a name without one is an input file.
func annotatedFile(s string) (typ, name string) {
	for _, typ := range []string{"output", "input", "temp"} {
		if strings.HasSuffix(s, "["+typ+"]") {
			return typ, s[:max(len(s)-len(typ)-3, 0)]
		}
	}
	return "input", s
}

func notInList(in *inputSpec, val any, names []string) *ComfyError {
	list := names
	if len(list) > 20 {
		list = append(list[:20:20], "...")
	}
	return &ComfyError{Type: "value_not_in_list", Message: "Value not in list",
		Details:   fmt.Sprintf("%s: '%v' not in %v", in.name, val, list),
		ExtraInfo: map[string]any{"input_name": in.name, "received_value": val}}
}

// toNumber converts what Python's int()/float() accept: numbers, numeric
// strings and booleans. For INT, fractions are truncated as int() does.
func toNumber(val any, integer bool) (*big.Float, bool) {
	var s string
	switch x := val.(type) {
	case json.Number:
		s = x.String()
	case string:
		s = strings.TrimSpace(x)
	case bool:
		if x {
			s = "1"
		} else {
			s = "0"
		}
	default:
		return nil, false
	}
	f, ok := new(big.Float).SetPrec(128).SetString(s)
	if !ok || f.IsInf() {
		return nil, false
	}
	if integer {
		if _, isStr := val.(string); isStr && strings.ContainsAny(s, ".eE") {
			return nil, false // int("1.5") fails in Python
		}
		i, _ := f.Int(nil)
		f.SetInt(i)
	}
	return f, true
}

func bigOf(n json.Number) *big.Float {
	f, ok := new(big.Float).SetPrec(128).SetString(n.String())
	if !ok {
		return new(big.Float)
	}
	return f
}
