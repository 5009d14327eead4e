package comfy

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/kiln-gpu/kiln/internal/httpjson"
)

// errEscapes is a subfolder that leaves its base directory (403).
var errEscapes = errors.New("path escapes its directory")

// errBadName is a file name that is not one plain name (400).
var errBadName = errors.New("bad file name")

// safePath joins base, subfolder and name, refusing names with separators
// or "..", and subfolders that leave base.
func (c *comfy) safePath(base, subfolder, name string) (string, error) {
	if base == "" {
		return "", errEscapes
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		return "", errBadName
	}
	if strings.ContainsRune(subfolder, 0) {
		return "", errBadName
	}
	absBase, err := filepath.Abs(base)
	if err != nil {
		return "", err
	}
	dir := filepath.Clean(filepath.Join(absBase, filepath.FromSlash(strings.ReplaceAll(subfolder, "\\", "/"))))
	if dir != absBase && !strings.HasPrefix(dir, absBase+string(filepath.Separator)) {
		return "", errEscapes
	}
	return filepath.Join(dir, name), nil
}

// dirOf is the directory of a ComfyUI folder type: output and temp are
// the workers' output directory, input the upload directory.
func (c *comfy) dirOf(typ string) (string, bool) {
	switch typ {
	case "", "output", "temp":
		return c.deps.OutputDir, true
	case "input":
		return c.inputDir, true
	}
	return "", false
}

// view is GET /view?filename&subfolder&type.
func (c *comfy) view(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name := q.Get("filename")
	base, ok := c.dirOf(q.Get("type"))
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid_type", fmt.Sprintf("type %q is not one of output, input, temp", q.Get("type")))
		return
	}
	if name == "" {
		writeError(w, http.StatusBadRequest, "invalid_filename", "filename is required")
		return
	}
	p, err := c.safePath(base, q.Get("subfolder"), name)
	switch {
	case errors.Is(err, errEscapes):
		writeError(w, http.StatusForbidden, "forbidden", "subfolder leaves the "+q.Get("type")+" directory")
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, "invalid_filename", "filename must be a plain file name")
		return
	}
	f, err := os.Open(p)
	if err != nil && c.deps.Cluster != nil && q.Get("type") != "input" {
		// Written by another node of the cluster: its copy in the
		// cluster's object store.
		c.viewFromCluster(w, r, q.Get("type"), q.Get("subfolder"), name)
		return
	}
	if err != nil {
		writeError(w, http.StatusNotFound, "not_found", "no such file")
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		writeError(w, http.StatusNotFound, "not_found", "no such file")
		return
	}
	ct := mime.TypeByExtension(filepath.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", fmt.Sprintf("filename=%q", name))
	http.ServeContent(w, r, name, st.ModTime(), f)
}

// uploadImage is POST /upload/image (multipart: image, overwrite, type,
// subfolder) → {name, subfolder, type}.
func (c *comfy) uploadImage(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, c.deps.MaxBodyBytes)
	if err := r.ParseMultipartForm(8 << 20); err != nil {
		writeError(w, http.StatusBadRequest, "bad_body", "want a multipart form with an image: "+err.Error())
		return
	}
	defer r.MultipartForm.RemoveAll()
	file, hdr, err := r.FormFile("image")
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_body", "the form has no image file")
		return
	}
	defer file.Close()
	typ := r.FormValue("type")
	if typ == "" {
		typ = "input"
	}
	base, ok := c.dirOf(typ)
	if !ok || typ == "" {
		writeError(w, http.StatusBadRequest, "invalid_type", fmt.Sprintf("type %q is not one of output, input, temp", typ))
		return
	}
	subfolder := r.FormValue("subfolder")
	overwrite := r.FormValue("overwrite") == "true" || r.FormValue("overwrite") == "1"
	name := hdr.Filename
	p, err := c.safePath(base, subfolder, name)
	switch {
	case errors.Is(err, errEscapes):
		writeError(w, http.StatusForbidden, "forbidden", "subfolder leaves the "+typ+" directory")
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, "invalid_filename", "filename must be a plain file name")
		return
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		writeError(w, http.StatusInternalServerError, "io_error", err.Error())
		return
	}
	if !overwrite {
		// ComfyUI's naming: "name (1).ext", "name (2).ext", ...
		ext := filepath.Ext(name)
		stem := strings.TrimSuffix(name, ext)
		for i := 1; ; i++ {
			if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
				break
			}
			name = fmt.Sprintf("%s (%d)%s", stem, i, ext)
			p = filepath.Join(filepath.Dir(p), name)
		}
	}
	out, err := os.Create(p)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "io_error", err.Error())
		return
	}
	_, err = io.Copy(out, file)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "io_error", err.Error())
		return
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"name": name, "subfolder": subfolder, "type": typ})
}
