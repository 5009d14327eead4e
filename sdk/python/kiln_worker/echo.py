"""kiln-worker-echo: the Python SDK's reference worker.

It speaks the whole protocol like kiln-worker-sim, with none of the sim's cost
model: loads map the file read-only and checksum the same sample the Go worker
does; runs walk the graph in dependency order, announce each node, wait a
fixed time per sampler step (``options.echo_step_seconds``, else
0.03 s × ``options.cost.time_scale``) while reporting progress, honour cancel
between steps, and write real PNGs under ``<output_dir>/<job_id>/``. It is
what the conformance suite (``tests/conformance``) runs against the Go sim.

Environment: ``KILN_SIM_CRASH_AFTER_JOBS=N`` (the sim's variable, so that a
test harness drives both alike) exits with status 3 in the middle of the
N-th run, after its first step.

Run it as ``/usr/bin/python3 -m kiln_worker.echo`` with ``sdk/python`` on
``PYTHONPATH``, or through the ``sdk/python/kiln-worker-echo`` script.
"""

import os
import threading
import time

from . import graph as g
from . import mapping
from . import png
from . import protocol as p
from . import safetensors
from .server import Handler, rss_bytes, serve_fd3

SCALES = {"LatentUpscaleBy", "ImageScaleBy"}
FIXED_SIZE = {"LatentUpscale", "ImageScale"}


class EchoWorker(Handler):
    """The reference Handler; safe for concurrent use."""

    name = "kiln-worker-echo"
    version = "0.1.0"

    def __init__(self, getenv=os.environ.get, exit_=os._exit):
        self.mu = threading.Lock()
        self.models = {}
        self.output_dir = ""
        self.step_seconds = 0.03
        self.jobs_done = 0
        self.running = 0
        self.started = 0
        self.exit = exit_
        crash = getenv("KILN_SIM_CRASH_AFTER_JOBS") or ""
        self.crash_after = int(crash) if crash.isdigit() else 0

    def hello(self, req):
        """Record the output directory and the step time."""
        opts = p.get_map(req, "options")
        out = p.get_str(req, "output_dir")
        if not out:
            raise p.WorkerError(p.BAD_REQUEST, "output_dir is empty")
        step = 0.03
        cost = opts.get("cost")
        if cost is not None and not isinstance(cost, dict):
            raise p.WorkerError(p.BAD_REQUEST, "options.cost: want a map")
        if cost and isinstance(cost.get("time_scale"), (int, float)) and cost["time_scale"] > 0:
            step *= cost["time_scale"]
        if isinstance(opts.get("echo_step_seconds"), (int, float)):
            step = max(float(opts["echo_step_seconds"]), 0.0)
        with self.mu:
            self.output_dir, self.step_seconds = out, step
        return {"name": self.name, "version": self.version, "capabilities": ["cancel", "progress"] + ["node:" + c for c in g.NODE_CLASSES]}

    def load(self, req):
        """Map the file read-only and checksum a sample of it."""
        start = time.monotonic_ns()
        with self.mu:
            m = self.models.get(req["model"])
        if m is not None:
            return {"model": req["model"], "vram_bytes": m["vram"], "checksum": m["checksum"], "load_ns": 0}
        mf = mapping.map_model(req["model"], req["path"], req["bytes"])
        try:
            nominal = safetensors.read_header(mf.buf).nominal_bytes(mf.size)
        except ValueError:
            nominal = mf.size
        m = {"file": mf, "vram": nominal, "checksum": mapping.checksum_sample(mf.buf)}
        with self.mu:
            if req["model"] in self.models:  # a concurrent load won
                mf.close()
                m = self.models[req["model"]]
            else:
                self.models[req["model"]] = m
        return {"model": req["model"], "vram_bytes": m["vram"], "checksum": m["checksum"],
                "load_ns": time.monotonic_ns() - start}

    def unload(self, req):
        """Unmap a model."""
        with self.mu:
            m = self.models.pop(req["model"], None)
        if m is None:
            raise p.WorkerError(p.NOT_LOADED, "unload: model %r is not loaded" % req["model"])
        m["file"].close()
        return {"model": req["model"], "freed_bytes": m["vram"]}

    def stats(self):
        """Loaded models, their bytes, jobs done, RSS, runs in flight."""
        with self.mu:
            models = [{"model": k, "vram_bytes": v["vram"]} for k, v in sorted(self.models.items())]
            used = sum(v["vram"] for v in self.models.values())
            return {"models": models, "vram_used": used, "jobs_done": self.jobs_done,
                    "rss_bytes": rss_bytes(), "running": self.running}

    def run(self, req, ctx):
        """Walk the graph: announce nodes, step samplers, write PNGs."""
        start = time.monotonic_ns()
        job_id = req["job_id"]
        g.check_job_id(job_id)
        graph = g.Graph(req["workflow"])
        with self.mu:
            for mid, nid, _ in graph.models():
                if mid not in self.models:
                    raise p.WorkerError(p.NOT_LOADED, "run %s: model %r (node %s) is not loaded" % (job_id, mid, nid))
            self.started += 1
            crash = self.crash_after > 0 and self.started == self.crash_after
            self.running += 1
            step, out_dir = self.step_seconds, self.output_dir
        try:
            outputs = self._execute(graph, ctx, job_id, step, out_dir, crash)
        finally:
            with self.mu:
                self.running -= 1
        with self.mu:
            self.jobs_done += 1
        return {"job_id": job_id, "outputs": outputs, "run_ns": time.monotonic_ns() - start}

    def _execute(self, graph, ctx, job_id, step, out_dir, crash):
        sizes, outputs, counters = {}, [], {}
        for n in graph.order:
            ctx.check()
            ctx.progress(n.id, 0, 0)
            size = next((sizes[v] for v in (n.link(k) for k in sorted(n.inputs)) if v in sizes), None)
            if n.class_type in g.LATENT_SOURCES:
                sp = {"width": 512, "height": 512, "batch_size": 1}
                size = tuple(g._int(n.literal(k, d), k) for k, d in sp.items()) + (0,)
            elif n.class_type in g.SAMPLERS:
                prm = graph.sampler_params(n)
                seed = n.literal("seed", n.literal("noise_seed", 0))
                seed = seed if isinstance(seed, int) else 0
                size = (size or (prm["width"], prm["height"], prm["batch"], 0))[:3] + (seed,)
                for i in range(1, prm["steps"] + 1):
                    ctx.wait(step)
                    ctx.progress(n.id, i, prm["steps"])
                    if crash:
                        self.exit(3)
            elif n.class_type in SCALES and size:
                f = float(n.literal("scale_by", 1))
                size = (max(1, round(size[0] * f)), max(1, round(size[1] * f))) + size[2:]
            elif n.class_type == "ImageUpscaleWithModel" and size:
                size = (size[0] * 4, size[1] * 4) + size[2:]
            elif n.class_type in g.OUTPUT_CLASSES:
                w, h, b, seed = size or (512, 512, 1, 0)
                for i in range(b):
                    ctx.check()
                    sub, name, typ = g.output_name(n, counters, job_id)
                    data = png.encode_rgb(w, h, png.pattern(w, h, seed + i))
                    png.write_atomic(os.path.join(out_dir, sub, name), data)
                    outputs.append({"node": n.id, "filename": name, "subfolder": sub, "type": typ,
                                    "width": w, "height": h})
            if size is not None:
                sizes[n.id] = size
        return outputs


def main():
    """Serve the echo worker on fd 3."""
    serve_fd3(EchoWorker())


if __name__ == "__main__":
    main()
