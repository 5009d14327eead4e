package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var updateSpecs = flag.Bool("update", false, "rewrite kernel/api/testdata/comfy/object_info.json")

// objectInfoGolden is the sim's /object_info as the kernel's API tests use it.
var objectInfoGolden = filepath.Join("..", "..", "kernel", "api", "testdata", "comfy", "object_info.json")

func TestNodeSpecsCoverNodeTable(t *testing.T) {
	specs := nodeSpecs()
	for _, class := range nodeClasses() {
		if specs[class] == nil {
			t.Errorf("node class %s has no spec", class)
		}
	}
	if got, want := len(specClasses()), len(specs); got != want {
		t.Errorf("%d spec rows for %d executable classes: a spec names a class the sim does not run", got, want)
	}
}

func TestNodeSpecsGolden(t *testing.T) {
	got, err := json.MarshalIndent(nodeSpecs(), "", " ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *updateSpecs {
		if err := os.MkdirAll(filepath.Dir(objectInfoGolden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(objectInfoGolden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(objectInfoGolden)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/kiln-worker-sim -run TestNodeSpecsGolden -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is stale: run go test ./cmd/kiln-worker-sim -run TestNodeSpecsGolden -update", objectInfoGolden)
	}
}

func TestRunReportsNodeStarts(t *testing.T) {
	h := newHarness(t, 80*gib)
	wf := h.loadSD15LoRA()
	_, all, err := h.runAll(context.Background(), "starts", wf)
	if err != nil {
		t.Fatal(err)
	}
	var starts []string
	stepsBeforeStart := false
	for _, p := range all {
		if p.Max == 0 {
			starts = append(starts, p.Node)
			continue
		}
		if !slices.Contains(starts, p.Node) {
			stepsBeforeStart = true
		}
	}
	if len(starts) != len(wf) || stepsBeforeStart {
		t.Errorf("node starts %v for %d nodes (steps before their node's start: %v)", starts, len(wf), stepsBeforeStart)
	}
}
