"""The worker loop with the echo worker over a socketpair."""

import json
import os
import struct
import tempfile
import threading
import unittest

from kiln_worker import protocol as p
from kiln_worker import safetensors
from kiln_worker.echo import EchoWorker
from kiln_worker.server import Handler
from .helpers import FakeKernel, packb

WORKFLOW = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 16, "batch_size": 2}},
    "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "latent_image": ["5", 0], "steps": 3, "seed": 9}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "sub/img"}},
}


def write_model(d):
    path = os.path.join(d, "tiny.safetensors")
    safetensors.write_file(path, {"w": ("F32", [4, 4], bytes(range(64)))}, {"kiln.family": "sd15"})
    return path


class EchoServerTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.k = FakeKernel(EchoWorker(), {"echo_step_seconds": 0.001}, output_dir=self.dir)

    def tearDown(self):
        self.k.close()

    def load(self):
        path = write_model(self.dir)
        return self.k.call("load", {"model": "checkpoints/tiny.safetensors", "path": path,
                                    "bytes": os.path.getsize(path), "family": "sd15"})

    def test_hello(self):
        self.assertEqual(self.k.hello["protocol"], 1)
        self.assertEqual(self.k.hello["pid"], os.getpid())

    def test_ping_unknown_and_id0(self):
        self.assertEqual(self.k.call("ping", {"nonce": 2 ** 64 - 1}), ("ok", {"nonce": 2 ** 64 - 1}))
        t, b = self.k.call("teleport", {})
        self.assertEqual((t, b["code"]), ("error", "unsupported"))
        self.k.send("ping", {}, id_=0)
        self.assertEqual(self.k.read()[1:3][1]["code"], "bad_request")
        t, b = self.k.call("hello", {"protocol": 1})
        self.assertEqual((t, b["code"]), ("error", "bad_request"))

    def test_load_run_unload(self):
        t, b = self.load()
        self.assertEqual(t, "ok", b)
        self.assertEqual(len(b["checksum"]), 64)
        rid = self.k.send("run", {"job_id": "j1", "attempt": 1, "workflow": WORKFLOW,
                                  "models": ["checkpoints/tiny.safetensors"]})
        steps = []
        while True:
            i, t, b = self.k.read()
            self.assertEqual(i, rid)
            if t == "progress":
                if b["max"]:
                    steps.append(b["value"])
                continue
            break
        self.assertEqual(t, "result", b)
        self.assertEqual(steps, [1, 2, 3])
        self.assertEqual([o["filename"] for o in b["outputs"]], ["img_00001_.png", "img_00002_.png"])
        f = os.path.join(self.dir, "j1", "sub", "img_00001_.png")
        with open(f, "rb") as fh:
            head = fh.read(24)
        self.assertEqual(head[:8], b"\x89PNG\r\n\x1a\n")
        self.assertEqual(struct.unpack(">II", head[16:24]), (32, 16))
        t, b = self.k.call("stats", {})
        self.assertEqual((b["jobs_done"], len(b["models"])), (1, 1))
        self.assertEqual(self.k.call("unload", {"model": "checkpoints/tiny.safetensors"})[0], "ok")
        t, b = self.k.call("unload", {"model": "checkpoints/tiny.safetensors"})
        self.assertEqual(b["code"], "not_loaded")

    def test_workflow_json(self):
        # Protocol 1.3: the server lists the capability for every handler
        # and hands the handler the decoded bytes.
        self.assertIn("workflow_json", self.k.hello["capabilities"])
        self.assertEqual(self.load()[0], "ok")
        t, b = self.k.call("run", {"job_id": "j3", "attempt": 1, "workflow_json": json.dumps(WORKFLOW).encode(),
                                   "models": ["checkpoints/tiny.safetensors"]})
        self.assertEqual(t, "result", b)
        self.assertEqual([o["filename"] for o in b["outputs"]], ["img_00001_.png", "img_00002_.png"])
        for bad in (b"[1, 2]", b"{", 7):
            t, b = self.k.call("run", {"job_id": "j4", "workflow_json": bad})
            self.assertEqual((t, b["code"]), ("error", "bad_request"), bad)

    def test_load_size_mismatch(self):
        path = write_model(self.dir)
        t, b = self.k.call("load", {"model": "m", "path": path, "bytes": 1})
        self.assertEqual((t, b["code"]), ("error", "bad_request"))

    def test_cancel(self):
        self.load()
        wf = dict(WORKFLOW)
        wf["3"] = {"class_type": "KSampler", "inputs": {"model": ["4", 0], "latent_image": ["5", 0], "steps": 10000}}
        rid = self.k.send("run", {"job_id": "j2", "workflow": wf, "models": []})
        while True:  # wait for the first step
            i, t, b = self.k.read()
            if t == "progress" and b["max"]:
                break
        cid = self.k.send("cancel", {"target": rid})
        pid = self.k.send("ping", {"nonce": 5})
        got = {}
        while len(got) < 3:
            i, t, b = self.k.read()
            if t != "progress":
                got[i] = (t, b)
        self.assertEqual(got[cid], ("ok", {}))
        self.assertEqual(got[pid], ("ok", {"nonce": 5}))
        self.assertEqual(got[rid][0], "error")
        self.assertEqual(got[rid][1]["code"], "cancelled")


class CrashingHandler(Handler):
    def stats(self):
        raise RuntimeError("boom")


class ServerEdgeTest(unittest.TestCase):
    def test_handler_exception_is_internal(self):
        k = FakeKernel(CrashingHandler())
        t, b = k.call("stats", {})
        self.assertEqual((t, b["code"]), ("error", "internal"))
        self.assertEqual(k.call("ping", {"nonce": 1})[0], "ok")
        k.close()
        self.assertEqual(k.exit_code, 0)

    def test_first_frame_not_hello(self):
        k = FakeKernel(Handler(), do_hello=False)
        t, b = k.call("ping", {"nonce": 1})
        self.assertEqual((t, b["code"]), ("error", "bad_request"))
        k.thread.join(5)
        self.assertEqual(k.exit_code, 1)

    def test_wrong_protocol(self):
        k = FakeKernel(Handler(), do_hello=False)
        t, b = k.call("hello", {"protocol": 2})
        self.assertEqual((t, b["code"]), ("error", "unsupported"))
        k.thread.join(5)
        self.assertEqual(k.exit_code, 1)

    def test_malformed_frame_ends_serve(self):
        k = FakeKernel(Handler())
        k.send_raw(packb({"id": 1, "type": "ping"}) + packb({}) + b"\x00")
        k.thread.join(5)
        self.assertEqual(k.exit_code, 1)

    def test_concurrent_runs_pipeline(self):
        gate = threading.Event()

        class Slow(Handler):
            def run(self, req, ctx):
                ctx.progress("1", 1, 1)
                gate.wait(10)
                return {"job_id": req["job_id"], "outputs": None, "run_ns": 1}
        k = FakeKernel(Slow())
        a = k.send("run", {"job_id": "a", "workflow": {}})
        b = k.send("run", {"job_id": "b", "workflow": {}})
        seen = set()
        while len(seen) < 2:
            i, t, body = k.read()
            self.assertEqual(t, "progress")
            seen.add(i)
        self.assertEqual(k.call("ping", {"nonce": 3}), ("ok", {"nonce": 3}))
        gate.set()
        done = {}
        while len(done) < 2:
            i, t, body = k.read()
            done[i] = t
        self.assertEqual(done, {a: "result", b: "result"})
        k.close()


if __name__ == "__main__":
    unittest.main()
