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

// TestANewWorkerFieldReachesEveryGeneratedFile adds a field to the worker
// view and the worker record (in a copy of the tree), as docs/ARCHITECTURE.md
// says to, and checks that each generated file carries it: the codec, the
// conversion, ABI.md (with its version and the version history) and the
// AssemblyScript accessor and marker.
func TestANewWorkerFieldReachesEveryGeneratedFile(t *testing.T) {
	dir := copyTree(t)
	types := filepath.Join(dir, typesPath)
	edit(t, types, "ABIMinor = 2", "ABIMinor = 3")
	edit(t, types, "\tResident []uint32 `abi:\"44\"",
		"\tQueueDepth uint32 `abi:\"52,since=1.3\" doc:\"queue_depth: jobs waiting for it\"`\n\tResident []uint32 `abi:\"44\"")
	edit(t, filepath.Join(dir, decisionPath, "decision.go"), "\tH2DBytesPerS uint64\n}", "\tH2DBytesPerS uint64\n\tQueueDepth int\n}")
	files, err := generate(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		codecPath:    {"u32(residentN).u32(x.QueueDepth)", "x.QueueDepth = u32le(rec[52:])"},
		markerPath:   {"//go:wasmexport kiln_abi_v1_3"},
		adaptersPath: {"dst.QueueDepth = uint32(max(v.QueueDepth, 0))"},
		// The record is still 56 bytes: the field took the reserved slot.
		abiDocPath: {"**Worker** (56 bytes)", "| 52 | u32 | queue_depth: jobs waiting for it (since 1.3) |", "This document is **1.3**",
			"- **1.3** — Worker record, offset 52: queue_depth: jobs waiting for it."},
		tsPath: {"get queueDepth(): u32 { return load<u32>(changetype<usize>(this), 52); }",
			"export function kiln_abi_v1_3(): void {}", "export function kiln_abi_v1_2(): void {}"},
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
