package tier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	sdk "github.com/kiln-gpu/kiln/sdk/plugin"
)

// ConvertConfig is tiers.convert: which models kiln rewrites into another
// weight dtype before a worker loads them (issue 16, "conversion to fit").
// A converted model is an artifact of its own in the disk tier (its own
// sha256, a record of its source), made once by the model's loader plugin
// and reused until the disk tier evicts it.
type ConvertConfig struct {
	// Rules are tried in order; the first whose model or family matches
	// names the dtype. A rule names a model (a catalog id) or a family
	// (flux, sdxl, sd3, ...), not both.
	Rules []ConvertRule `koanf:"rules"`
	// ToFit is the dtype a job's diffusion models are converted to when
	// its largest stage fits no device otherwise; "" never converts for
	// that reason (the job is then streamed or refused).
	ToFit string `koanf:"to_fit"`
}

// ConvertRule maps a model or a family to a weight dtype.
type ConvertRule struct {
	Model  string `koanf:"model"`
	Family string `koanf:"family"`
	// DType is fp16, bf16 or fp8_e4m3fn (ComfyUI's weight_dtype names).
	DType string `koanf:"dtype"`
}

// ConvertDTypes are the dtypes a conversion may ask for.
var ConvertDTypes = []string{sdk.DTypeFP16, sdk.DTypeBF16, sdk.DTypeFP8E4M3}

func validDType(dt string) bool {
	for _, d := range ConvertDTypes {
		if dt == d {
			return true
		}
	}
	return false
}

// Validate checks the section; errors name the full key.
func (c ConvertConfig) Validate() error {
	for i, r := range c.Rules {
		key := fmt.Sprintf("tiers.convert.rules[%d]", i)
		if (r.Model == "") == (r.Family == "") {
			return fmt.Errorf("%s: name a model or a family (one of them)", key)
		}
		if !validDType(r.DType) {
			return fmt.Errorf("%s.dtype: %q is not one of %s", key, r.DType, strings.Join(ConvertDTypes, ", "))
		}
	}
	if c.ToFit != "" && !validDType(c.ToFit) {
		return fmt.Errorf("tiers.convert.to_fit: %q is not one of %s (or empty)", c.ToFit, strings.Join(ConvertDTypes, ", "))
	}
	return nil
}

// Target returns the dtype the rules convert a model to, "" for none.
func (c ConvertConfig) Target(id, family string) string {
	for _, r := range c.Rules {
		if (r.Model != "" && r.Model == id) || (r.Family != "" && strings.EqualFold(r.Family, family)) {
			return r.DType
		}
	}
	return ""
}

// ConverterSource is implemented by a Resolver (the catalog) that knows
// which loader plugin reads a model, so that the tiers can ask it to
// convert the model's bytes.
type ConverterSource interface {
	ConverterFor(id string) sdk.Converter
}

func (m *Manager) converterFor(id string) sdk.Converter {
	if cs, ok := m.res.(ConverterSource); ok {
		return cs.ConverterFor(id)
	}
	return nil
}

// ErrNoConverter is wrapped when no loader can convert a model.
var ErrNoConverter = errors.New("no loader converts this model")

// Conversion is the record kept beside a converted artifact: what it was
// made from and how. It lives in the disk tier's conversions directory as
// <source sha256>.<dtype>.json.
type Conversion struct {
	SourceModel  string    `json:"source_model"`
	SourceSHA256 string    `json:"source_sha256"`
	SourceBytes  int64     `json:"source_bytes"`
	DType        string    `json:"dtype"`
	SHA256       string    `json:"sha256"`
	Bytes        int64     `json:"bytes"`
	Format       string    `json:"format"`
	Tensors      int64     `json:"converted_tensors"`
	ConvertedAt  time.Time `json:"converted_at"`
	TookMS       int64     `json:"took_ms"`
}

// conversionsDir holds the records; beside the blobs, not among them (the
// disk tier adopts only files named by a digest).
func (m *Manager) conversionsDir() string {
	return filepath.Join(filepath.Dir(m.disk.dir), filepath.Base(m.disk.dir)+"-conversions")
}

func (m *Manager) recordPath(srcSum, dtype string) string {
	return filepath.Join(m.conversionsDir(), srcSum+"."+dtype+".json")
}

