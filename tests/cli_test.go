package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kilnCLI runs bin/kiln with args and returns its exit status, stdout and
// stderr (stdin empty, not a terminal).
func kilnCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "kiln"), args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "KILN_ADDR=")
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// TestCLIContracts checks what tests outside the repository rely on, with
// the real binary against a real kiln: `kiln jobs -o json --addr URL` is
// JSON with a jobs array, `kiln cancel ID --addr URL` exits 0 and the job
// ends cancelled; and submit's flags after FILE, --wait's plain progress
// and its output as a URL and an absolute path.
func TestCLIContracts(t *testing.T) {
	data := t.TempDir()
	k := startKiln(t, data)
	wf := filepath.Join(t.TempDir(), "wf.json")
	raw, _ := json.Marshal(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 4, 1))
	if err := os.WriteFile(wf, raw, 0o644); err != nil {
		t.Fatal(err)
	}

	// Flags on both sides of FILE: --wait after it is honoured.
	code, out, errOut := kilnCLI(t, "submit", "--class", "batch", wf, "--wait", "--addr", k.base, "--output-dir", filepath.Join(data, "output"))
	if code != 0 {
		t.Fatalf("submit --wait: exit %d\n%s", code, errOut)
	}
	if strings.Contains(errOut, "\r") || !strings.Contains(errOut, "done [") || !strings.Contains(errOut, "elapsed") {
		t.Errorf("--wait off a terminal: want plain progress lines, got %q", errOut)
	}
	if !strings.Contains(out, k.base+"/view?filename=") || !strings.Contains(out, filepath.Join(data, "output")+string(filepath.Separator)) {
		t.Errorf("submit --wait: want the output as a URL and an absolute path:\n%s", out)
	}

	// Long jobs to cancel: one worker per device, more jobs than workers.
	slow, _ := json.Marshal(loadWorkflow(t, "salad-comfyui-api__sd1.5-txt2img.api.json", 150, 2))
	os.WriteFile(wf, slow, 0o644)
	var ids []string
	for range 6 {
		code, out, errOut := kilnCLI(t, "submit", wf, "--addr", k.base)
		if code != 0 {
			t.Fatalf("submit: exit %d: %s", code, errOut)
		}
		ids = append(ids, strings.TrimSpace(out))
	}

	// jobs -o json: an object with a jobs array (or an array).
	code, out, errOut = kilnCLI(t, "jobs", "-o", "json", "--addr", k.base)
	if code != 0 {
		t.Fatalf("jobs -o json: exit %d: %s", code, errOut)
	}
	var list struct {
		Jobs []struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Jobs) != 7 {
		t.Fatalf("jobs -o json: %v, %d jobs:\n%s", err, len(list.Jobs), out)
	}

	// cancel ID...: exit 0, the jobs end cancelled (running or queued).
	code, out, errOut = kilnCLI(t, "cancel", ids[0], ids[5], "--addr", k.base)
	if code != 0 {
		t.Fatalf("cancel: exit %d: %s%s", code, out, errOut)
	}
	for _, id := range []string{ids[0], ids[5]} {
		waitFor(t, 10*time.Second, "job "+id+" cancelled", func() bool { return k.job(id).State == "cancelled" })
	}
	// Again: already cancelled is what was asked.
	if code, _, errOut := kilnCLI(t, "cancel", ids[0], "--addr", k.base); code != 0 {
		t.Errorf("cancel of a cancelled job: exit %d: %s", code, errOut)
	}
	if code, _, _ := kilnCLI(t, "cancel", "no-such-job", "--addr", k.base); code != 1 {
		t.Errorf("cancel of an unknown job: exit %d, want 1", code)
	}
	// jobs show, and jobs ID, show that job.
	for _, args := range [][]string{{"jobs", "show", ids[0]}, {"jobs", ids[0]}} {
		code, out, _ := kilnCLI(t, append(args, "-o", "json", "--addr", k.base)...)
		var j struct{ ID, State string }
		if code != 0 || json.Unmarshal([]byte(out), &j) != nil || j.ID != ids[0] || j.State != "cancelled" {
			t.Errorf("kiln %v: exit %d\n%s", args, code, out)
		}
	}
	// Flags before the IDs, too; this leaves kiln idle for its shutdown.
	if code, _, errOut := kilnCLI(t, append([]string{"cancel", "--addr", k.base}, ids[1:5]...)...); code != 0 {
		t.Errorf("cancel --addr URL ID...: exit %d: %s", code, errOut)
	}
}

// TestServeWarnsAboutModelsDir: serve --models on a missing directory
// starts, and says so.
func TestServeWarnsAboutModelsDir(t *testing.T) {
	k := &kilnProc{t: t, dataDir: t.TempDir(), models: filepath.Join(t.TempDir(), "nonexistent")}
	k.start(freePort(t))
	t.Cleanup(k.stop)
	if !strings.Contains(k.log.String(), "the models directory does not exist") {
		t.Errorf("no warning about the missing models dir in kiln's log:\n%s", k.logTail())
	}
}
