// Command abigen writes the parts of the policy ABI that follow from its
// record types, so that a new input a policy can see is written once.
//
// The ABI's records (sdk/policy/types.go: Job, Worker, Node, Entry, …)
// carry their wire layout in struct tags. From them abigen writes
//
//   - sdk/policy/records_gen.go: each record's encoder and decoder, at the
//     offsets the tags give (the hand-written codec.go lays out the bodies
//     and the pool around them);
//   - sdk/policy/marker_wasip1_gen.go: the Go SDK's version marker export;
//   - sdk/policy/ABI.md: the record tables, the version line and the
//     fields added by minor versions, between abigen marker comments (the
//     prose around them is hand-written);
//   - sdk/assemblyscript/assembly/kiln.ts: the record accessors, sizes and
//     version markers, between marker comments;
//   - internal/policy/views_gen.go: the copy of each decision view's fields
//     into the record fields of the same name (or the name its abi tag
//     gives), so that internal/policy/adapters.go converts by hand only
//     what needs interning or deriving.
//
// Run it from anywhere in the module:
//
//	go generate ./internal/abigen
//
// TestGeneratedFilesAreCurrent fails when a generated file differs from
// what abigen would write, and TestCodecMatchesGoldenBytes (sdk/policy)
// when the codec's bytes move.
package main

//go:generate go run . -root ../..

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	root := flag.String("root", ".", "the module's root directory")
	flag.Parse()
	files, err := generate(*root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "abigen:", err)
		os.Exit(1)
	}
	for _, f := range files {
		path := filepath.Join(*root, f.path)
		old, _ := os.ReadFile(path)
		if string(old) == string(f.data) {
			continue
		}
		if err := os.WriteFile(path, f.data, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "abigen:", err)
			os.Exit(1)
		}
		fmt.Println("abigen: wrote", f.path)
	}
}