// ConversionOf returns the record of model bytes srcSum converted to
// dtype, if kiln made one (the artifact itself may since have been
// evicted).
func (m *Manager) ConversionOf(srcSum, dtype string) (Conversion, bool) {
	b, err := os.ReadFile(m.recordPath(srcSum, dtype))
	if err != nil {
		return Conversion{}, false
	}
	var c Conversion
	if json.Unmarshal(b, &c) != nil || !isSum(c.SHA256) || c.SourceSHA256 != srcSum || c.DType != dtype {
		return Conversion{}, false
	}
	return c, true
}

// AcquireConverted is Acquire for model id rewritten in dtype: it makes the
// source's bytes resident on disk (L3), converts them there with the
// model's loader plugin unless a conversion of those exact bytes is on
// disk already, and makes the converted artifact resident in L2, pinned.
// The lease's Path, Bytes and SHA256 are the converted artifact's; its
// Model is id. Concurrent calls for one model and dtype share one
// conversion.
func (m *Manager) AcquireConverted(ctx context.Context, id, dtype string) (*Lease, error) {
	if !validDType(dtype) {
		return nil, fmt.Errorf("tier: convert %s: dtype %q is not one of %s", id, dtype, strings.Join(ConvertDTypes, ", "))
	}
	if m.converterFor(id) == nil {
		// Before any bytes move: a fetch that ends in this is wasted.
		return nil, fmt.Errorf("tier: convert %s to %s: %w", id, dtype, ErrNoConverter)
	}
	for attempt := 0; attempt < 3; attempt++ {
		conv, err := m.ensureConverted(ctx, id, dtype)
		if err != nil {
			return nil, fmt.Errorf("tier: convert %s to %s: %w", id, dtype, err)
		}
		if e := m.ram.get(conv.SHA256, true); e != nil {
			m.ram.readOut(e.size)
			return &Lease{m: m, e: e, model: id}, nil
		}
		err = m.once(ctx, "ram-converted:"+conv.SHA256, func(context.Context) error {
			l3 := m.disk.get(conv.SHA256, false)
			if l3 == nil {
				return nil // evicted meanwhile: the next attempt converts again
			}
			defer m.disk.unpin(l3)
			if m.ram.has(l3.sum) {
				return nil
			}
			return m.copyToRAM(l3, id)
		})
		if err != nil {
			return nil, fmt.Errorf("tier: acquire %s as %s: %w", id, dtype, err)
		}
		if e := m.ram.get(conv.SHA256, false); e != nil {
			m.ram.readOut(e.size)
			return &Lease{m: m, e: e, model: id}, nil
		}
	}
	return nil, fmt.Errorf("tier: acquire %s as %s: evicted as soon as it was made: %w", id, dtype, ErrNoRoom)
}

// ensureConverted returns the record of id's bytes converted to dtype,
// with the converted artifact on disk now.
func (m *Manager) ensureConverted(ctx context.Context, id, dtype string) (Conversion, error) {
	src, err := m.res.Resolve(ctx, id)
	if err != nil {
		return Conversion{}, err
	}
	l3, err := m.ensureL3(ctx, id, src)
	if err != nil {
		return Conversion{}, err
	}
	defer m.disk.unpin(l3)
	if c, ok := m.ConversionOf(l3.sum, dtype); ok && m.disk.has(c.SHA256) {
		return c, nil
	}
	var conv Conversion
	err = m.once(ctx, "convert:"+l3.sum+":"+dtype, func(ctx context.Context) error {
		if c, ok := m.ConversionOf(l3.sum, dtype); ok && m.disk.has(c.SHA256) {
			conv = c
			return nil
		}
		c, err := m.convertL3(ctx, id, l3, dtype)
		conv = c
		return err
	})
	if err == nil && conv.SHA256 == "" {
		// Another caller's flight made it: read its record.
		var ok bool
		if conv, ok = m.ConversionOf(l3.sum, dtype); !ok {
			err = fmt.Errorf("conversion record of %s missing after its conversion", l3.sum)
		}
	}
	return conv, err
}

// convertSlack bounds how much a conversion may add to its source: a
// header that grew, scales for an fp8 file (4 bytes per weight), or a
// copy of a file already in the dtype with its metadata annotated.
func convertSlack(size int64) int64 { return 1<<20 + size/64 }

