"""Package kiln_worker is kiln's Python worker SDK.

It implements ``sdk/worker/PROTOCOL.md`` (protocol version 1) with the
standard library and ``msgpack``: frames on the fd 3 socket, pipelined
requests (a thread per request, pings answered inline), cancel, and
read-only mappings of model files. A worker subclasses :class:`Handler`::

    from kiln_worker import Handler, WorkerError, serve_fd3

    class MyWorker(Handler):
        name = "my-worker"

        def load(self, req):          # {"model", "path", "bytes", "family"}
            ...
            return {"model": req["model"], "vram_bytes": n, "load_ns": t, "checksum": s}

        def run(self, req, ctx):      # ctx.progress(node, value, max); ctx.check()
            ...
            return {"job_id": req["job_id"], "outputs": [...], "run_ns": t}

    serve_fd3(MyWorker())

:mod:`kiln_worker.echo` is the reference worker used by the conformance suite.
"""

from .protocol import (PROTOCOL_VERSION, MAX_FRAME_BYTES, WorkerError, Cancelled, MalformedFrame,
                       encode_frame, decode_payload, read_frame)
from .server import Handler, RunContext, Server, serve, serve_fd3, rss_bytes
from .mapping import MappedFile, map_model, checksum_sample

__all__ = ["PROTOCOL_VERSION", "MAX_FRAME_BYTES", "WorkerError", "Cancelled", "MalformedFrame",
           "encode_frame", "decode_payload", "read_frame", "Handler", "RunContext", "Server", "serve",
           "serve_fd3", "rss_bytes", "MappedFile", "map_model", "checksum_sample"]
