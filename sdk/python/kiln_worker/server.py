"""The worker side of kiln's protocol: hello, then pipelined requests.

A worker implements :class:`Handler` and calls :func:`serve_fd3` from its
``main``. :func:`serve` reads frames on one thread, answers ``ping`` and
``cancel`` inline, and runs ``load``, ``unload``, ``stats`` and ``run`` each on
its own thread, so a ping is answered while runs execute (section 4 of
PROTOCOL.md). Every request gets exactly one terminal frame; a run's progress
frames are ordered before its terminal frame and none follows it.
"""

import json
import os
import signal
import socket
import sys
import threading
import traceback

from . import protocol as p


class RunContext:
    """What a run handler gets besides its request: progress and cancel.

    ``progress`` sends a progress frame (dropped once the run has ended);
    ``cancelled`` tells whether the kernel cancelled the run; ``check``
    raises :class:`~kiln_worker.protocol.Cancelled` when it did, and is what a
    handler calls between steps.
    """

    def __init__(self, run_id, job_id, send_progress):
        self.run_id = run_id
        self.job_id = job_id
        self._send_progress = send_progress
        self._cancel = threading.Event()
        self._callbacks = []

    def on_cancel(self, fn):
        """Call fn (from the reader thread) when the run is cancelled."""
        self._callbacks.append(fn)

    def progress(self, node, value=0, max_=0):
        """Report step ``value`` of ``max_`` on ``node`` (0, 0: node starts)."""
        self._send_progress({"job_id": self.job_id, "node": str(node), "value": int(value), "max": int(max_)})

    def cancel(self):
        """Mark the run cancelled (called by the server on ``cancel``)."""
        self._cancel.set()
        for fn in list(self._callbacks):
            try:
                fn()
            except Exception:  # a hook must not break the read loop
                pass

    @property
    def cancelled(self):
        """True once the run was cancelled."""
        return self._cancel.is_set()

    def check(self):
        """Raise Cancelled if the run was cancelled."""
        if self._cancel.is_set():
            raise p.Cancelled()

    def wait(self, seconds):
        """Sleep up to ``seconds``; raise Cancelled if cancelled meanwhile."""
        if self._cancel.wait(seconds):
            raise p.Cancelled()


class Handler:
    """A worker's behaviour. Methods run on their own threads, concurrently.

    Each method takes the request body (a dict, keys as in PROTOCOL.md) and
    returns the reply body (a dict). Raising :class:`WorkerError` answers
    with that code; any other exception is answered with ``internal`` (or
    ``cancelled`` when the run was cancelled). The defaults answer
    ``unsupported``.
    """

    name = "kiln-worker-python"
    version = "0.1.0"

    def hello(self, req):
        """Configure from HelloRequest; return a HelloReply (protocol and
        pid are filled in when missing)."""
        return {"name": self.name, "version": self.version, "capabilities": []}

    def load(self, req):
        """Map and load a model (LoadRequest → LoadReply)."""
        raise p.WorkerError(p.UNSUPPORTED, "load is not implemented")

    def unload(self, req):
        """Free a model (UnloadRequest → UnloadReply)."""
        raise p.WorkerError(p.UNSUPPORTED, "unload is not implemented")

    def run(self, req, ctx):
        """Execute a job (RunRequest → RunResult), reporting through ctx."""
        raise p.WorkerError(p.UNSUPPORTED, "run is not implemented")

    def stats(self):
        """Return a StatsReply."""
        return {"models": [], "vram_used": 0, "jobs_done": 0, "rss_bytes": rss_bytes(), "running": 0}


