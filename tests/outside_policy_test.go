package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestPolicyBuiltOutsideTheRepository builds the worked example of
// docs/policies.md ("Outside this repository") as its author would: its
// go.mod and main.go, copied out of the page into a directory of their own
// with the replace pointed at this checkout, `go mod tidy` with no proxy
// (the module is not on the Go module proxy; the SDK needs only the
// standard library), a wasip1 build, and `kiln policy test` on the module.
func TestPolicyBuiltOutsideTheRepository(t *testing.T) {
	doc, err := os.ReadFile("../docs/policies.md")
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{"go.mod", "main.go"} {
		re := regexp.MustCompile("(?s)<!-- outside-example: " + regexp.QuoteMeta(name) + " -->\n```[a-z]*\n(.*?)```")
		m := re.FindSubmatch(doc)
		if m == nil {
			t.Fatalf("docs/policies.md has no outside-example block for %s", name)
		}
		body := strings.ReplaceAll(string(m[1]), "/path/to/kiln", root)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(env []string, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// GOPROXY=off: nothing may need a download.
	run([]string{"GOPROXY=off", "GOFLAGS=-mod=mod"}, "go", "mod", "tidy")
	run([]string{"GOOS=wasip1", "GOARCH=wasm", "GOPROXY=off"}, "go", "build", "-buildmode=c-shared", "-o", "sieve.wasm", ".")
	out := run(nil, filepath.Join(binDir, "kiln"), "policy", "test", "sieve.wasm", "--kind", "eviction", "--seed", "3",
		"--samples", "500", "--call-timeout", "2s")
	if !strings.Contains(out, "passes as an eviction policy") || !strings.Contains(out, "0 faults") {
		t.Errorf("kiln policy test: %s", out)
	}
}
