package comfy

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/kiln-gpu/kiln/internal/job"
)

// ComfyUI's SaveImage (and PreviewImage, its subclass) write the prompt and
// the client's extra_pnginfo into every PNG as tEXt chunks: "prompt" holds
// the API graph as JSON, and each key of extra_data.extra_pnginfo (the
// frontend sends "workflow") one more chunk with its value as JSON. Tools
// read them back to reproduce an image, and ComfyUI's frontend loads a
// workflow from them. The workers write the pixels; the kernel, which alone
// holds extra_data, adds the chunks when the prompt finishes and before any
// client hears of the files.

// pngSignature starts every PNG file.
var pngSignature = []byte("\x89PNG\r\n\x1a\n")

// errNotPNG is returned for a file that does not start with a PNG header.
var errNotPNG = errors.New("not a PNG file")

// writePNGInfo adds the prompt and extra_pnginfo chunks to the PNGs a
// prompt saved (types output and temp; SaveImageWebsocket writes none, as
// in ComfyUI), and the same metadata to its SaveLatent files. A file that
// already carries a "prompt" chunk (its worker wrote one) is left alone;
// errors are logged and the file kept as it is.
func (h *hub) writePNGInfo(id string, workflow json.RawMessage, outs []job.Output) {
	if len(outs) == 0 || h.c.deps.OutputDir == "" {
		return
	}
	chunks, err := pngInfoChunks(workflow, h.extraPNGInfo(id))
	if err != nil {
		h.c.deps.Log.Warn().Err(err).Str("prompt_id", id).Msg("png metadata")
		return
	}
	for _, o := range outs {
		ext := strings.ToLower(filepath.Ext(o.Filename))
		if o.Type == outputWebsocket || (ext != ".png" && ext != ".latent") {
			continue
		}
		p, err := h.c.safePath(h.c.deps.OutputDir, o.Subfolder, o.Filename)
		switch {
		case err != nil:
		case ext == ".latent":
			err = addLatentMetadata(p, chunks)
		default:
			err = addPNGText(p, chunks)
		}
		if err != nil {
			h.c.deps.Log.Warn().Err(err).Str("prompt_id", id).Str("file", o.Filename).Msg("png metadata")
		}
	}
}

// extraPNGInfo is a prompt's extra_data.extra_pnginfo, if it sent one.
func (h *hub) extraPNGInfo(id string) map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, _ := h.extra[id]["extra_pnginfo"].(map[string]any)
	return m
}

// pngInfoChunks are the tEXt chunks, keyword and text: "prompt" first, then
// the extra_pnginfo keys in sorted order (ComfyUI keeps the client's order,
// which a decoded JSON object has lost).
func pngInfoChunks(workflow json.RawMessage, extra map[string]any) ([][2]string, error) {
	var compact, escaped bytes.Buffer
	if err := json.Compact(&compact, workflow); err != nil {
		return nil, fmt.Errorf("prompt: %w", err)
	}
	// <, > and & escaped as they always were here: the store's records
	// once held the workflow as json.Marshal escapes it, and now hold it
	// as the client sent it (internal/job, RATIONALE.md).
	json.HTMLEscape(&escaped, compact.Bytes())
	chunks := [][2]string{{"prompt", asciiJSON(escaped.Bytes())}}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !validPNGKeyword(k) || k == "prompt" {
			continue // not writable as a tEXt keyword, or would shadow the prompt
		}
		b, err := json.Marshal(extra[k])
		if err != nil {
			return nil, fmt.Errorf("extra_pnginfo %s: %w", k, err)
		}
		chunks = append(chunks, [2]string{k, asciiJSON(b)})
	}
	return chunks, nil
}

