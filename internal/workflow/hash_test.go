package workflow

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
)

// TestOutputHashes pins the canonical hashes of three example workflows'
// output nodes to the values the ComfyUI result cache computed before the
// hashing moved here from internal/api/comfy (issue 19), and checks that node
// ids do not enter a hash.
func TestOutputHashes(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []NodeHash
	}{
		{"salad-comfyui-api__sd1.5-txt2img.api.json",
			[]NodeHash{{"9", "8b09c16b6383e3700647e04bf6989681e111e127fa716dad7494ee71733235e1"}}},
		{"comfyui__tests_inference_workflows_flux-0.api.json",
			[]NodeHash{{"16", "60bab5798325c77d2e2bc9f07b795e2f2e90a7842faedd2467596971bffc50b6"}}},
		{"salad-comfyui-api__sdxl_txt2img-with-refiner.api.json",
			[]NodeHash{{"19", "067899a2a306bca1c8bf5f24eeb85e6b7b12aef49df1467ca2f9a7c1fd98a7ea"}}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			raw, err := os.ReadFile("../../examples/workflows/" + tc.file)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Decode(raw)
			if err != nil {
				t.Fatal(err)
			}
			if got := OutputHashes(m); !slices.Equal(got, tc.want) {
				t.Errorf("OutputHashes = %v; want %v", got, tc.want)
			}
			g, err := FromMap(m, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if got := g.Facts().OutputHashes; !slices.Equal(got, tc.want) {
				t.Errorf("Facts().OutputHashes = %v; want %v", got, tc.want)
			}
			// The same graph with every node id prefixed hashes alike.
			renamed := map[string]any{}
			for id, n := range m {
				node := n.(map[string]any)
				in := map[string]any{}
				for k, v := range node["inputs"].(map[string]any) {
					if l, ok := v.([]any); ok && len(l) == 2 {
						if s, ok := l[0].(string); ok {
							v = []any{"n" + s, l[1]}
						}
					}
					in[k] = v
				}
				renamed["n"+id] = map[string]any{"class_type": node["class_type"], "inputs": in}
			}
			got := OutputHashes(renamed)
			if len(got) != len(tc.want) || got[0].Hash != tc.want[0].Hash || got[0].Node != "n"+tc.want[0].Node {
				t.Errorf("renamed graph: %v; want the same hashes under n-prefixed ids", got)
			}
		})
	}
}

// outputHashesReference is OutputHashes as the ComfyUI result cache first
// computed it, through fmt and json.Marshal: the definition the fast
// version must keep to, or every cached result would be missed.
func outputHashesReference(m map[string]any) []NodeHash {
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

// TestOutputHashesMatchReference checks the fast OutputHashes against the
// fmt-built reference on every example workflow and on literals that take
// the slow paths (escapes, HTML characters, non-ASCII, invalid numbers,
// floats, nested values, links with odd output indexes).
func TestOutputHashesMatchReference(t *testing.T) {
	files, err := filepath.Glob("../../examples/workflows/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example workflows: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := OutputHashes(m), outputHashesReference(m); !slices.Equal(got, want) {
			t.Errorf("%s: OutputHashes = %v; reference %v", filepath.Base(f), got, want)
		}
	}
	odd := []any{
		"plain", "quote \" and \\ backslash", "<b>&amp;</b>", "tab\tnewline\n", "é ü 漢字", "\u2028", "\x7f", "bad utf8 \xff",
		json.Number("12"), json.Number("-0.5e+10"), json.Number("1E5"), json.Number("01"), json.Number("1."), json.Number(""), json.Number("abc"),
		1.5, float64(1e21), int64(7), true, false, nil,
		[]any{"x", json.Number("0"), "third"}, []any{json.Number("1"), json.Number("2")}, map[string]any{"k": "v", "<": json.Number("1")},
	}
	links := []any{json.Number("0"), json.Number("1.0"), "2", 3.0, int64(4), nil}
	for i, v := range odd {
		for j, out := range links {
			m := map[string]any{
				"1": map[string]any{"class_type": "Loader \"q\"", "inputs": map[string]any{"v": v}},
				"2": map[string]any{"class_type": "SaveImage", "inputs": map[string]any{"images": []any{"1", out}, "lit": v, "é": v}},
				"3": map[string]any{"class_type": "PreviewImage", "inputs": map[string]any{"images": []any{json.Number("1"), out}}},
			}
			if got, want := OutputHashes(m), outputHashesReference(m); !slices.Equal(got, want) {
				t.Errorf("literal %d (%#v), output %d (%#v): OutputHashes = %v; reference %v", i, v, j, out, got, want)
			}
		}
	}
}

// FuzzOutputHashes checks the fast OutputHashes against the reference on
// any workflow that decodes.
func FuzzOutputHashes(f *testing.F) {
	f.Add([]byte(`{"1":{"class_type":"SaveImage","inputs":{"a":"x<y","b":1e5,"c":["2",0]}},"2":{"class_type":"K","inputs":{"s":"\u00e9"}}}`))
	f.Add([]byte(`{"9":{"class_type":"PreviewImage","inputs":{"images":[9,0],"n":null,"t":true,"o":{"k":[1,2,3]}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		if err != nil {
			return
		}
		if got, want := OutputHashes(m), outputHashesReference(m); !slices.Equal(got, want) {
			t.Errorf("OutputHashes = %v; reference %v", got, want)
		}
	})
}

func BenchmarkOutputHashes(b *testing.B) {
	raw, err := os.ReadFile("../../examples/workflows/salad-comfyui-api__sd1.5-txt2img.api.json")
	if err != nil {
		b.Fatal(err)
	}
	m, err := Decode(raw)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		OutputHashes(m)
	}
}
