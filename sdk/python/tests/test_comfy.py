"""The ComfyUI adapter's protocol layer with a fake backend."""

import os
import tempfile
import threading
import unittest

from kiln_comfy.adapter import Backend, ComfyAdapter, Interrupted
from .helpers import FakeKernel
from .test_server import WORKFLOW, write_model


class FakeBackend(Backend):
    """Records calls; execute steps until interrupted or 3 steps are done."""

    def __init__(self, steps=3):
        self.calls, self.steps = [], steps
        self.stop = threading.Event()
        self.started = threading.Event()

    def node_specs(self):
        return {"KSampler": {"input": {"required": {"steps": ["INT", {"default": 20}]}}, "output": ["LATENT"],
                             "name": "KSampler"},
                "CheckpointLoaderSimple": {"name": "CheckpointLoaderSimple"}}

    def register_model(self, folder, name, path):
        self.calls.append(("register", folder, name, path))

    def load_model(self, folder, name):
        self.calls.append(("load", folder, name))
        return 1234

    def unload_model(self, folder, name):
        self.calls.append(("unload", folder, name))

    def execute(self, prompt, prompt_id, output_dir, on_progress):
        on_progress("3", 0, 0)
        self.started.set()
        for i in range(1, self.steps + 1):
            if self.stop.wait(0.001 if self.steps < 100 else 0.01):
                raise Interrupted()
            on_progress("3", i, self.steps)
        return [{"node": "9", "filename": "ComfyUI_00001_.png", "subfolder": prompt_id, "type": "output",
                 "width": 8, "height": 8}]

    def interrupt(self):
        self.calls.append(("interrupt",))
        self.stop.set()


class ComfyAdapterTest(unittest.TestCase):
    def start(self, backend):
        self.dir = tempfile.mkdtemp()
        k = FakeKernel(ComfyAdapter(backend), output_dir=self.dir)
        self.addCleanup(k.close)
        return k

    def load(self, k):
        path = write_model(self.dir)
        return k.call("load", {"model": "checkpoints/tiny.safetensors", "path": path,
                               "bytes": os.path.getsize(path)})

    def test_hello_advertises_node_specs(self):
        k = self.start(FakeBackend())
        self.assertIn("node:KSampler", k.hello["capabilities"])
        self.assertEqual(k.hello["node_specs"]["KSampler"]["output"], ["LATENT"])

    def test_load_run_unload(self):
        b = FakeBackend()
        k = self.start(b)
        t, body = self.load(k)
        self.assertEqual((t, body["vram_bytes"]), ("ok", 1234))
        self.assertEqual(b.calls[0][:3], ("register", "checkpoints", "tiny.safetensors"))
        t, body = k.call("run", {"job_id": "j", "workflow": WORKFLOW})
        self.assertEqual((t, body["outputs"][0]["subfolder"]), ("result", "j"))
        self.assertEqual(k.call("stats", {})[1]["jobs_done"], 1)
        self.assertEqual(k.call("unload", {"model": "checkpoints/tiny.safetensors"})[1]["freed_bytes"], 1234)
        self.assertIn(("unload", "checkpoints", "tiny.safetensors"), b.calls)

    def test_run_needs_loaded_models(self):
        k = self.start(FakeBackend())
        t, body = k.call("run", {"job_id": "j", "workflow": WORKFLOW})
        self.assertEqual((t, body["code"]), ("error", "not_loaded"))

    def test_cancel_interrupts_comfyui(self):
        b = FakeBackend(steps=100000)
        k = self.start(b)
        self.load(k)
        rid = k.send("run", {"job_id": "j", "workflow": WORKFLOW})
        self.assertTrue(b.started.wait(10))
        cid = k.send("cancel", {"target": rid})
        got = {}
        while len(got) < 2:
            i, t, body = k.read()
            if t != "progress":
                got[i] = (t, body)
        self.assertEqual(got[cid][0], "ok")
        self.assertEqual(got[rid][1]["code"], "cancelled")
        self.assertIn(("interrupt",), b.calls)


if __name__ == "__main__":
    unittest.main()
