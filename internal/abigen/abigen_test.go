package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const root = "../.."

// TestGeneratedFilesAreCurrent fails when a file abigen writes differs
// from what it would write now: someone edited a record type, a view or
// a generated section by hand and did not run go generate
// ./internal/abigen. It generates in memory and compares, so it needs no
// git.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	files, err := generate(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		have, err := os.ReadFile(filepath.Join(root, f.path))
		if err != nil {
			t.Fatal(err)
		}
		if string(have) != string(f.data) {
			t.Errorf("%s is stale: run go generate ./internal/abigen (first differing line: %s)", f.path, firstDiff(string(have), string(f.data)))
		}
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return "line " + strconv.Itoa(i+1) + ": have " + al[i] + ", want " + bl[i]
		}
	}
	return "line " + strconv.Itoa(min(len(al), len(bl))+1) + ": one file is longer"
}

// copyTree copies the files abigen reads into a temporary root.
func copyTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, p := range []string{typesPath, abiDocPath, tsPath} {
		copyFile(t, filepath.Join(root, p), filepath.Join(dir, p))
	}
	views, err := filepath.Glob(filepath.Join(root, decisionPath, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range views {
		copyFile(t, p, filepath.Join(dir, decisionPath, filepath.Base(p)))
	}
	return dir
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// edit replaces old with new in the file at path, once.
func edit(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(b), old) != 1 {
		t.Fatalf("%s: %q is not there exactly once", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestANewPlacementFieldReachesEveryGeneratedFile adds a field to a view
// and to the record it feeds (in a copy of the tree), in the record's
// first reserved slot and with the minor version raised, as
// docs/ARCHITECTURE.md says to, and checks that each generated file
// carries it: the codec, the conversion, ABI.md (its table, version and
// version history) and the AssemblyScript accessor and marker.
func TestANewPlacementFieldReachesEveryGeneratedFile(t *testing.T) {
	dir := copyTree(t)
	abi, err := parseABI(filepath.Join(dir, typesPath))
	if err != nil {
		t.Fatal(err)
	}
	// The first of the placement records with a reserved slot left.
	var rec *record
	var off int
	for _, v := range views {
		for i := range abi.records {
			r := &abi.records[i]
			if r.name != v.record || rec != nil {
				continue
			}
			slots, err := r.layout()
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range slots {
				if s.field == nil && s.flags == nil {
					rec, off = r, s.off
					break
				}
			}
		}
	}
	if rec == nil {
		t.Skip("no placement record has a reserved slot left: a new field needs a major version")
	}
	minor := abi.minor + 1
	types := filepath.Join(dir, typesPath)
	edit(t, types, "ABIMinor = "+strconv.Itoa(abi.minor), "ABIMinor = "+strconv.Itoa(minor))
	edit(t, types, "type "+rec.name+" struct {\n",
		"type "+rec.name+" struct {\n\tQueueDepth uint32 `abi:\""+strconv.Itoa(off)+",since=1."+strconv.Itoa(minor)+"\" doc:\"queue_depth: jobs waiting for it\"`\n")
	viewName := ""
	for _, v := range views {
		if v.record == rec.name {
			viewName = v.view
		}
	}
	viewFiles, _ := filepath.Glob(filepath.Join(dir, decisionPath, "*.go"))
	edited := false
	for _, p := range viewFiles {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), "type "+viewName+" struct {\n") {
			edit(t, p, "type "+viewName+" struct {\n", "type "+viewName+" struct {\n\tQueueDepth int\n")
			edited = true
		}
	}
	if !edited {
		t.Fatalf("no struct %s in %s", viewName, decisionPath)
	}
	files, err := generate(dir)
	if err != nil {
		t.Fatal(err)
	}
	at, v := strconv.Itoa(off), "1."+strconv.Itoa(minor)
	want := map[string][]string{
		codecPath:    {"u32(x.QueueDepth)", "x.QueueDepth = u32le(rec[" + at + ":])"},
		markerPath:   {"//go:wasmexport kiln_abi_v1_" + strconv.Itoa(minor)},
		adaptersPath: {"dst.QueueDepth = uint32(max(v.QueueDepth, 0))"},
		// The record keeps its size: the field took a reserved slot.
		abiDocPath: {"**" + rec.ts + "** (" + strconv.Itoa(rec.size) + " bytes)", "| " + at + " | u32 | queue_depth: jobs waiting for it (since " + v + ") |",
			"This document is **" + v + "**", "- **" + v + "** — " + rec.ts + " record, offset " + at + ": queue_depth: jobs waiting for it."},
		tsPath: {"get queueDepth(): u32 { return load<u32>(changetype<usize>(this), " + at + "); }",
			"export function kiln_abi_v1_" + strconv.Itoa(minor) + "(): void {}", "export function kiln_abi_v1_" + strconv.Itoa(abi.minor) + "(): void {}"},
	}
	for _, f := range files {
		for _, w := range want[f.path] {
			if !strings.Contains(string(f.data), w) {
				t.Errorf("%s lacks %q", f.path, w)
			}
		}
		delete(want, f.path)
	}
	for p := range want {
		t.Errorf("abigen wrote no %s", p)
	}
	if _, err := os.Stat(filepath.Join(dir, codecPath)); err == nil {
		t.Errorf("generate wrote into the tree; it should only return files")
	}
}

// TestLayoutMistakesAreRefused checks the generator's refusals: a field
// over another, a record that grows (a major version), a field newer than
// ABIMinor, and a view field whose type cannot be copied.
func TestLayoutMistakesAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name, file, old, new, want string
	}{
		{"overlap", typesPath, "Device uint32 `abi:\"32\"", "Device uint32 `abi:\"28\"", "overlaps"},
		{"grows", typesPath, "Device uint32 `abi:\"32\"", "Device uint32 `abi:\"56\"", "past the record's size"},
		{"misaligned", typesPath, "H2DBytesPerS uint64 `abi:\"24\" doc:\"h2d_bytes_per_s (0 unknown)\"", "H2DBytesPerS uint64 `abi:\"52\" doc:\"h\"", "not a multiple of 8"},
		{"newer than ABIMinor", typesPath, "Device uint32 `abi:\"32\"", "Device uint32 `abi:\"32,since=1.9\"", "raise ABIMinor"},
		{"bool without bit", typesPath, "Idle     bool `abi:\"36,bit=0\"", "Idle     bool `abi:\"36\"", "needs bit=N"},
		{"view type", filepath.Join(decisionPath, "decision.go"), "\tDegraded   bool\n", "\tDegraded   string\n", "cannot be copied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyTree(t)
			edit(t, filepath.Join(dir, tc.file), tc.old, tc.new)
			_, err := generate(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("generate: %v; want an error with %q", err, tc.want)
			}
		})
	}
}
