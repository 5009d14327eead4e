package workflow

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
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
//
// A node's hash is the SHA-256 of
//
//	class="<class>";"<input>"=<literal as JSON>;"<input>"=link(<hash>,<output>);…
//
// with the inputs sorted by name, strings quoted as strconv.Quote does
// and the output index as fmt's %v prints it. Every submit computes these,
// so the text is built in one buffer per node instead of through fmt and
// json.Marshal; TestOutputHashesMatchReference pins it to the fmt-built
// text the cache used first.
func OutputHashes(m map[string]any) []NodeHash {
	hashes := make(map[string]string, len(m))
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
		slices.Sort(names)
		var stack [1024]byte
		buf := append(stack[:0], "class="...)
		buf = appendQuote(buf, class)
		buf = append(buf, ';')
		for _, n := range names {
			v := inputs[n]
			buf = appendQuote(buf, n)
			if arr, ok := v.([]any); ok && len(arr) == 2 {
				if src, ok := hashLinkID(arr[0]); ok {
					buf = append(buf, "=link("...)
					buf = append(buf, hashOf(src, depth+1)...)
					buf = append(buf, ',')
					buf = appendPrintV(buf, arr[1])
					buf = append(buf, ");"...)
					continue
				}
			}
			buf = append(buf, '=')
			buf = appendLiteralJSON(buf, v)
			buf = append(buf, ';')
		}
		sum := sha256.Sum256(buf)
		h := hex.EncodeToString(sum[:])
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
	slices.SortFunc(out, func(a, b NodeHash) int {
		switch {
		case a.Node < b.Node:
			return -1
		case a.Node > b.Node:
			return 1
		}
		return 0
	})
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

// appendQuote appends s as strconv.Quote (fmt's %q) writes it, without
// its rune-by-rune walk for the printable ASCII of nearly every name.
func appendQuote(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return strconv.AppendQuote(buf, s)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}

// appendPrintV appends v as fmt's %v prints it: a link's output index is
// a json.Number (a Stringer) from Decode; any other type goes through fmt.
func appendPrintV(buf []byte, v any) []byte {
	switch x := v.(type) {
	case json.Number:
		return append(buf, x...)
	case string:
		return append(buf, x...)
	}
	return fmt.Appendf(buf, "%v", v)
}

// appendLiteralJSON appends v as json.Marshal encodes it, and nothing when
// json.Marshal fails. Plain strings and valid numbers, nearly every input
// of a graph, are written directly; anything else goes through
// json.Marshal.
func appendLiteralJSON(buf []byte, v any) []byte {
	switch x := v.(type) {
	case string:
		if plainJSONString(x) {
			buf = append(buf, '"')
			buf = append(buf, x...)
			return append(buf, '"')
		}
	case json.Number:
		if validJSONNumber(string(x)) {
			return append(buf, x...)
		}
	case bool:
		return strconv.AppendBool(buf, x)
	case nil:
		return append(buf, "null"...)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return buf
	}
	return append(buf, b...)
}

// plainJSONString reports whether json.Marshal writes s as it is between
// quotes: printable ASCII without the characters it escapes (the quote,
// the backslash, and <, >, & which it escapes for HTML).
func plainJSONString(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// validJSONNumber reports whether s is a JSON number, the grammar
// json.Marshal checks a json.Number against.
func validJSONNumber(s string) bool {
	if s == "" {
		return false
	}
	if s[0] == '-' {
		s = s[1:]
		if s == "" {
			return false
		}
	}
	digits := func(s string) string {
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
		return s
	}
	switch {
	case s[0] == '0':
		s = s[1:]
	case '1' <= s[0] && s[0] <= '9':
		s = digits(s[1:])
	default:
		return false
	}
	if len(s) >= 2 && s[0] == '.' && '0' <= s[1] && s[1] <= '9' {
		s = digits(s[2:])
	}
	if len(s) >= 2 && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		if s[0] == '+' || s[0] == '-' {
			s = s[1:]
			if s == "" {
				return false
			}
		}
		s = digits(s)
	}
	return s == ""
}
