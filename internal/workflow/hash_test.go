package workflow

import (
	"os"
	"slices"
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
