package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestClusterDemo runs `kiln demo --nodes 3` (make cluster-demo) as a
// newcomer would: three `kiln nats` servers and three kiln nodes start as
// processes, the demo's jobs all finish with the node that ran each
// named, and Ctrl-C (SIGINT) of the demo leaves none of its processes
// behind.
func TestClusterDemo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cluster")
	// The demo's own model store: the demo synthesizes one at its --scale
	// where it finds none of its own, and doing that over the package's
	// shared store (modelStore) rewrote the files other tests size.
	cmd := exec.Command(filepath.Join(binDir, "kiln"), "demo", "--nodes", "3", "--jobs", "6", "--data-dir", dir,
		"--models", filepath.Join(t.TempDir(), "models"), "--scale", "0.0005", "--workflows", "../examples/workflows",
		"--set", "cost.time_scale=0.05", "--set", "workers.simulate=true",
		"--set", "workers.command="+filepath.Join(binDir, "kiln-worker-sim"))
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("demo output:\n%s", tail(out.String(), 4000))
		}
	})
	waitFor(t, 90*time.Second, "the demo's summary and the cluster serving", func() bool {
		return strings.Contains(out.String(), "keeps serving")
	})
	text := out.String()
	if !strings.Contains(text, "jobs 6: done 6, failed 0") || !strings.Contains(text, "done per node: node") {
		t.Fatalf("summary: want 6 jobs done and the nodes that ran them:\n%s", tail(text, 2000))
	}
	if n := demoChildren(t, dir); n != 6 {
		t.Errorf("%d processes of the demo running before Ctrl-C, want 6 (3 nats, 3 nodes)", n)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the demo exited with %v after Ctrl-C", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the demo did not exit within 60 s of Ctrl-C")
	}
	if n := demoChildren(t, dir); n != 0 {
		t.Errorf("%d of the demo's processes still run after Ctrl-C", n)
	}
}

// demoChildren counts the running processes whose command line names dir
// (the demo's data dir: every child of it has it in its flags).
func demoChildren(t *testing.T, dir string) int {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 1 && filepath.Base(args[0]) == "kiln" && (args[1] == "nats" || args[1] == "serve") && strings.Contains(string(b), dir) {
			n++
		}
	}
	return n
}
