package comfy

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/rs/zerolog"

	"github.com/kiln-gpu/kiln/internal/clock"
	"github.com/kiln-gpu/kiln/internal/job"
)

func TestCounterBase(t *testing.T) {
	for _, tc := range []struct {
		file, want, wantExt string
		ok                  bool
	}{
		{"ComfyUI_00001_.png", "ComfyUI", ".png", true},
		{"my_prefix_00012_.png", "my_prefix", ".png", true},
		{"ComfyUI_temp_abcde_00001_.png", "ComfyUI_temp_abcde", ".png", true},
		{"ComfyUI_00003_.latent", "ComfyUI", ".latent", true},
		{"ComfyUI.png", "", "", false},
		{"ComfyUI_x_.png", "", "", false},
		{"_00001_.png", "", "", false},
		{"ComfyUI_00001_", "", "", false},
	} {
		got, ext, ok := counterBase(tc.file)
		if got != tc.want || ext != tc.wantExt || ok != tc.ok {
			t.Errorf("counterBase(%q) = %q, %q, %v; want %q, %q, %v", tc.file, got, ext, ok, tc.want, tc.wantExt, tc.ok)
		}
	}
}

// TestNameOutputsContinueTheCounter names the files of three prompts, each
// written by its worker as ComfyUI_00001_.png in its job folder: they get
// ComfyUI_00001_ to _00003_ in the output folder, the counter continuing
// after files already there, and the names survive a new hub (a restart).
func TestNameOutputsContinueTheCounter(t *testing.T) {
	out := t.TempDir()
	newHubAt := func() *hub {
		deps := Deps{OutputDir: out, Log: zerolog.Nop(), Clock: clock.Real()}
		return newHub(&comfy{deps: deps, cfg: Config{}.WithDefaults()})
	}
	h := newHubAt()
	write := func(rel string) {
		p := filepath.Join(out, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(rel), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("sd3/img_00007_.png") // an earlier image in the sd3 folder
	var got []job.Output
	for _, id := range []string{"p1", "p2", "p3"} {
		write(id + "/ComfyUI_00001_.png")
		write(id + "/sd3/img_00001_.png")
		got = append(got, h.nameOutputs(id, []job.Output{
			{Node: "9", Filename: "ComfyUI_00001_.png", Subfolder: id, Type: "output"},
			{Node: "12", Filename: "img_00001_.png", Subfolder: id + "/sd3", Type: "output"},
		})...)
	}
	want := []job.Output{
		{Node: "9", Filename: "ComfyUI_00001_.png", Subfolder: "", Type: "output"},
		{Node: "12", Filename: "img_00008_.png", Subfolder: "sd3", Type: "output"},
		{Node: "9", Filename: "ComfyUI_00002_.png", Subfolder: "", Type: "output"},
		{Node: "12", Filename: "img_00009_.png", Subfolder: "sd3", Type: "output"},
		{Node: "9", Filename: "ComfyUI_00003_.png", Subfolder: "", Type: "output"},
		{Node: "12", Filename: "img_00010_.png", Subfolder: "sd3", Type: "output"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("named %+v\nwant %+v", got, want)
	}
	if b, err := os.ReadFile(filepath.Join(out, "ComfyUI_00002_.png")); err != nil || string(b) != "p2/ComfyUI_00001_.png" {
		t.Errorf("ComfyUI_00002_.png holds %q (%v), want p2's file", b, err)
	}
	// After a restart the names come from the prompt's folder.
	j := &job.Job{ID: "p2", State: job.Done, Outputs: []job.Output{{Node: "9", Filename: "ComfyUI_00001_.png", Subfolder: "p2", Type: "output"}}}
	if got := newHubAt().outputsOf(j); !reflect.DeepEqual(got, want[2:4]) {
		t.Errorf("outputs after a restart %+v, want %+v", got, want[2:4])
	}
	// A file outside the job's folder keeps its name.
	other := []job.Output{{Node: "1", Filename: "x_00001_.png", Subfolder: "elsewhere", Type: "output"}}
	if got := h.nameOutputs("p4", other); !reflect.DeepEqual(got, other) {
		t.Errorf("output outside the job folder renamed to %+v", got)
	}
}
