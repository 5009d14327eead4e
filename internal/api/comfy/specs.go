package comfy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// NodeSpecs are the node classes that kiln's workers can execute, with their
// ComfyUI input specs: the source of /object_info and of /prompt
// validation, so that both always agree with what can run. Workers advertise
// them in hello's node_specs (sdk/worker/PROTOCOL.md).
type NodeSpecs struct {
	classes map[string]*nodeSpec
	raw     map[string]json.RawMessage
}

// nodeSpec is one class's parsed spec.
type nodeSpec struct {
	class      string
	inputs     []*inputSpec // required first, each group in input order
	byName     map[string]*inputSpec
	outputs    []string
	outputNode bool
}

// inputSpec is one input of a class.
type inputSpec struct {
	name     string
	required bool
	typ      string   // INT, FLOAT, STRING, BOOLEAN, COMBO, or a link type (MODEL, ...)
	combo    []any    // the allowed values of a COMBO
	folder   string   // model folder of a model combo ("kiln_model_folder")
	files    bool     // a combo of input files ("kiln_input_files")
	min, max *float64 // numeric bounds, when the spec has them
	minRaw   json.Number
	maxRaw   json.Number
}

// ParseNodeSpecs parses class → /object_info entry maps, as workers send
// them. Entries that are not objects are skipped; a malformed input spec is
// an error.
func ParseNodeSpecs(m map[string]any) (*NodeSpecs, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("node specs: %w", err)
	}
	return parseNodeSpecsJSON(b)
}

func parseNodeSpecsJSON(b []byte) (*NodeSpecs, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("node specs: %w", err)
	}
	ns := &NodeSpecs{classes: map[string]*nodeSpec{}, raw: raw}
	for class, entry := range raw {
		var e struct {
			Input struct {
				Required map[string]json.RawMessage `json:"required"`
				Optional map[string]json.RawMessage `json:"optional"`
			} `json:"input"`
			InputOrder struct {
				Required []string `json:"required"`
				Optional []string `json:"optional"`
			} `json:"input_order"`
			Output     []any `json:"output"`
			OutputNode bool  `json:"output_node"`
		}
		dec := json.NewDecoder(bytes.NewReader(entry))
		dec.UseNumber()
		if err := dec.Decode(&e); err != nil {
			continue
		}
		s := &nodeSpec{class: class, byName: map[string]*inputSpec{}, outputNode: e.OutputNode}
		for _, o := range e.Output {
			t, _ := o.(string)
			if t == "" {
				t = "COMBO" // a list output type: ComfyUI's combo outputs
			}
			s.outputs = append(s.outputs, t)
		}
		for _, group := range []struct {
			specs    map[string]json.RawMessage
			order    []string
			required bool
		}{{e.Input.Required, e.InputOrder.Required, true}, {e.Input.Optional, e.InputOrder.Optional, false}} {
			for _, name := range orderedNames(group.specs, group.order) {
				in, err := parseInputSpec(name, group.specs[name])
				if err != nil {
					return nil, fmt.Errorf("node specs: %s: %w", class, err)
				}
				in.required = group.required
				s.inputs = append(s.inputs, in)
				s.byName[name] = in
			}
		}
		ns.classes[class] = s
	}
	return ns, nil
}

// orderedNames lists the names of specs in order, then any the order omits.
func orderedNames(specs map[string]json.RawMessage, order []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range order {
		if _, ok := specs[n]; ok && !seen[n] {
			out = append(out, n)
			seen[n] = true
		}
	}
	var rest []string
	for n := range specs {
		if !seen[n] {
			rest = append(rest, n)
		}
	}
	sort.Strings(rest)
	return append(out, rest...)
}

func parseInputSpec(name string, raw json.RawMessage) (*inputSpec, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v []any
	if err := dec.Decode(&v); err != nil || len(v) == 0 {
		return nil, fmt.Errorf("input %s: want [type, options?]", name)
	}
	in := &inputSpec{name: name}
	switch t := v[0].(type) {
	case string:
		in.typ = t
	case []any:
		in.typ, in.combo = "COMBO", t
	default:
		return nil, fmt.Errorf("input %s: type is %T", name, v[0])
	}
	if len(v) > 1 {
		if opts, ok := v[1].(map[string]any); ok {
			if f, ok := opts["kiln_model_folder"].(string); ok {
				in.folder = f
			}
			if b, ok := opts["kiln_input_files"].(bool); ok {
				in.files = b
			}
			// A "COMBO" with an image_folder (LoadImageOutput) lists no
			// names: ComfyUI's frontend fetches them, and VALIDATE_INPUTS
			// checks the annotated file, as for the input-file combos.
			if f, ok := opts["image_folder"].(string); ok && f != "" && in.typ == "COMBO" {
				in.files = true
			}
			if in.typ == "COMBO" {
				if list, ok := opts["options"].([]any); ok && len(in.combo) == 0 {
					in.combo = list
				}
			}
			if n, ok := opts["min"].(json.Number); ok {
				if f, err := n.Float64(); err == nil {
					in.min, in.minRaw = &f, n
				}
			}
			if n, ok := opts["max"].(json.Number); ok {
				if f, err := n.Float64(); err == nil {
					in.max, in.maxRaw = &f, n
				}
			}
		}
	}
	return in, nil
}

// Has reports whether a class has a spec.
func (ns *NodeSpecs) Has(class string) bool {
	if ns == nil {
		return false
	}
	_, ok := ns.classes[class]
	return ok
}

// Len is the number of classes.
func (ns *NodeSpecs) Len() int {
	if ns == nil {
		return 0
	}
	return len(ns.classes)
}

// objectInfo renders the /object_info entries, with model and input-file
// combos filled by lists (folder → names).
func (ns *NodeSpecs) objectInfo(only string, lists func(folder string) []string) map[string]any {
	out := map[string]any{}
	if ns == nil {
		return out
	}
	for class, raw := range ns.raw {
		if only != "" && class != only {
			continue
		}
		var e map[string]any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if dec.Decode(&e) != nil {
			continue
		}
		if input, ok := e["input"].(map[string]any); ok {
			for _, group := range []string{"required", "optional"} {
				specs, _ := input[group].(map[string]any)
				for name, sv := range specs {
					arr, ok := sv.([]any)
					if !ok || len(arr) < 2 {
						continue
					}
					opts, _ := arr[1].(map[string]any)
					folder, _ := opts["kiln_model_folder"].(string)
					if files, _ := opts["kiln_input_files"].(bool); files {
						folder = "input"
					}
					if folder == "" {
						continue
					}
					names := lists(folder)
					vals := make([]any, len(names))
					for i, n := range names {
						vals[i] = n
					}
					arr[0] = vals
					specs[name] = arr
				}
			}
		}
		out[class] = e
	}
	return out
}

// typesMatch is ComfyUI's validate_node_input: "*" matches anything, and
// comma-separated types are unions.
func typesMatch(received, want string) bool {
	if received == "*" || want == "*" || received == want {
		return true
	}
	rs, ws := strings.Split(received, ","), strings.Split(want, ",")
	for _, r := range rs {
		for _, w := range ws {
			if strings.TrimSpace(r) == strings.TrimSpace(w) {
				return true
			}
		}
	}
	return false
}
