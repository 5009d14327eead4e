package comfy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kiln-gpu/kiln/internal/job"
)

// ComfyUI's SaveImage names a file <name>_<NNNNN>_.png (SaveLatent,
// <name>_<NNNNN>_.latent) in the folder of its
// filename_prefix, the counter one past the highest already there
// (folder_paths.get_save_image_path), so names continue across prompts and
// a client that saves by file name never overwrites an earlier image.
// Workers write a job's files under <output_dir>/<job_id>/ (the worker
// protocol: a re-run of the job overwrites them, so at-least-once execution
// leaves no strays). When a prompt finishes, the kernel gives each saved
// file its ComfyUI name with a hard link in the output folder itself, and
// reports that name in "executed", /history and the result cache. The links
// of a prompt are recorded next to its files (comfyNamesFile), so /history
// keeps them across restarts.

// comfyNamesFile holds a prompt's ComfyUI-named outputs, in its job folder.
const comfyNamesFile = ".comfyui-outputs.json"

// nameOutputs links a finished job's saved files to their ComfyUI names and
// returns the outputs under those names. An output the worker did not write
// under the job's folder as <name>_<digits>_.png keeps its own name; a
// file that cannot be linked too (the error is logged).
func (h *hub) nameOutputs(jobID string, outs []job.Output) []job.Output {
	base := h.c.deps.OutputDir
	if base == "" || len(outs) == 0 {
		return outs
	}
	if h.c.deps.Cluster != nil {
		// In a cluster every node would count ComfyUI_00001_.png from its
		// own folder, so names would collide across nodes (and in the
		// cluster's object store); a job's own folder is unique
		// cluster-wide, and clients fetch what /history names.
		return outs
	}
	named := make([]job.Output, 0, len(outs))
	next := map[string]int{} // folder + name → next counter
	for _, o := range outs {
		if o.Type == outputWebsocket {
			named = append(named, o)
			continue
		}
		n, err := h.linkComfyName(base, jobID, o, next)
		if err != nil {
			h.c.deps.Log.Warn().Err(err).Str("prompt_id", jobID).Str("file", o.Filename).Msg("comfyui file name")
			n = o
		}
		named = append(named, n)
	}
	h.rememberNames(jobID, named)
	if b, err := json.Marshal(named); err == nil {
		if p, err := h.c.safePath(base, jobID, comfyNamesFile); err == nil {
			_ = os.WriteFile(p, b, 0o644) // without it, /history falls back to the job's own names after a restart
		}
	}
	return named
}

// linkComfyName links one output to its ComfyUI name.
func (h *hub) linkComfyName(base, jobID string, o job.Output, next map[string]int) (job.Output, error) {
	folder, ok := strings.CutPrefix(o.Subfolder+"/", jobID+"/")
	if !ok {
		return o, nil // not under the job's folder: a worker with its own naming
	}
	folder = strings.TrimSuffix(folder, "/")
	name, ext, ok := counterBase(o.Filename)
	if !ok {
		return o, nil
	}
	src, err := h.c.safePath(base, o.Subfolder, o.Filename)
	if err != nil {
		return o, err
	}
	dir := filepath.Join(base, filepath.FromSlash(folder))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return o, fmt.Errorf("link %s: %w", o.Filename, err)
	}
	key := folder + "\x00" + name
	if next[key] == 0 {
		next[key] = nextCounter(dir, name)
	}
	// The link fails when the name exists (another kiln, or a file put
	// there since the scan): the next number then.
	for tries := 0; tries < 100000; tries++ {
		file := fmt.Sprintf("%s_%05d_%s", name, next[key], ext)
		next[key]++
		err := os.Link(src, filepath.Join(dir, file))
		if err == nil {
			return job.Output{Node: o.Node, Filename: file, Subfolder: folder, Type: o.Type}, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return o, fmt.Errorf("link %s: %w", o.Filename, err)
		}
	}
	return o, fmt.Errorf("link %s: no free name in %s", o.Filename, dir)
}

// counterBase splits <name>_<digits>_.<ext>, as workers name files (ext
// png, or latent for SaveLatent), into name and ".<ext>".
func counterBase(file string) (name, ext string, ok bool) {
	ext = path.Ext(file)
	stem, ok := strings.CutSuffix(file, "_"+ext)
	if !ok || ext == "" {
		return "", "", false
	}
	i := strings.LastIndexByte(stem, '_')
	if i <= 0 {
		return "", "", false
	}
	if _, err := strconv.Atoi(stem[i+1:]); err != nil {
		return "", "", false
	}
	return stem[:i], ext, true
}

// nextCounter is ComfyUI's counter for name in dir: one more than the
// highest N of the files named name_N…, 1 when there are none.
func nextCounter(dir, name string) int {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 1
	}
	highest := 0
	for _, en := range entries {
		rest, ok := strings.CutPrefix(en.Name(), name+"_")
		if !ok {
			continue
		}
		digits, _, _ := strings.Cut(rest, "_")
		if n, err := strconv.Atoi(digits); err == nil && n > highest {
			highest = n
		}
	}
	return highest + 1
}

// maxRememberedNames bounds the prompts whose names the hub keeps in memory:
// ComfyUI's history holds 10000 prompts (MAXIMUM_HISTORY_SIZE). Older ones
// are read again from their folders when /history asks.
const maxRememberedNames = 10000

// rememberNames keeps a prompt's ComfyUI-named outputs for /history.
func (h *hub) rememberNames(id string, outs []job.Output) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.names[id]; !ok {
		h.nameOrder = append(h.nameOrder, id)
	}
	h.names[id] = outs
	for len(h.nameOrder) > maxRememberedNames {
		delete(h.names, h.nameOrder[0])
		h.nameOrder = h.nameOrder[1:]
	}
}

// outputsOf is a finished job's outputs under their ComfyUI names: those
// named in this process, else those recorded in its folder, else the job's
// own.
func (h *hub) outputsOf(j *job.Job) []job.Output {
	h.mu.Lock()
	outs, ok := h.names[j.ID]
	h.mu.Unlock()
	if ok {
		return outs
	}
	if j.State == job.Done && h.c.deps.OutputDir != "" {
		if p, err := h.c.safePath(h.c.deps.OutputDir, j.ID, comfyNamesFile); err == nil {
			if b, err := os.ReadFile(p); err == nil && json.Unmarshal(b, &outs) == nil {
				h.rememberNames(j.ID, outs)
				return outs
			}
		}
	}
	return j.Outputs
}

// inJobFolder reports whether subfolder is jobID's folder or below it.
func inJobFolder(subfolder, jobID string) bool {
	return subfolder == jobID || strings.HasPrefix(path.Clean(subfolder)+"/", jobID+"/")
}
