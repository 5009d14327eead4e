"""sdk/python/kiln-worker-comfy as kiln starts it: a process with the
protocol socket on fd 3, importing a ComfyUI tree by --comfyui.

The tree is the fake of tests/fake_comfy.py behind ComfyUI's module names
(folder_paths, nodes, execution, comfy.model_management, comfy.sd,
comfy.utils), with an async init_extra_nodes as current ComfyUI has it.
"""

import os
import socket
import subprocess
import sys
import tempfile
import unittest

from kiln_worker import protocol as p
from kiln_worker import safetensors

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.dirname(HERE)

TREE = {
    "kiln_fake_tree.py": (
        "import sys\n"
        "sys.path.insert(0, %r)\n"
        "from tests.fake_comfy import make_comfy\n"
        "C = make_comfy()\n"
        "class KilnExtra:\n"
        "    @classmethod\n"
        "    def INPUT_TYPES(s):\n"
        "        return {'required': {}}\n"
        "    RETURN_TYPES = ()\n"
        "    FUNCTION = 'f'\n"
        "async def init_extra_nodes(init_custom_nodes=True, init_api_nodes=True):\n"
        "    C.nodes.NODE_CLASS_MAPPINGS['KilnExtra'] = KilnExtra\n"
        "C.nodes.init_extra_nodes = init_extra_nodes\n" % SDK),
    "folder_paths.py": "import sys, kiln_fake_tree as t\nsys.modules[__name__] = t.C.folder_paths\n",
    "nodes.py": "import sys, kiln_fake_tree as t\nsys.modules[__name__] = t.C.nodes\n",
    "execution.py": "import sys, kiln_fake_tree as t\nsys.modules[__name__] = t.C.execution\n",
    "comfy/__init__.py": "",
    "comfy/model_management.py": "import sys, kiln_fake_tree as t\nsys.modules[__name__] = t.C.mm\n",
    "comfy/sd.py": "import sys, kiln_fake_tree as t\nsys.modules[__name__] = t.C.sd\n",
    "comfy/utils.py": "import sys, kiln_fake_tree as t\nsys.modules[__name__] = t.C.utils\n",
}


class ComfyProcessTest(unittest.TestCase):
    def test_launcher_serves_a_comfyui_tree(self):
        d = tempfile.mkdtemp()
        tree = os.path.join(d, "ComfyUI")
        for name, text in TREE.items():
            path = os.path.join(tree, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        kernel, worker = socket.socketpair()
        kernel.settimeout(20)
        proc = subprocess.Popen(
            [sys.executable, os.path.join(SDK, "kiln-worker-comfy"), "--comfyui", tree,
             "--models-dir", os.path.join(d, "links")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, close_fds=False,
            preexec_fn=lambda: os.dup2(worker.fileno(), 3), env={"PATH": os.environ.get("PATH", "")})
        worker.close()
        self.addCleanup(proc.kill)

        def call(id_, type_, body):
            kernel.sendall(p.encode_frame(id_, type_, body))
            while True:
                rid, t, b = p.read_frame(kernel)
                if rid == id_ and t != "progress":
                    return t, b

        t, hello = call(1, "hello", {"protocol": 1, "worker_id": "w0", "output_dir": os.path.join(d, "out"),
                                     "device": {"index": 0, "name": "gpu"}, "options": {}})
        self.assertEqual(t, "ok", hello)
        self.assertIn("node:KilnExtra", hello["capabilities"])  # the async init_extra_nodes ran
        self.assertEqual(hello["node_specs"]["KSampler"]["output"], ["LATENT"])

        seg = os.path.join(d, "seg")
        safetensors.write_file(seg, {"w": ("U8", [8], bytes(8))}, {})
        t, body = call(2, "load", {"model": "checkpoints/a.safetensors", "path": seg, "bytes": os.path.getsize(seg)})
        self.assertEqual(t, "ok", body)
        os.unlink(seg)  # the tiers evict it
        wf = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
              "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
              "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "latent_image": ["5", 0], "steps": 2,
                                                          "seed": 1}},
              "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
              "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}}}
        t, body = call(3, "run", {"job_id": "j", "attempt": 1, "workflow": wf, "models": ["checkpoints/a.safetensors"]})
        self.assertEqual(t, "result", body)
        self.assertEqual(body["outputs"][0]["filename"], "x_00001_.png")
        t, body = call(4, "unload", {"model": "checkpoints/a.safetensors"})
        self.assertEqual(t, "ok", body)
        kernel.close()  # end of stream: the worker exits 0
        out, _ = proc.communicate(timeout=20)
        self.assertEqual(proc.returncode, 0, out.decode(errors="replace"))


if __name__ == "__main__":
    unittest.main()
