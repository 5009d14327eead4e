package modelfile

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// MinSynthBytes is the smallest tensor data Synth writes, whatever the scale.
const MinSynthBytes = 16 << 10

// Spec describes a synthetic model file.
type Spec struct {
	// ID is the model id ("checkpoints/sd_xl_base_1.0.safetensors"). It
	// seeds the content and refines the layout (fp8, refiner, t5, ...).
	ID string
	// Family picks the tensor layout; see the workflow.Family* constants.
	// Unknown families get a generic layout.
	Family string
	// NominalBytes is the size of the real model the file stands for.
	NominalBytes int64
	// Scale is the fraction of NominalBytes to write, in (0, 1].
	Scale float64
	// Seed varies the content between files of the same ID.
	Seed uint64
}

// Size returns the tensor data size Synth aims at for the spec.
func (s Spec) Size() int64 {
	return max(int64(float64(s.NominalBytes)*s.Scale), MinSynthBytes)
}

func (s Spec) validate() error {
	switch {
	case s.NominalBytes <= 0:
		return fmt.Errorf("synth %s: nominal bytes %d: must be > 0", s.ID, s.NominalBytes)
	case !(s.Scale > 0 && s.Scale <= 1):
		return fmt.Errorf("synth %s: scale %v: must be in (0, 1]", s.ID, s.Scale)
	}
	return nil
}

// plan lays out the family's tensors scaled to the spec's size.
func plan(s Spec) layout {
	full := layoutFor(s.Family, s.ID)
	target := s.Size()
	// Few bytes cannot hold many tensors: keep the first ones.
	if keep := max(target/256, 1); int64(len(full)) > keep {
		full = full[:keep]
	}
	var total int64
	for _, t := range full {
		total += t.bytes()
	}
	f := float64(target) / float64(total)
	out := make(layout, len(full))
	for i, t := range full {
		out[i] = tspec{name: t.name, dtype: t.dtype, shape: resize(t.shape, f)}
	}
	fit(out, target)
	return out
}

// fit brings the layout's total close to target: rounding in resize leaves
// it off, most of all for small targets. It first shrinks dimensions of the
// largest tensors until the total is no more than target, then stretches the
// first dimension of the largest tensor to make up the rest.
func fit(l layout, target int64) {
	var total int64
	for _, t := range l {
		total += t.bytes()
	}
	order := make([]int, len(l))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return l[order[a]].bytes() > l[order[b]].bytes() })
	for _, i := range order {
		if total <= target {
			break
		}
		t := l[i]
		for d := range t.shape {
			if total <= target || t.shape[d] <= 1 {
				continue
			}
			unit := t.bytes() / t.shape[d]
			cut := min((total-target+unit-1)/unit, t.shape[d]-1)
			t.shape[d] -= cut
			total -= cut * unit
		}
	}
	if len(l) == 0 {
		return
	}
	big := order[0]
	for _, i := range order {
		if l[i].bytes() > l[big].bytes() {
			big = i
		}
	}
	if t := l[big]; len(t.shape) > 0 && total < target {
		if unit := t.bytes() / t.shape[0]; unit > 0 {
			t.shape[0] += (target - total) / unit
		}
	}
}

// resize scales a shape's element count by about f. Growing stretches the
// first dimension; shrinking shrinks the channel dimensions (those over 16,
// leaving kernel sizes alone) evenly.
func resize(shape []int64, f float64) []int64 {
	out := append([]int64(nil), shape...)
	if len(out) == 0 || f == 1 {
		return out
	}
	if f > 1 {
		out[0] = max(int64(math.Round(float64(out[0])*f)), 1)
		return out
	}
	var dims []int
	for i, d := range out {
		if d > 16 {
			dims = append(dims, i)
		}
	}
	if len(dims) == 0 {
		dims = []int{0}
	}
	g := math.Pow(f, 1/float64(len(dims)))
	for _, i := range dims {
		out[i] = max(int64(math.Round(float64(out[i])*g)), 1)
	}
	return out
}

// headerJSON encodes the tensor table with metadata, padded with spaces to
// a multiple of 8 bytes as the reference writer does.
func headerJSON(meta map[string]string, l layout) ([]byte, int64, error) {
	var b bytes.Buffer
	b.WriteString(`{"__metadata__":{`)
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		vb, _ := json.Marshal(meta[k])
		b.Write(kb)
		b.WriteByte(':')
		b.Write(vb)
	}
	b.WriteByte('}')
	var off int64
	for _, t := range l {
		nb, err := json.Marshal(t.name)
		if err != nil {
			return nil, 0, err
		}
		b.WriteByte(',')
		b.Write(nb)
		b.WriteString(`:{"dtype":"` + t.dtype + `","shape":[`)
		for i, d := range t.shape {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatInt(d, 10))
		}
		end := off + t.bytes()
		fmt.Fprintf(&b, `],"data_offsets":[%d,%d]}`, off, end)
		off = end
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	return b.Bytes(), off, nil
}

// Synth writes a valid safetensors file for the spec to w and returns the
// number of bytes written. The content is a function of the spec alone.
func Synth(w io.Writer, spec Spec) (int64, error) {
	if err := spec.validate(); err != nil {
		return 0, err
	}
	meta := map[string]string{
		"format":    "pt",
		MetaSynth:   "1",
		MetaFamily:  spec.Family,
		MetaNominal: strconv.FormatInt(spec.NominalBytes, 10),
		MetaScale:   strconv.FormatFloat(spec.Scale, 'g', -1, 64),
		MetaID:      spec.ID,
		"kiln.seed": strconv.FormatUint(spec.Seed, 10),
	}
	hdr, dataLen, err := headerJSON(meta, plan(spec))
	if err != nil {
		return 0, fmt.Errorf("synth %s: %w", spec.ID, err)
	}
	var n int64
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hdr)))
	for _, p := range [][]byte{lenBuf[:], hdr} {
		k, err := w.Write(p)
		n += int64(k)
		if err != nil {
			return n, fmt.Errorf("synth %s: write header: %w", spec.ID, err)
		}
	}
	h := fnv.New64a()
	h.Write([]byte(spec.ID))
	rng := rand.NewPCG(h.Sum64(), spec.Seed)
	buf := make([]byte, 1<<20)
	for left := dataLen; left > 0; {
		chunk := buf[:min(int64(len(buf)), left)]
		for i := 0; i < len(chunk); i += 8 {
			v := rng.Uint64()
			if i+8 <= len(chunk) {
				binary.LittleEndian.PutUint64(chunk[i:], v)
				continue
			}
			for j := i; j < len(chunk); j++ {
				chunk[j] = byte(v)
				v >>= 8
			}
		}
		k, err := w.Write(chunk)
		n += int64(k)
		if err != nil {
			return n, fmt.Errorf("synth %s: write data: %w", spec.ID, err)
		}
		left -= int64(k)
	}
	return n, nil
}

// SynthFile writes a synthetic file at path through a temporary file in the
// same directory and a rename, so that readers never see a partial file.
func SynthFile(path string, spec Spec) (err error) {
	if err := spec.validate(); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("synth %s: %w", spec.ID, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if _, err := Synth(bw, spec); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("synth %s: %w", spec.ID, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("synth %s: sync: %w", spec.ID, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("synth %s: close: %w", spec.ID, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("synth %s: %w", spec.ID, errors.Join(err, os.Remove(f.Name())))
	}
	return nil
}