def rss_bytes():
    """Return this process's resident set size from /proc/self/statm."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class _Shutdown(Exception):
    """Raised in the read loop by SIGTERM or SIGINT."""


class _RunState:
    def __init__(self, ctx):
        self.ctx = ctx
        self.lock = threading.Lock()
        self.done = False


class Server:
    """One connection's state. Use :func:`serve` rather than this directly."""

    def __init__(self, sock, handler, log=None):
        self.sock = sock
        self.handler = handler
        self.log = log or (lambda msg: print("kiln-worker: " + msg, file=sys.stderr, flush=True))
        self.wlock = threading.Lock()
        self.mu = threading.Lock()
        self.runs = {}
        self.threads = set()

    # -- sending -----------------------------------------------------------

    def send(self, id_, type_, body):
        """Write one frame atomically; errors mean the kernel is gone."""
        try:
            frame = p.encode_frame(id_, type_, body)
        except Exception as exc:  # unencodable reply: answer internal instead
            if type_ == p.ERROR:
                return
            frame = p.encode_frame(id_, p.ERROR, {"code": p.INTERNAL, "message": "encode reply: %s" % exc})
        with self.wlock:
            try:
                self.sock.sendall(frame)
            except OSError:
                pass  # the read loop sees the broken connection too

    def send_error(self, id_, code, message):
        """Send an error frame."""
        self.send(id_, p.ERROR, {"code": code, "message": message})

    def _error_for(self, exc, ctx=None):
        if isinstance(exc, p.WorkerError):
            return exc.code, exc.message
        if ctx is not None and ctx.cancelled:
            return p.CANCELLED, "run cancelled: %s" % exc
        return p.INTERNAL, "handler exception: %s\n%s" % (exc, traceback.format_exc())

    # -- the loop ----------------------------------------------------------

    def serve(self):
        """Serve until end of stream; return an exit status (0 clean, 1 broken)."""
        try:
            try:
                id_, type_, body = p.read_frame(self.sock)
            except EOFError:
                return 0
            if not self._hello(id_, type_, body):
                return 1
            while True:
                id_, type_, body = p.read_frame(self.sock)
                self._dispatch(id_, type_, body)
        except (EOFError, _Shutdown):
            return 0
        except p.MalformedFrame as exc:
            self.log("malformed frame from the kernel: %s" % exc)
            return 1
        except OSError as exc:
            self.log("socket: %s" % exc)
            return 1
        finally:
            self._stop()

    def _stop(self, timeout=5.0):
        with self.mu:
            for rs in self.runs.values():
                rs.ctx.cancel()
            threads = list(self.threads)
        for t in threads:
            t.join(timeout)

    def _hello(self, id_, type_, body):
        if type_ != p.HELLO:
            self.send_error(id_, p.BAD_REQUEST, "first frame is %r, want %r" % (type_, p.HELLO))
            return False
        try:
            proto = p.get_int(body, "protocol")
            if proto != p.PROTOCOL_VERSION:
                self.send_error(id_, p.UNSUPPORTED, "protocol %d not supported, this worker speaks %d"
                                % (proto, p.PROTOCOL_VERSION))
                return False
            p.get_map(body, "options")
            p.get_map(body, "device")
            reply = dict(self.handler.hello(body) or {})
        except Exception as exc:
            self.send_error(id_, *self._error_for(exc))
            return False
        reply.setdefault("protocol", p.PROTOCOL_VERSION)
        reply.setdefault("pid", os.getpid())
        reply.setdefault("name", self.handler.name)
        reply.setdefault("version", self.handler.version)
        caps = list(reply.get("capabilities") or [])
        if p.CAPABILITY_WORKFLOW_JSON not in caps:
            # _start_run decodes workflow_json for every handler (1.3).
            caps.append(p.CAPABILITY_WORKFLOW_JSON)
        reply["capabilities"] = caps
        self.send(id_, p.OK, reply)
        return True

    def _dispatch(self, id_, type_, body):
        if id_ == 0:
            self.send_error(id_, p.BAD_REQUEST, "%s request with id 0" % type_)
        elif type_ == p.PING:
            try:
                self.send(id_, p.OK, {"nonce": p.get_uint(body, "nonce")})
            except p.WorkerError as exc:
                self.send_error(id_, exc.code, exc.message)
        elif type_ == p.CANCEL:
            try:
                target = p.get_uint(body, "target")
            except p.WorkerError as exc:
                self.send_error(id_, exc.code, exc.message)
                return
            with self.mu:
                rs = self.runs.get(target)
            if rs is not None:
                rs.ctx.cancel()
            self.send(id_, p.OK, {})
        elif type_ == p.RUN:
            self._start_run(id_, body)
        elif type_ == p.LOAD:
            self._go(id_, lambda: self.handler.load(self._checked_load(body)))
        elif type_ == p.UNLOAD:
            self._go(id_, lambda: self.handler.unload({"model": p.get_str(body, "model")}))
        elif type_ == p.STATS:
            self._go(id_, self.handler.stats)
        elif type_ == p.HELLO:
            self.send_error(id_, p.BAD_REQUEST, "hello sent twice")
        else:
            self.send_error(id_, p.UNSUPPORTED, "unknown message type %r" % type_)

    @staticmethod
    def _checked_load(body):
        # weight_dtype (1.1) and vram_budget_bytes (1.2) are optional: "" and 0
        # when a kernel does not send them.
        return {"model": p.get_str(body, "model"), "path": p.get_str(body, "path"),
                "bytes": p.get_int(body, "bytes"), "family": p.get_str(body, "family"),
                "weight_dtype": p.get_str(body, "weight_dtype"),
                "vram_budget_bytes": p.get_int(body, "vram_budget_bytes")}

    def _spawn(self, fn):
        def wrapper():
            try:
                fn()
            finally:
                with self.mu:
                    self.threads.discard(threading.current_thread())
        t = threading.Thread(target=wrapper, daemon=True)
        with self.mu:
            self.threads.add(t)
        t.start()

    def _go(self, id_, fn):
        def call():
            try:
                reply = fn()
            except Exception as exc:
                self.send_error(id_, *self._error_for(exc))
                return
            self.send(id_, p.OK, reply if reply is not None else {})
        self._spawn(call)

    def _start_run(self, id_, body):
        try:
            req = {"job_id": p.get_str(body, "job_id"), "attempt": p.get_int(body, "attempt"),
                   "workflow": _workflow_of(body), "models": p.get_list(body, "models")}
        except p.WorkerError as exc:
            self.send_error(id_, exc.code, exc.message)
            return
        rs = None

        def send_progress(prog):
            with rs.lock:
                if not rs.done:
                    self.send(id_, p.PROGRESS, prog)

        ctx = RunContext(id_, req["job_id"], send_progress)
        rs = _RunState(ctx)
        with self.mu:
            if id_ in self.runs:
                self.send_error(id_, p.BAD_REQUEST, "run id %d already in flight" % id_)
                return
            self.runs[id_] = rs

        def call():
            try:
                result, err = self.handler.run(req, ctx), None
            except Exception as exc:
                result, err = None, self._error_for(exc, ctx)
            with self.mu:
                self.runs.pop(id_, None)
            with rs.lock:
                rs.done = True
                if err is not None:
                    self.send_error(id_, *err)
                else:
                    self.send(id_, p.RESULT, result if result is not None else {"job_id": req["job_id"]})
        self._spawn(call)


