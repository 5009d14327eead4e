"""Weight streaming in kiln-worker-torch on CPU, with a fake VRAM budget.

A model loaded under a budget keeps part of its weights resident and copies
the rest from the mapping every step; its outputs must be bit-identical to
those of the same model loaded whole. Skips without torch (Debian:
apt-get install python3-torch).
"""

import os
import struct
import tempfile
import unittest

try:
    import torch
except ImportError:  # pragma: no cover - depends on the machine
    torch = None

from kiln_worker import safetensors
from .helpers import FakeKernel

MODEL = "checkpoints/stream.safetensors"

WORKFLOW = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "stream.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 2}},
    "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "latent_image": ["5", 0], "steps": 4, "seed": 7}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "s"}},
}


def write_model(d):
    """Three F32 tensors; the largest (the one the stand-in network is built
    from) last, so that a budget streams it."""
    def floats(n, k):
        return struct.pack("<%df" % n, *[((i * 7919 + k) % 1000) / 500.0 - 1 for i in range(n)])
    path = os.path.join(d, "stream.safetensors")
    safetensors.write_file(path, {
        "a.weight": ("F32", [16, 16], floats(256, 1)),
        "b.weight": ("F32", [32, 16], floats(512, 2)),
        "big.weight": ("F32", [256, 256], floats(65536, 3)),
    }, {"kiln.family": "sd15"})
    return path


@unittest.skipIf(torch is None, "kiln-worker-torch needs torch (apt-get install python3-torch)")
class TorchStreamTest(unittest.TestCase):
    def run_job(self, worker, load_extra, job):
        out = tempfile.mkdtemp()
        k = FakeKernel(worker, output_dir=out)
        try:
            self.assertIn("stream", k.hello["capabilities"])
            path = write_model(out)
            req = {"model": MODEL, "path": path, "bytes": os.path.getsize(path), "family": "sd15"}
            req.update(load_extra)
            t, load = k.call("load", req)
            self.assertEqual(t, "ok", load)
            t, res = k.call("run", {"job_id": job, "attempt": 1, "workflow": WORKFLOW, "models": [MODEL]})
            self.assertEqual(t, "result", res)
            images = []
            for o in res["outputs"]:
                with open(os.path.join(out, o["subfolder"], o["filename"]), "rb") as f:
                    images.append(f.read())
            return load, images, worker.models[MODEL]
        finally:
            k.close()

    def test_streamed_outputs_are_bit_identical(self):
        from kiln_worker_torch.worker import TorchWorker
        whole = 4 * (256 + 512 + 65536)
        cpu = torch.device("cpu")

        load0, images0, m0 = self.run_job(TorchWorker(cpu), {}, "whole")
        self.assertEqual(load0["vram_bytes"], whole)
        self.assertEqual(load0.get("streamed_bytes", 0), 0)
        self.assertEqual(m0.streamed_in, 0)

        # The fake device holds 8 KiB of weights: a and b stay, big streams.
        load1, images1, m1 = self.run_job(TorchWorker(cpu, vram_budget=8 << 10), {}, "fake-budget")
        self.assertEqual(load1["vram_bytes"], 4 * (256 + 512))
        self.assertEqual(load1["streamed_bytes"], 4 * 65536)
        self.assertEqual(m1.streamed, ["big.weight"])
        # Moved once per step (4 steps), not once per load.
        self.assertEqual(m1.streamed_in, 4 * 4 * 65536)

        # The kernel's budget (protocol 1.2), at the model's nominal size.
        load2, images2, m2 = self.run_job(TorchWorker(cpu), {"vram_budget_bytes": whole // 2}, "kernel-budget")
        self.assertLessEqual(load2["vram_bytes"], whole // 2)
        self.assertEqual(load2["vram_bytes"] + load2["streamed_bytes"], whole)

        self.assertEqual(len(images0), 2)
        self.assertEqual(images1, images0, "streamed under a fake budget: outputs differ from the resident run")
        self.assertEqual(images2, images0, "streamed under the kernel's budget: outputs differ from the resident run")


if __name__ == "__main__":
    unittest.main()
