package workflow

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
)

// NodeHash is the canonical hash of one output node of a workflow.
type NodeHash struct {
	Node string
	Hash string
}

// OutputHashes returns the canonical hash of every output node
// (IsOutputClass) of a decoded workflow, sorted by node id. A node's hash
// covers its class, its literal inputs (so the seed) and the hashes of the
// nodes it links to, never its id: graphs that differ only in node ids
// hash alike. The ComfyUI result cache keys finished prompts by them; a
// job's Facts carry them, computed once at submit. m is a workflow as
// Decode returns it (numbers as json.Number, so that a number hashes as
// the client wrote it).
func OutputHashes(m map[string]any) []NodeHash {
	hashes := map[string]string{}
	var hashOf func(id string, depth int) string
	hashOf = func(id string, depth int) string {
		if h, ok := hashes[id]; ok {
			return h
		}
		if depth > 10000 {
			return "cycle"
		}
		node, _ := m[id].(map[string]any)
		class, _ := node["class_type"].(string)
		inputs, _ := node["inputs"].(map[string]any)
		names := make([]string, 0, len(inputs))
		for n := range inputs {
			names = append(names, n)
		}
		sort.Strings(names)
		sum := sha256.New()
		fmt.Fprintf(sum, "class=%q;", class)
		for _, n := range names {
			v := inputs[n]
			if arr, ok := v.([]any); ok && len(arr) == 2 {
				if src, ok := hashLinkID(arr[0]); ok {
					fmt.Fprintf(sum, "%q=link(%s,%v);", n, hashOf(src, depth+1), arr[1])
					continue
				}
			}
			b, _ := json.Marshal(v)
			fmt.Fprintf(sum, "%q=%s;", n, b)
		}
		h := hex.EncodeToString(sum.Sum(nil))
		hashes[id] = h
		return h
	}
	var out []NodeHash
	for id, n := range m {
		node, _ := n.(map[string]any)
		class, _ := node["class_type"].(string)
		if IsOutputClass(class) {
			out = append(out, NodeHash{Node: id, Hash: hashOf(id, 0)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// hashLinkID reads the node id of a link as OutputHashes follows it.
func hashLinkID(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case float64:
		return fmt.Sprint(x), true
	}
	return "", false
}