def serve(sock, handler, log=None):
    """Serve ``handler`` on a connected socket until end of stream.

    Returns the exit status a worker should use: 0 when the kernel closed the
    socket (or SIGTERM/SIGINT arrived, when called from the main thread with
    :func:`install_signal_handlers`), 1 when the stream was broken or hello
    failed.
    """
    return Server(sock, handler, log).serve()


def install_signal_handlers():
    """Make SIGTERM and SIGINT end :func:`serve` cleanly (main thread only)."""
    def on_signal(signum, frame):
        raise _Shutdown()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def serve_fd3(handler, log=None):
    """Serve on the socket the kernel passes as fd 3, then exit the process.

    A worker's main is then::

        if __name__ == "__main__":
            serve_fd3(MyHandler())
    """
    try:
        sock = socket.socket(fileno=3)
    except OSError as exc:
        print("kiln-worker: fd 3 is not a socket (a worker must be started by the kiln kernel): %s" % exc,
              file=sys.stderr, flush=True)
        os._exit(2)
    install_signal_handlers()
    code = serve(sock, handler, log)
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: handler threads that ignore cancel must not keep us alive,
    # and library atexit hooks (CUDA) can hang at interpreter shutdown.
    os._exit(code)


def _workflow_of(body):
    """The run's graph: the ``workflow`` map, or (protocol 1.3) the client's
    JSON bytes in ``workflow_json``, decoded here so that handlers see a
    dict either way."""
    if body.get("workflow") is not None or body.get("workflow_json") is None:
        return p.get_map(body, "workflow")
    raw = body["workflow_json"]
    if not isinstance(raw, (bytes, bytearray, str)):
        raise p.WorkerError(p.BAD_REQUEST, "workflow_json: want bytes, got %s" % type(raw).__name__)
    try:
        wf = json.loads(raw)
    except ValueError as exc:
        raise p.WorkerError(p.BAD_REQUEST, "workflow_json is not JSON: %s" % exc)
    if not isinstance(wf, dict):
        raise p.WorkerError(p.BAD_REQUEST, "workflow_json: want a JSON object, got %s" % type(wf).__name__)
    return wf