// validPNGKeyword reports whether k may name a tEXt chunk: 1 to 79
// printable Latin-1 characters (PNG spec 11.3.4.3), checked here as ASCII.
func validPNGKeyword(k string) bool {
	if len(k) == 0 || len(k) > 79 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// asciiJSON escapes every non-ASCII character of JSON text as \uXXXX, as
// Python's json.dumps does by default: tEXt holds Latin-1 only, and ComfyUI's
// chunks are ASCII. Outside strings JSON has only ASCII, so escaping every
// rune keeps the document valid.
func asciiJSON(b []byte) string {
	var sb strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		switch {
		case r < utf8.RuneSelf:
			sb.WriteByte(b[0])
		case r > 0xffff:
			r -= 0x10000
			fmt.Fprintf(&sb, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
		default:
			fmt.Fprintf(&sb, `\u%04x`, r)
		}
		b = b[n:]
	}
	return sb.String()
}

// addPNGText inserts tEXt chunks right after a PNG's IHDR, where PIL writes
// them, replacing the file through a temporary file and a rename so that a
// reader sees the old file or the new one, never half of one. A file that
// already has a "prompt" tEXt chunk is left as it is.
func addPNGText(path string, chunks [][2]string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	ihdrEnd, err := pngHeaderEnd(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if pngHasText(data, "prompt") {
		return nil
	}
	var buf bytes.Buffer
	buf.Grow(len(data) + 4096)
	buf.Write(data[:ihdrEnd])
	for _, c := range chunks {
		body := append(append([]byte(c[0]), 0), c[1]...)
		var hdr [8]byte
		binary.BigEndian.PutUint32(hdr[:4], uint32(len(body)))
		copy(hdr[4:], "tEXt")
		crc := crc32.NewIEEE()
		crc.Write(hdr[4:])
		crc.Write(body)
		buf.Write(hdr[:])
		buf.Write(body)
		_ = binary.Write(&buf, binary.BigEndian, crc.Sum32())
	}
	buf.Write(data[ihdrEnd:])
	tmp, err := os.CreateTemp(filepath.Dir(path), ".pnginfo-*.png")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// addLatentMetadata gives a SaveLatent file (safetensors) the same keys and
// texts as a PNG's tEXt chunks, in its header's __metadata__, as ComfyUI's
// SaveLatent does (comfy.utils.save_torch_file with metadata). The tensors'
// offsets count from the end of the header, so only the header changes; it
// is padded with spaces to 8 bytes, as safetensors writes it. A file whose
// header already has metadata (its worker wrote some) is left as it is.
func addLatentMetadata(path string, chunks [][2]string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if len(data) < 8 {
		return fmt.Errorf("%s: not a safetensors file", path)
	}
	n := binary.LittleEndian.Uint64(data[:8])
	if n > uint64(len(data)-8) {
		return fmt.Errorf("%s: header of %d bytes in a file of %d", path, n, len(data))
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(data[8:8+n], &header); err != nil {
		return fmt.Errorf("%s: header: %w", path, err)
	}
	if _, ok := header["__metadata__"]; ok {
		return nil
	}
	meta := make(map[string]string, len(chunks))
	for _, c := range chunks {
		meta[c[0]] = c[1]
	}
	if header["__metadata__"], err = json.Marshal(meta); err != nil {
		return err
	}
	hdr, err := json.Marshal(header)
	if err != nil {
		return err
	}
	if pad := len(hdr) % 8; pad != 0 {
		hdr = append(hdr, bytes.Repeat([]byte(" "), 8-pad)...)
	}
	out := binary.LittleEndian.AppendUint64(make([]byte, 0, 8+len(hdr)+len(data)-8-int(n)), uint64(len(hdr)))
	out = append(append(out, hdr...), data[8+n:]...)
	tmp, err := os.CreateTemp(filepath.Dir(path), ".latentinfo-*.latent")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(out); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// pngHeaderEnd is the offset just past a PNG's IHDR chunk.
func pngHeaderEnd(data []byte) (int, error) {
	if !bytes.HasPrefix(data, pngSignature) || len(data) < 8+12+13 {
		return 0, errNotPNG
	}
	if string(data[12:16]) != "IHDR" || binary.BigEndian.Uint32(data[8:12]) != 13 {
		return 0, fmt.Errorf("%w: the first chunk is not IHDR", errNotPNG)
	}
	return 8 + 12 + 13, nil
}

// pngHasText reports whether a PNG has a tEXt chunk with this keyword.
func pngHasText(data []byte, keyword string) bool {
	for p := len(pngSignature); p+12 <= len(data); {
		n := int(binary.BigEndian.Uint32(data[p:]))
		if n < 0 || p+12+n > len(data) {
			return false
		}
		typ := string(data[p+4 : p+8])
		if typ == "IDAT" || typ == "IEND" {
			return false // text chunks of interest come before the image data
		}
		if typ == "tEXt" {
			if k, _, ok := bytes.Cut(data[p+8:p+8+n], []byte{0}); ok && string(k) == keyword {
				return true
			}
		}
		p += 12 + n
	}
	return false
}
