package workflow

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// TestFacts: a graph's Facts say what the graph does — its models,
// samplers, stages, output nodes (topological) and every node's class —
// for every workflow in the repository's examples.
func TestFacts(t *testing.T) {
	paths, err := filepath.Glob("../../examples/workflows/*.json")
	if err != nil || len(paths) == 0 {
		t.Fatalf("example workflows: %v, %v", paths, err)
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			g, err := Parse(raw, Limits{})
			if err != nil {
				t.Skipf("not an API-format graph kiln accepts: %v", err)
			}
			f := g.Facts()
			if !reflect.DeepEqual(f.Models, g.Models()) || !reflect.DeepEqual(f.Samplers, g.Params()) ||
				!reflect.DeepEqual(f.Stages, g.Stages()) {
				t.Errorf("Facts models/samplers/stages differ from the graph's")
			}
			var outs []string
			for _, n := range g.OutputNodes() {
				outs = append(outs, n.ID)
			}
			if !slices.Equal(f.Outputs, outs) {
				t.Errorf("Outputs %v; want %v", f.Outputs, outs)
			}
			if len(f.Classes) != g.Len() {
				t.Errorf("%d classes for %d nodes", len(f.Classes), g.Len())
			}
			for _, n := range g.Nodes() {
				if f.Classes[n.ID] != n.ClassType {
					t.Errorf("node %s: class %q; want %q", n.ID, f.Classes[n.ID], n.ClassType)
				}
			}
		})
	}
}