// convertL3 runs the loader's Convert from the L3 file into a temp file in
// the disk tier, hashes the result, renames it into place under its digest
// and writes the record.
func (m *Manager) convertL3(ctx context.Context, id string, l3 *entry, dtype string) (Conversion, error) {
	cv := m.converterFor(id)
	if cv == nil {
		return Conversion{}, fmt.Errorf("%s: %w", id, ErrNoConverter)
	}
	bound := l3.size + convertSlack(l3.size)
	if err := m.disk.reserve(bound); err != nil {
		return Conversion{}, err
	}
	reserved := bound
	defer func() { m.disk.unreserve(reserved) }()
	start := m.clk.Now()
	tmp, err := os.CreateTemp(m.disk.dir, ".tmp-convert-*")
	if err != nil {
		return Conversion{}, fmt.Errorf("tier disk: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	res, err := cv.Convert(ctx, sdk.ConvertRequest{SrcPath: m.disk.path(l3.sum), DstPath: tmp.Name(), DType: dtype})
	if err != nil {
		return Conversion{}, err
	}
	// Nothing the plugin reports is trusted: size and digest are the file's.
	f, err := os.Open(tmp.Name())
	if err != nil {
		return Conversion{}, fmt.Errorf("converted file: %w", err)
	}
	n, sum, err := copyHash(io.Discard, f)
	f.Close()
	if err != nil {
		return Conversion{}, fmt.Errorf("hash converted file: %w", err)
	}
	if n != res.Bytes {
		return Conversion{}, fmt.Errorf("loader wrote %d bytes, the file holds %d: %w", res.Bytes, n, ErrCorrupt)
	}
	if n > bound {
		return Conversion{}, fmt.Errorf("converted file of %d bytes exceeds its reservation of %d: %w", n, bound, ErrNoRoom)
	}
	if err := os.Rename(tmp.Name(), m.disk.path(sum)); err != nil {
		return Conversion{}, fmt.Errorf("tier disk: %w", err)
	}
	took := m.clk.Since(start)
	m.disk.unreserve(bound - n)
	reserved = 0
	e := m.disk.add(sum, id+"@"+dtype, n, took)
	m.disk.unpin(e)
	c := Conversion{SourceModel: id, SourceSHA256: l3.sum, SourceBytes: l3.size, DType: dtype, SHA256: sum, Bytes: n,
		Format: res.Format, Tensors: res.ConvertedTensors, ConvertedAt: m.clk.Now().UTC(), TookMS: took.Milliseconds()}
	if err := m.writeRecord(c); err != nil {
		return Conversion{}, err
	}
	m.log.Info().Str("model", id).Str("dtype", dtype).Int64("from_bytes", l3.size).Int64("bytes", n).
		Int64("tensors", res.ConvertedTensors).Dur("took", took).Msg("converted model into disk tier")
	return c, nil
}

func (m *Manager) writeRecord(c Conversion) error {
	if err := os.MkdirAll(m.conversionsDir(), 0o755); err != nil {
		return fmt.Errorf("conversion record: %w", err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(m.conversionsDir(), ".tmp-*")
	if err != nil {
		return fmt.Errorf("conversion record: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("conversion record: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("conversion record: %w", err)
	}
	return os.Rename(tmp.Name(), m.recordPath(c.SourceSHA256, c.DType))
}

// ConvertedBytes is the size a model of bytes stored mostly in
// storedDType (a safetensors dtype, "BF16") has once converted to dtype:
// what the dispatcher plans a converted model's footprint by before the
// conversion has run. Only floating weights change; an unknown stored
// dtype counts as 16-bit.
func ConvertedBytes(bytes int64, storedDType, dtype string) int64 {
	from := map[string]float64{"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}[storedDType]
	if from == 0 {
		from = 2
	}
	to := map[string]float64{sdk.DTypeFP16: 2, sdk.DTypeBF16: 2, sdk.DTypeFP8E4M3: 1}[dtype]
	if to == 0 || to >= from {
		return bytes
	}
	return int64(math.Round(float64(bytes) * to / from))
}

// ConvertConfig returns tiers.convert as the Manager was built with it.
func (m *Manager) ConvertConfig() ConvertConfig { return m.convert }
