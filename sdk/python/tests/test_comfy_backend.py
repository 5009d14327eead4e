"""kiln_comfy's ComfyUI backend against a fake ComfyUI (tests/fake_comfy.py).

Each test fails on the first version of the backend: it linked the kernel's
L2 path, warmed a checkpoint the executor did not reuse, unloaded every
model to unload one, and got no node or step progress out of the executor.
"""

import os
import shutil
import tempfile
import unittest

from kiln_comfy.adapter import ComfyAdapter
from kiln_comfy.backend import ComfyUIBackend
from kiln_worker import safetensors
from .fake_comfy import GiB, make_comfy
from .helpers import FakeKernel


def workflow(ckpt, steps=3, lora=None):
    wf = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 16, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "latent_image": ["5", 0], "steps": steps,
                                                    "seed": 9}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "sub/img"}},
    }
    if lora:
        wf["10"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["4", 0], "lora_name": lora,
                                                                    "strength_model": 1.0}}
        wf["3"]["inputs"]["model"] = ["10", 0]
    return wf


class ComfyBackendTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.shm = os.path.join(self.dir, "shm")  # stands for the kernel's L2 directory
        os.makedirs(self.shm)
        self.comfy = make_comfy()
        self.backend = ComfyUIBackend(self.comfy, os.path.join(self.dir, "links"))
        self.k = FakeKernel(ComfyAdapter(self.backend), output_dir=os.path.join(self.dir, "out"))
        self.addCleanup(self.k.close)

    def segment(self, name, nbytes=8):
        """Write an L2 segment as the tiers do: a file named by content."""
        path = os.path.join(self.shm, "sha-" + name)
        safetensors.write_file(path, {"w": ("U8", [nbytes], bytes(range(nbytes)))}, {})
        return path

    def load(self, mid, nbytes=8):
        path = self.segment(mid.replace("/", "-"), nbytes)
        t, body = self.k.call("load", {"model": mid, "path": path, "bytes": os.path.getsize(path)})
        self.assertEqual(t, "ok", body)
        return path, body

    def run_job(self, job, wf):
        frames = []
        rid = self.k.send("run", {"job_id": job, "workflow": wf})
        while True:
            i, t, body = self.k.read()
            if i != rid:
                continue
            if t != "progress":
                return t, body, frames
            frames.append((body["node"], body["value"], body["max"]))

    def loaded_patchers(self):
        return [lm.model for lm in self.comfy.mm.current_loaded_models]

    # (1) L2 paths --------------------------------------------------------

    def test_model_folders_survive_l2_eviction(self):
        """The tiers evict a segment once the load is answered (the lease
        ends): ComfyUI's folders must still resolve the model, to the same
        bytes, until unload — and not after."""
        seg, _ = self.load("checkpoints/a.safetensors")
        lseg, _ = self.load("loras/style.safetensors")
        with open(lseg, "rb") as f:
            want = f.read()
        os.unlink(seg)  # evicted from L2
        os.unlink(lseg)
        fp = self.comfy.folder_paths
        got = fp.get_full_path("loras", "style.safetensors")
        self.assertIsNotNone(got, "the lora's link dangles after L2 eviction")
        with open(got, "rb") as f:
            self.assertEqual(f.read(), want)
        # A run reads the lora (never warmed) by path after the eviction.
        self.backend._reset_executor()
        t, body, _ = self.run_job("j1", workflow("a.safetensors", lora="style.safetensors"))
        self.assertEqual(t, "result", body)
        self.k.call("unload", {"model": "loras/style.safetensors"})
        self.assertIsNone(fp.get_full_path("loras", "style.safetensors"))

    def test_unload_closes_the_held_file(self):
        self.load("checkpoints/a.safetensors")
        hf = self.k.server.handler.models["checkpoints/a.safetensors"][0]
        fd = hf.fd
        os.fstat(fd)
        self.k.call("unload", {"model": "checkpoints/a.safetensors"})
        with self.assertRaises(OSError):
            os.fstat(fd)
        self.assertFalse(os.path.lexists(os.path.join(self.dir, "links", "checkpoints", "a.safetensors")))

    def test_stale_links_are_removed_at_start(self):
        d = os.path.join(self.dir, "links2", "checkpoints")
        os.makedirs(d)
        os.symlink("/proc/self/fd/3", os.path.join(d, "old.safetensors"))
        ComfyUIBackend(make_comfy(), os.path.join(self.dir, "links2"))
        self.assertFalse(os.path.lexists(os.path.join(d, "old.safetensors")))

    # (2) one copy of a checkpoint ------------------------------------------

    def test_executor_reuses_the_warmed_checkpoint(self):
        """The load warms the checkpoint; the executor's loader node gets
        that copy: one load_checkpoint_guess_config, one MODEL in model
        management, over runs that drop the executor's cache."""
        seg, body = self.load("checkpoints/a.safetensors")
        self.assertEqual(body["vram_bytes"], os.path.getsize(seg) * GiB)  # the fake's MODEL
        warm = self.backend.warmed(os.path.join(self.dir, "links", "checkpoints", "a.safetensors"))
        self.assertIsNotNone(warm)
        for job in ("j1", "j2"):
            t, body, _ = self.run_job(job, workflow("a.safetensors"))
            self.assertEqual(t, "result", body)
            self.backend._reset_executor()  # as after any unload
        self.assertEqual(len(self.comfy.sd.calls), 1, "the checkpoint was loaded again: %s" % self.comfy.sd.calls)
        used = self.comfy.nodes.NODE_CLASS_MAPPINGS["KSampler"].used
        self.assertTrue(all(m is warm[0] for m in used))
        unets = [m for m in self.loaded_patchers() if m.model.tag.endswith(":unet")]
        self.assertEqual(len(unets), 1)

    def test_other_loader_arguments_load_their_own(self):
        """A call the warm copy does not answer (CLIP vision asked) goes to
        ComfyUI's own function."""
        self.load("checkpoints/a.safetensors")
        path = self.comfy.folder_paths.get_full_path("checkpoints", "a.safetensors")
        out = self.comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True,
                                                         output_clipvision=True)
        self.assertIsNot(out, self.backend.warmed(path))
        self.assertEqual(len(self.comfy.sd.calls), 2)

    # (3) unload one --------------------------------------------------------

    def test_unload_one_keeps_the_others(self):
        self.load("checkpoints/a.safetensors")
        self.load("checkpoints/b.safetensors")
        for job, ckpt in (("ja", "a.safetensors"), ("jb", "b.safetensors")):
            t, body, _ = self.run_job(job, workflow(ckpt, lora=None))
            self.assertEqual(t, "result", body)
        tags = lambda: sorted(m.model.tag for m in self.loaded_patchers())
        self.assertEqual(tags(), ["a.safetensors:unet", "a.safetensors:vae", "b.safetensors:unet",
                                  "b.safetensors:vae"])
        t, body = self.k.call("unload", {"model": "checkpoints/a.safetensors"})
        self.assertEqual(t, "ok", body)
        self.assertEqual(tags(), ["b.safetensors:unet", "b.safetensors:vae"])
        self.assertIsNone(self.backend.warmed(os.path.join(self.dir, "links", "checkpoints", "a.safetensors")))
        # b is still the warmed copy: a run needs no second load.
        t, body, _ = self.run_job("jb2", workflow("b.safetensors"))
        self.assertEqual(t, "result", body)
        self.assertEqual(len(self.comfy.sd.calls), 2)

    def test_unload_finds_patched_clones(self):
        """A LoRA clones the MODEL patcher; the clone in model management
        is the checkpoint's too and goes with it."""
        self.load("checkpoints/a.safetensors")
        self.load("loras/style.safetensors")
        t, body, _ = self.run_job("j", workflow("a.safetensors", lora="style.safetensors"))
        self.assertEqual(t, "result", body)
        self.k.call("unload", {"model": "checkpoints/a.safetensors"})
        self.assertEqual([m.model.tag for m in self.loaded_patchers()], [])

    def test_unload_waits_for_the_running_prompt(self):
        """An unload (of a model the run does not use) that arrives while a
        prompt runs is answered after it: free_memory and the executor's
        reset must not run under a prompt."""
        self.load("checkpoints/a.safetensors")
        self.load("checkpoints/b.safetensors")
        ks = self.comfy.nodes.NODE_CLASS_MAPPINGS["KSampler"]
        rid = self.k.send("run", {"job_id": "j", "workflow": workflow("a.safetensors", steps=300)})
        self.assertTrue(ks.started.wait(10))
        uid = self.k.send("unload", {"model": "checkpoints/b.safetensors"})
        order = []
        while len(order) < 2:
            i, t, body = self.k.read()
            if t != "progress":
                order.append((i, t))
        self.assertEqual(order, [(rid, "result"), (uid, "ok")])

    # progress and node specs -------------------------------------------------

    def test_run_reports_nodes_and_steps(self):
        self.load("checkpoints/a.safetensors")
        t, body, frames = self.run_job("j", workflow("a.safetensors", steps=4))
        self.assertEqual(t, "result", body)
        self.assertEqual(body["outputs"][0]["subfolder"], "j/sub")
        self.assertIn(("3", 0, 0), frames)  # KSampler starts
        self.assertEqual([f for f in frames if f[2]], [("3", i, 4) for i in range(1, 5)])

    def test_cancel_stops_the_sampler_mid_steps(self):
        """A cancel interrupts ComfyUI; the step hook raises at the next
        step, and the run ends cancelled long before its last step."""
        self.load("checkpoints/a.safetensors")
        ks = self.comfy.nodes.NODE_CLASS_MAPPINGS["KSampler"]
        rid = self.k.send("run", {"job_id": "j", "workflow": workflow("a.safetensors", steps=100000)})
        self.assertTrue(ks.started.wait(10))
        cid = self.k.send("cancel", {"target": rid})
        got, steps = {}, 0
        while len(got) < 2:
            i, t, body = self.k.read()
            if t == "progress":
                steps = max(steps, body["value"])
            else:
                got[i] = (t, body)
        self.assertEqual(got[cid][0], "ok")
        self.assertEqual((got[rid][0], got[rid][1]["code"]), ("error", "cancelled"))
        self.assertLess(steps, 100000)
        self.assertFalse(self.comfy.mm.interrupt_processing)

    def test_node_specs_have_inputs(self):
        spec = self.k.hello["node_specs"]["CheckpointLoaderSimple"]
        self.assertEqual(spec["input"]["required"]["ckpt_name"][0], ["a.safetensors"])
        self.assertEqual(spec["output"], ["MODEL", "CLIP", "VAE"])
        self.assertEqual(spec["display_name"], "Load Checkpoint")
        self.assertTrue(self.k.hello["node_specs"]["SaveImage"]["output_node"])


if __name__ == "__main__":
    unittest.main()
