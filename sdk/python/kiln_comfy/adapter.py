"""The protocol layer of the ComfyUI adapter, independent of ComfyUI."""

import threading
import time

from kiln_worker import graph as g
from kiln_worker import mapping
from kiln_worker import protocol as p

from . import held
from kiln_worker.server import Handler, rss_bytes


class Backend:
    """What the adapter needs from ComfyUI. Calls of ``execute`` are
    serialised by the adapter (ComfyUI's executor runs one prompt at a time);
    ``interrupt`` may be called from another thread while one runs."""

    def node_specs(self):
        """Return {class: /object_info entry} for every node class."""
        raise NotImplementedError

    def register_model(self, folder, name, path):
        """Make ``path`` visible to ComfyUI as ``<folder>/<name>``. ``path``
        is the adapter's held descriptor (``/proc/self/fd/<n>``), valid
        until ``unload_model``; never the kernel's L2 path, which the tiers
        may evict once the load is answered."""
        raise NotImplementedError

    def load_model(self, folder, name):
        """Load the model into ComfyUI's model management; return bytes held."""
        raise NotImplementedError

    def unload_model(self, folder, name):
        """Drop this one model from ComfyUI's model management, caches and
        folders; other loaded models stay loaded."""
        raise NotImplementedError

    def execute(self, prompt, prompt_id, output_dir, on_progress):
        """Run a prompt; call on_progress(node, value, max) (max 0: node
        starts); return [{"node", "filename", "subfolder", "type", "width",
        "height"}] with subfolders relative to output_dir. Raise
        :class:`Interrupted` when interrupted."""
        raise NotImplementedError

    def interrupt(self):
        """Ask the prompt running now to stop at the next node or step."""
        raise NotImplementedError

    def vram_used(self):
        """Device bytes held by ComfyUI's models."""
        return 0


class Interrupted(Exception):
    """The backend stopped a prompt because interrupt was called."""


class ComfyAdapter(Handler):
    """A kiln Handler that executes prompts with a ComfyUI backend."""

    name = "kiln-comfy"
    version = "0.1.0"

    def __init__(self, backend):
        self.backend = backend
        self.mu = threading.Lock()
        self.exec_lock = threading.Lock()  # one prompt at a time
        self.models = {}                   # id → (HeldFile, bytes, checksum)
        self.output_dir = ""
        self.jobs_done = 0
        self.running = 0
        self.active = None                 # RunContext of the prompt executing
        self.specs = None

    def hello(self, req):
        """Advertise ComfyUI's node classes with their /object_info specs."""
        out = p.get_str(req, "output_dir")
        if not out:
            raise p.WorkerError(p.BAD_REQUEST, "output_dir is empty")
        self.output_dir = out
        self.specs = self.backend.node_specs()
        caps = ["cancel", "progress"] + ["node:" + c for c in sorted(self.specs)]
        return {"name": self.name, "version": self.version, "capabilities": caps, "node_specs": self.specs}

    def load(self, req):
        """Hold the file (an open descriptor and a mapping, checks and
        checksum as every kiln worker), expose the descriptor's path in
        ComfyUI's model folders, and load it through model management.

        The kernel releases the L2 lease once this answers and the tiers may
        then evict the segment (kiln_comfy/held.py): ComfyUI is given a path
        that stays valid until unload, not the segment's."""
        start = time.monotonic_ns()
        mid = req["model"]
        folder, _, name = mid.partition("/")
        if not name:
            raise p.WorkerError(p.BAD_REQUEST, "load: model id %r is not folder/name" % mid)
        with self.mu:
            if mid in self.models:
                return {"model": mid, "vram_bytes": self.models[mid][1], "checksum": self.models[mid][2],
                        "load_ns": 0}
        hf = held.hold(mid, req["path"], req["bytes"])
        checksum = mapping.checksum_sample(hf.mapped.buf)
        try:
            self.backend.register_model(folder, name, hf.path)
            nbytes = self.backend.load_model(folder, name)
        except MemoryError as exc:
            self._forget(folder, name, hf)
            raise p.WorkerError(p.OUT_OF_MEMORY, "load %s: %s" % (mid, exc)) from None
        except BaseException:
            self._forget(folder, name, hf)
            raise
        with self.mu:
            self.models[mid] = (hf, nbytes, checksum)
        return {"model": mid, "vram_bytes": nbytes, "checksum": checksum, "load_ns": time.monotonic_ns() - start}

    def _forget(self, folder, name, hf):
        """Undo a load that failed half way, then close the held file."""
        try:
            self.backend.unload_model(folder, name)
        except Exception:
            pass  # the load's own error is the one to report
        hf.close()

    def unload(self, req):
        """Drop the model from ComfyUI, then close the held file."""
        mid = req["model"]
        with self.mu:
            entry = self.models.pop(mid, None)
        if entry is None:
            raise p.WorkerError(p.NOT_LOADED, "unload: model %r is not loaded" % mid)
        folder, _, name = mid.partition("/")
        self.backend.unload_model(folder, name)
        entry[0].close()
        return {"model": mid, "freed_bytes": entry[1]}

    def stats(self):
        """Models, bytes as ComfyUI reports them, jobs, RSS, runs in flight."""
        with self.mu:
            models = [{"model": k, "vram_bytes": v[1]} for k, v in sorted(self.models.items())]
            rep = {"models": models, "jobs_done": self.jobs_done, "running": self.running}
        rep["vram_used"] = self.backend.vram_used()
        rep["rss_bytes"] = rss_bytes()
        if self.specs is not None:
            rep["node_specs"] = self.specs
        return rep

    def run(self, req, ctx):
        """Execute the prompt with ComfyUI's executor, one at a time."""
        start = time.monotonic_ns()
        job_id = req["job_id"]
        g.check_job_id(job_id)
        graph = g.Graph(req["workflow"])
        with self.mu:
            for mid, nid, _ in graph.models():
                if mid not in self.models:
                    raise p.WorkerError(p.NOT_LOADED, "run %s: model %r (node %s) is not loaded" % (job_id, mid, nid))
            self.running += 1
        ctx.on_cancel(lambda: self.cancel_hook(ctx))
        try:
            with self.exec_lock:
                ctx.check()  # cancelled while waiting for the executor
                with self.mu:
                    self.active = ctx
                try:
                    outputs = self.backend.execute(req["workflow"], job_id, self.output_dir, ctx.progress)
                except Interrupted:
                    raise p.Cancelled("run %s interrupted" % job_id) from None
                finally:
                    with self.mu:
                        self.active = None
        finally:
            with self.mu:
                self.running -= 1
        ctx.check()
        with self.mu:
            self.jobs_done += 1
        return {"job_id": job_id, "outputs": outputs, "run_ns": time.monotonic_ns() - start}

    def cancel_hook(self, ctx):
        """Interrupt ComfyUI when the cancelled run is the one executing."""
        with self.mu:
            if self.active is ctx:
                self.backend.interrupt()
