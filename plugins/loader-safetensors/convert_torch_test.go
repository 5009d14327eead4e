package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-gpu/kiln/sdk/plugin"
)

// torchCheck is run by /usr/bin/python3 with the Python SDK on its path:
// it loads a converted file the way kiln-worker-torch loads a model (the
// file mapped read-only, tensors_from_mapping, Model.weight) and compares
// it with the source file, read the same way:
//
//   - a 16-bit tensor must equal torch's own rounding of the source
//     (Tensor.half, Tensor.bfloat16) bit for bit;
//   - an fp8 weight, widened with its scale by the worker, must be within
//     2^-4 relative (+ half the subnormal step × scale) of the source.
const torchCheck = `
import json, sys
import torch
from kiln_worker import mapping, safetensors
from kiln_worker_torch.worker import Model, tensors_from_mapping

def load(path):
    import os
    mf = mapping.map_model("m", path, os.path.getsize(path))
    h = safetensors.read_header(mf.buf)
    ts = tensors_from_mapping(mf.buf, h, torch.device("cpu"))
    return Model("m", "flux", mf, ts, 0, "", h), {t.name: t.dtype for t in h.tensors}

src, src_dt = load(sys.argv[1])
reports = {}
for path in sys.argv[2:]:
  dst, dst_dt = load(path)
  report = reports[path] = {"checked": {}, "bad": []}
  for name, dt in dst_dt.items():
      if name not in src_dt or dt == src_dt[name]:
          continue
      want = src.weight(name)
      if dt in ("F16", "BF16"):
          ref = want.half() if dt == "F16" else want.bfloat16()
          got = dst.tensors[name]
          same = bool(torch.equal(got.view(torch.int16), ref.view(torch.int16)))
          report["checked"][name] = dt
          if not same:
              report["bad"].append("%s: %d of %d values differ from torch's rounding" % (
                  name, int((got.view(torch.int16) != ref.view(torch.int16)).sum()), got.numel()))
      elif dt == "F8_E4M3":
          got = dst.weight(name)
          base = name[:-len(".weight")]
          scale = float(dst.tensors[base + ".scale_weight"])
          err = (got - want).abs() - (want.abs() * 2.0 ** -4 + scale * 2.0 ** -10)
          report["checked"][name] = dt
          if got.shape != want.shape or float(err.max()) > 1e-12:
              report["bad"].append("%s: shape %s vs %s, worst excess error %g" % (
                  name, list(got.shape), list(want.shape), float(err.max())))
print(json.dumps(reports))
`

// TestConvertedLoadsInTorchWorker checks that kiln-worker-torch loads what
// Convert writes: 16-bit tensors as torch itself would round them, fp8
// weights widened through their scales.
func TestConvertedLoadsInTorchWorker(t *testing.T) {
	const python = "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import torch, msgpack").CombinedOutput(); err != nil {
		t.Skipf("%s lacks torch or msgpack (Debian: apt-get install python3-torch python3-msgpack; make test-torch installs them): %v: %s",
			python, err, strings.TrimSpace(string(out)))
	}
	sdk, err := filepath.Abs("../../sdk/python")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := synthesize(t, dir, map[string]string{"kiln.family": "flux"}, sourceTensors())
	dtypes := []string{plugin.DTypeFP16, plugin.DTypeBF16, plugin.DTypeFP8E4M3}
	args := []string{"-c", torchCheck, src}
	for _, dt := range dtypes {
		dst := filepath.Join(dir, dt+".safetensors")
		if _, err := (loader{}).Convert(context.Background(), plugin.ConvertRequest{SrcPath: src, DstPath: dst, DType: dt}); err != nil {
			t.Fatal(err)
		}
		args = append(args, dst)
	}
	// One interpreter for all three: importing torch takes seconds.
	cmd := exec.Command(python, args...)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+sdk)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("torch check: %v\n%s%s", err, out, stderr)
	}
	var reps map[string]struct {
		Checked map[string]string `json:"checked"`
		Bad     []string          `json:"bad"`
	}
	if err := json.Unmarshal(out, &reps); err != nil {
		t.Fatalf("torch check said %q: %v", out, err)
	}
	for _, dt := range dtypes {
		rep := reps[filepath.Join(dir, dt+".safetensors")]
		for _, b := range rep.Bad {
			t.Errorf("%s: %s", dt, b)
		}
		want := map[string]int{plugin.DTypeFP16: 3, plugin.DTypeBF16: 3, plugin.DTypeFP8E4M3: 4}[dt]
		if len(rep.Checked) != want {
			t.Errorf("%s: the worker checked %d converted tensors (%v), want %d", dt, len(rep.Checked), rep.Checked, want)
		}
	}
}
