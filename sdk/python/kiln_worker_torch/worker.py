"""kiln-worker-torch: model bytes → torch tensors, and a compute stand-in.

Options (command-line arguments, set with kiln's ``workers.args``):

  --device auto|cpu|cuda   where tensors live (auto: CUDA when available)
  --threads N              torch CPU threads (default: torch's choice)
  --width-scale F          multiplies the stand-in's hidden width (default 1)
  --h2d pageable|staged|register  how model bytes cross to a GPU (see H2D_MODES)
  --vram-budget BYTES      a fake device memory bound for weights (0: none): a
                           model beyond what is left keeps the rest of its
                           weights in the mapping and streams them each step,
                           as under a load's vram_budget_bytes (protocol 1.2)

Every figure this worker reports is measured: ``vram_bytes`` is the CUDA
allocator's growth during the load on a GPU and the tensors' byte size on
CPU; run and load times are wall-clock.
"""

import argparse
import os
import threading
import time
import warnings

import torch
import torch.nn.functional as F

from kiln_worker import graph as g
from kiln_worker import mapping, png, safetensors
from kiln_worker import protocol as p
from kiln_worker.server import Handler, rss_bytes, serve_fd3

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}

# The stand-in network per family: hidden width and layers per step. The
# widths are the families' first-stage channel counts (SD1.5 320, SDXL 320
# with wider attention, SD3/Flux 1536/3072 model dims scaled down); the
# layer counts keep a CPU step at 512² within tens to hundreds of ms. These
# are STAND-IN sizes, not the real networks.
FAMILY_NET = {"sd15": (320, 4), "sdxl": (640, 6), "sd3": (768, 6), "flux": (1024, 8)}
DEFAULT_NET = (320, 4)


def pick_device(choice):
    """Return the torch.device for --device."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", 0)
    return torch.device("cpu")


# How model bytes cross to the GPU (--h2d):
#   pageable  tensor.to("cuda") on views of the mapping: the driver stages
#             each copy through its own small pinned buffer, synchronously
#   staged    kiln copies the mapping through two pinned staging buffers of
#             STAGE_BYTES while the DMA engine drains the other one, so
#             the CPU copy and the transfer overlap
#   register  pins the mapping itself (cudaHostRegister, read-only) so the
#             DMA engine reads the L2 segment directly; pinning costs time
#             once per load
H2D_MODES = ("pageable", "staged", "register")
STAGE_BYTES = 64 << 20
_CUDA_HOST_REGISTER_READ_ONLY = 8


def tensors_from_mapping(buf, header, device, h2d="staged"):
    """Wrap every tensor of a mapped safetensors file with torch.frombuffer.

    On CPU the tensors are views of the read-only mapping: no copy. On CUDA
    each view is copied to the device once, the way h2d names. Returns
    {name: tensor}.
    """
    views = {}
    with warnings.catch_warnings():
        # The mapping is read-only; torch warns that it cannot enforce that.
        warnings.simplefilter("ignore", UserWarning)
        for t in header.tensors:
            dtype = DTYPES.get(t.dtype, torch.uint8)
            size = torch.tensor([], dtype=dtype).element_size()
            count = t.nbytes // size
            if count == 0:
                continue
            try:
                v = torch.frombuffer(buf, dtype=dtype, count=count, offset=t.begin)
            except (ValueError, RuntimeError):  # misaligned or odd size: copy
                v = torch.frombuffer(bytearray(buf[t.begin:t.begin + count * size]), dtype=dtype)
            if dtype != torch.uint8 and count == _numel(t.shape):
                v = v.view(t.shape)
            views[t.name] = v
    if device.type != "cuda":
        return views
    if h2d == "staged":
        return _to_cuda_staged(views, device)
    if h2d == "register":
        return _to_cuda_registered(buf, views, device)
    return {k: v.to(device) for k, v in views.items()}


def _to_cuda_staged(views, device):
    """Copy views to the GPU through two pinned buffers on a side stream.

    Chunk i is copied by the CPU into one buffer while chunk i-1's DMA from
    the other is in flight; an event per buffer says when it may be reused.
    """
    stage = [torch.empty(STAGE_BYTES, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
    done = [None, None]
    stream = torch.cuda.Stream(device)
    out, k = {}, 0
    for name, v in views.items():
        dst = torch.empty(v.shape, dtype=v.dtype, device=device)
        src_b, dst_b = v.reshape(-1).view(torch.uint8), dst.reshape(-1).view(torch.uint8)
        for off in range(0, src_b.numel(), STAGE_BYTES):
            n = min(STAGE_BYTES, src_b.numel() - off)
            if done[k] is not None:
                done[k].synchronize()
            stage[k][:n].copy_(src_b[off:off + n])
            with torch.cuda.stream(stream):
                dst_b[off:off + n].copy_(stage[k][:n], non_blocking=True)
                done[k] = torch.cuda.Event()
                done[k].record(stream)
            k ^= 1
        out[name] = dst
    stream.synchronize()
    return out


def _to_cuda_registered(buf, views, device):
    """Pin the whole mapping, copy with DMA straight from it, then unpin."""
    base = torch.frombuffer(buf, dtype=torch.uint8)
    cudart = torch.cuda.cudart()
    err = cudart.cudaHostRegister(base.data_ptr(), base.numel(), _CUDA_HOST_REGISTER_READ_ONLY)
    if int(err) != 0:  # not supported here: fall back to staging
        return _to_cuda_staged(views, device)
    try:
        out = {k: v.to(device, non_blocking=True) for k, v in views.items()}
        torch.cuda.synchronize(device)
        return out
    finally:
        cudart.cudaHostUnregister(base.data_ptr())


def _e4m3_table():
    """The 256 float8 e4m3fn values by bit pattern (bias 7, no infinities,
    0x7f/0xff NaN). torch before 2.1 has no float8 dtype, so fp8 weights are
    kept as their bytes and widened through this table."""
    vals = []
    for b in range(256):
        e, m = (b >> 3) & 0xF, b & 7
        if e == 15 and m == 7:
            v = float("nan")
        elif e == 0:
            v = m * 2.0 ** -9
        else:
            v = (1 + m / 8) * 2.0 ** (e - 7)
        vals.append(-v if b & 0x80 else v)
    return torch.tensor(vals, dtype=torch.float32)


E4M3 = _e4m3_table()

# Element sizes of the casts a loader may ask for (LoadRequest.weight_dtype).
CAST_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8_e4m3fn": 1, "fp8_e4m3fn_fast": 1, "fp8_e5m2": 1}
FP8_DTYPES = ("F8_E4M3",)


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


class Model:
    """One loaded model: its mapping, tensors and measured bytes."""

    def __init__(self, model_id, family, mf, tensors, nbytes, checksum, header=None):
        self.id, self.family, self.mf, self.tensors = model_id, family, mf, tensors
        self.nbytes, self.checksum = nbytes, checksum
        self.work = {}  # width → (W, W_in, W_out): stand-in weights derived from the model
        self.lock = threading.Lock()
        # fp8 weights (kiln's conversion to fit, ComfyUI's scaled fp8
        # checkpoints): name → shape; their bytes stay 1 per element on the
        # device and are widened with their scale where they are used.
        self.fp8 = {t.name: list(t.shape) for t in (header.tensors if header else ())
                    if t.dtype in FP8_DTYPES and t.nbytes > 0}
        # Weight streaming: the tensors left in the mapping (host memory)
        # under the load's budget, copied to the device every step.
        self.streamed = []
        self.streamed_bytes = 0
        self.streamed_in = 0  # bytes moved by stream_in, for stats and tests

    def stream_in(self, device):
        """Copy every streamed tensor from the mapping to the device, as a
        step needs its layers: {name: the device copy}. The copies live for
        the step only."""
        out = {}
        for name in self.streamed:
            src = self.tensors[name]
            dst = torch.empty(src.shape, dtype=src.dtype, device=device)
            dst.copy_(src)
            out[name] = dst
            self.streamed_in += src.numel() * src.element_size()
        return out

    def weight(self, name, t=None):
        """Tensor name (or t, a copy of it) as float32 values: an fp8 weight
        is widened and multiplied by its per-tensor scale
        (``<prefix>.scale_weight``, or ``<name>.scale``); any other floating
        tensor is cast."""
        if t is None:
            t = self.tensors[name]
        if name not in self.fp8:
            return t.to(torch.float32)
        v = E4M3.to(t.device)[t.reshape(-1).to(torch.long)].view(self.fp8[name])
        base = name[:-len(".weight")] if name.endswith(".weight") else name
        scale = self.tensors.get(base + ".scale_weight", self.tensors.get(name + ".scale"))
        if scale is not None:
            v = v * scale.to(torch.float32)
        return v

    def float_names(self):
        """The names of the weights that hold values: floating tensors and fp8 ones."""
        return [k for k, t in self.tensors.items() if t.is_floating_point() or k in self.fp8]

    def stand_in_weights(self, width, device, fetched=None):
        """Return (W [width×width], W_in [4×width], W_out [width×4]) built from
        the model's largest floating tensor (tiled when it is smaller).

        When that tensor is streamed, the weights are built from this
        step's copy in ``fetched`` (stream_in) and not kept: the same
        arithmetic on the same bytes, so a streamed run's outputs are
        bit-identical to a resident one's."""
        name = max(self.float_names(), key=lambda k: self.tensors[k].numel(), default=None)
        if name is not None and name in self.streamed:
            if fetched is None or name not in fetched:
                fetched = self.stream_in(device)
            return self._derive(width, device, name, fetched[name])
        with self.lock:
            if width not in self.work:
                self.work[width] = self._derive(width, device, name, None)
            return self.work[width]

    def _derive(self, width, device, name, copy):
        """The stand-in weights from tensor name (copy: this step's device
        copy of it, for a streamed tensor)."""
        # Only an fp8 weight is widened whole (it has no float view); any
        # other is sliced before its cast.
        if name is None:
            src = None
        elif name in self.fp8:
            src = self.weight(name, copy)
        else:
            src = copy if copy is not None else self.tensors[name]
        need = width * width + 8 * width
        flat = (src.reshape(-1)[:need].to(device=device, dtype=torch.float32) if src is not None
                else torch.empty(0, device=device))
        if flat.numel() < need:
            gen = torch.Generator(device="cpu").manual_seed(len(self.id))
            pad = torch.randn(need - flat.numel(), generator=gen).to(device)
            flat = torch.cat([flat, pad])
        flat = torch.nan_to_num(flat, nan=0.0, posinf=0.0, neginf=0.0)
        flat = flat / (flat.abs().max() + 1e-6)
        w = flat[:width * width].view(width, width) / width ** 0.5
        w_in = flat[width * width:width * width + 4 * width].view(4, width)
        w_out = flat[width * width + 4 * width:need].view(width, 4) / width ** 0.5
        return (w.contiguous(), w_in.contiguous(), w_out.contiguous())


class TorchWorker(Handler):
    """The kiln-worker-torch Handler; safe for concurrent use."""

    name = "kiln-worker-torch"
    version = "0.1.0"

    def __init__(self, device, width_scale=1.0, getenv=os.environ.get, h2d="staged", vram_budget=0):
        self.device = device
        self.vram_budget = vram_budget  # --vram-budget: a fake device bound for weights, 0 none
        self.width_scale = width_scale
        self.h2d = h2d
        self.gpu_load_mu = threading.Lock()
        self.mu = threading.Lock()
        self.models = {}
        self.loading = {}
        self.output_dir = ""
        self.jobs_done = 0
        self.running = 0
        self.device_memory = 0
        crash = getenv("KILN_SIM_CRASH_AFTER_JOBS") or ""
        self.crash_after = int(crash) if crash.isdigit() else 0  # test hook, as kiln-worker-sim's
        self.started = 0

    # -- hello, load, unload, stats -----------------------------------------

    def hello(self, req):
        """Record the output directory and the device's memory bound."""
        out = p.get_str(req, "output_dir")
        if not out:
            raise p.WorkerError(p.BAD_REQUEST, "output_dir is empty")
        dev = p.get_map(req, "device")
        with self.mu:
            self.output_dir = out
            self.device_memory = int(dev.get("memory_bytes") or 0)
        name = torch.cuda.get_device_name(0) if self.device.type == "cuda" else "cpu"
        print("kiln-worker-torch: torch %s on %s (%s), kernel device %r" % (
            torch.__version__, self.device, name, dev.get("name")), flush=True)
        caps = ["cancel", "progress", "stream", "device:" + self.device.type]
        caps += ["node:" + c for c in g.NODE_CLASSES]
        return {"name": self.name, "version": self.version, "capabilities": caps}

    def load(self, req):
        """Map the file, wrap it in tensors, move them to the device."""
        mid = req["model"]
        while True:
            with self.mu:
                if mid in self.models:
                    m = self.models[mid]
                    return {"model": mid, "vram_bytes": m.nbytes, "checksum": m.checksum, "load_ns": 0}
                ev = self.loading.get(mid)
                if ev is None:
                    self.loading[mid] = threading.Event()
                    break
            ev.wait()
        try:
            start = time.monotonic_ns()
            m = self._load(req)
            took = time.monotonic_ns() - start
        finally:
            with self.mu:
                self.loading.pop(mid).set()
        with self.mu:
            self.models[mid] = m
        print("kiln-worker-torch: loaded %s (%s): %d bytes in %.1f ms, %d bytes streamed" % (
            mid, m.family, m.nbytes, took / 1e6, m.streamed_bytes), flush=True)
        return {"model": mid, "vram_bytes": m.nbytes, "checksum": m.checksum, "load_ns": took,
                "streamed_bytes": m.streamed_bytes}

    def _resident_limit(self, req, header, file_size):
        """How many of the model's tensor bytes may stay on the device, None
        for all: the load's vram_budget_bytes (protocol 1.2; the kernel's
        figure is at the model's nominal size and cast, so it is applied as
        a share of the file's weights) and what --vram-budget leaves."""
        total = sum(t.nbytes for t in header.tensors)
        limits = []
        budget = int(req.get("vram_budget_bytes") or 0)
        if budget > 0:
            footprint = header.nominal_bytes(file_size) * CAST_BYTES.get(req.get("weight_dtype") or "", 2) // 2
            if footprint > 0 and budget < footprint:
                limits.append(total * budget // footprint)
        if self.vram_budget > 0:
            with self.mu:
                used = sum(m.nbytes for m in self.models.values())
            limits.append(max(self.vram_budget - used, 0))
        return min(limits) if limits else None

    @staticmethod
    def _split(header, limit):
        """Names of the tensors that stay resident (in file order, while
        they fit in limit) and of those streamed."""
        resident, streamed, used = [], [], 0
        for t in header.tensors:
            if limit is None or used + t.nbytes <= limit:
                resident.append(t.name)
                used += t.nbytes
            else:
                streamed.append(t.name)
        return resident, streamed

    def _load(self, req):
        mf = mapping.map_model(req["model"], req["path"], req["bytes"])
        try:
            checksum = mapping.checksum_sample(mf.buf)
            try:
                header = safetensors.read_header(mf.buf)
                family = req["family"] or header.family()
            except ValueError:
                # Not safetensors (.ckpt, .pth): one byte tensor over the file.
                header = safetensors.Header([safetensors.Tensor("file", "U8", [mf.size], 0, mf.size)], {}, 0)
                family = req["family"]
            limit = self._resident_limit(req, header, mf.size)
            if self.device.type != "cuda":
                tensors = tensors_from_mapping(mf.buf, header, self.device, self.h2d)
                m = Model(req["model"], family, mf, tensors, 0, checksum, header)
                # On CPU the device and the host are one memory: a streamed
                # tensor stays a view of the mapping and is copied, as to a
                # GPU, every step (Model.stream_in); only the resident ones
                # count against the budget.
                _, m.streamed = self._split(header, limit)
                m.streamed = [n for n in m.streamed if n in tensors]
                m.streamed_bytes = sum(tensors[n].numel() * tensors[n].element_size() for n in m.streamed)
                m.nbytes = sum(t.numel() * t.element_size() for t in tensors.values()) - m.streamed_bytes
                return m
            if limit is not None:
                return self._load_streamed_cuda(req, mf, header, family, checksum, limit)
            # One GPU load at a time: the allocator's growth is then this
            # model's alone (two loads measured over overlapping windows each
            # count the other's tensors, and the ledger would hold both
            # twice), and the copies share one PCIe link anyway.
            with self.gpu_load_mu:
                before = torch.cuda.memory_allocated()
                if self.device_memory:
                    need = sum(t.nbytes for t in header.tensors)
                    free, _ = torch.cuda.mem_get_info()
                    if need > free:
                        raise p.WorkerError(p.OUT_OF_MEMORY, "load %s: needs %d bytes, %d free" % (req["model"], need, free))
                try:
                    tensors = tensors_from_mapping(mf.buf, header, self.device, self.h2d)
                except RuntimeError as exc:
                    if "out of memory" in str(exc):
                        raise p.WorkerError(p.OUT_OF_MEMORY, "load %s: %s" % (req["model"], exc)) from None
                    raise
                torch.cuda.synchronize()
                nbytes = torch.cuda.memory_allocated() - before
            return Model(req["model"], family, mf, tensors, nbytes, checksum, header)
        except BaseException:
            mf.close()
            raise

    def _load_streamed_cuda(self, req, mf, header, family, checksum, limit):
        """A GPU load under a budget: the resident tensors go to the device,
        the streamed ones stay views of the mapping (Model.stream_in copies
        them every step)."""
        resident, streamed = self._split(header, limit)
        views = tensors_from_mapping(mf.buf, header, torch.device("cpu"))
        with self.gpu_load_mu:
            before = torch.cuda.memory_allocated()
            on_gpu = _to_cuda_staged({k: views[k] for k in resident if k in views}, self.device)
            torch.cuda.synchronize()
            nbytes = torch.cuda.memory_allocated() - before
        tensors = dict(views)
        tensors.update(on_gpu)
        m = Model(req["model"], family, mf, tensors, nbytes, checksum, header)
        m.streamed = [n for n in streamed if n in views]
        m.streamed_bytes = sum(views[n].numel() * views[n].element_size() for n in m.streamed)
        return m

    def unload(self, req):
        """Drop a model's tensors and mapping."""
        with self.mu:
            m = self.models.pop(req["model"], None)
        if m is None:
            raise p.WorkerError(p.NOT_LOADED, "unload: model %r is not loaded" % req["model"])
        m.tensors.clear()
        m.work.clear()
        m.mf.close()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return {"model": m.id, "freed_bytes": m.nbytes}

    def stats(self):
        """Per-model bytes; vram_used from the CUDA allocator on a GPU."""
        with self.mu:
            models = [{"model": k, "vram_bytes": v.nbytes} for k, v in sorted(self.models.items())]
            used = sum(v.nbytes for v in self.models.values())
            rep = {"models": models, "jobs_done": self.jobs_done, "running": self.running}
        rep["vram_used"] = torch.cuda.memory_allocated() if self.device.type == "cuda" else used
        rep["rss_bytes"] = rss_bytes()
        return rep

    # -- run ------------------------------------------------------------------

    def run(self, req, ctx):
        """Execute the graph; samplers run the compute stand-in per step."""
        start = time.monotonic_ns()
        job_id = req["job_id"]
        g.check_job_id(job_id)
        graph = g.Graph(req["workflow"])
        with self.mu:
            for mid, nid, _ in graph.models():
                if mid not in self.models:
                    raise p.WorkerError(p.NOT_LOADED, "run %s: model %r (node %s) is not loaded" % (job_id, mid, nid))
            self.running += 1
            self.started += 1
            ctx.crash = self.crash_after > 0 and self.started == self.crash_after
            out_dir = self.output_dir
            # Activations (protocol 1.2) are measured only for a run alone
            # on the GPU: the allocator's peak is shared by concurrent runs.
            alone = self.device.type == "cuda" and self.running == 1
            if alone:
                weights = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
        try:
            with torch.inference_mode():
                outputs = self._execute(graph, ctx, job_id, out_dir)
        finally:
            with self.mu:
                alone = alone and self.running == 1
                self.running -= 1
        with self.mu:
            self.jobs_done += 1
        res = {"job_id": job_id, "outputs": outputs, "run_ns": time.monotonic_ns() - start}
        if alone:
            res["activation_bytes"] = max(torch.cuda.max_memory_allocated() - weights, 0)
        return res

    def _model_for(self, graph, node):
        nid, hops = node.link("model") or node.link("guider"), 0
        while nid is not None and hops < 64:
            n = graph.nodes[nid]
            for inp, folder in g.LOADERS.get(n.class_type, ()):
                if folder in ("checkpoints", "diffusion_models"):
                    name = n.literal(inp, "")
                    with self.mu:
                        m = self.models.get(folder + "/" + str(name))
                    if m is not None:
                        return m
            nid, hops = n.link("model"), hops + 1
        with self.mu:  # no traceable checkpoint: any loaded model's weights
            return next(iter(self.models.values()), None)

    def _execute(self, graph, ctx, job_id, out_dir):
        vals, outputs, counters = {}, [], {}
        for n in graph.order:
            ctx.check()
            ctx.progress(n.id, 0, 0)
            val = next((vals[v] for v in (n.link(k) for k in sorted(n.inputs)) if v in vals), None)
            if n.class_type in g.SAMPLERS:
                val = self._sample(graph, n, ctx, val)
            elif n.class_type in ("VAEDecode", "VAEDecodeTiled") and val is not None and "latent" in val:
                val = {"image": decode(val["latent"])}
            elif n.class_type in g.OUTPUT_CLASSES:
                if val is None or "image" not in val:
                    raise p.WorkerError(p.FAILED, "run %s: node %s: no image reaches it" % (job_id, n.id))
                images = val["image"].to("cpu")
                for i in range(images.shape[0]):
                    ctx.check()
                    sub, name, typ = g.output_name(n, counters, job_id)
                    h, w = images.shape[1], images.shape[2]
                    png.write_atomic(os.path.join(out_dir, sub, name), png.encode_rgb(w, h, images[i].numpy().tobytes()
                                                                                      if _has_numpy() else
                                                                                      bytes(images[i].reshape(-1).tolist())))
                    outputs.append({"node": n.id, "filename": name, "subfolder": sub, "type": typ,
                                    "width": w, "height": h})
            if val is not None:
                vals[n.id] = val
        return outputs

    def _sample(self, graph, node, ctx, val):
        prm = graph.sampler_params(node)
        model = self._model_for(graph, node)
        if model is None:
            raise p.WorkerError(p.NOT_LOADED, "node %s: no model loaded for the sampler" % node.id)
        width, layers = FAMILY_NET.get(model.family or prm["family"], DEFAULT_NET)
        width = max(8, int(width * self.width_scale))
        streaming = bool(model.streamed)
        if not streaming:
            w, w_in, w_out = model.stand_in_weights(width, self.device)
        seed = node.literal("seed", node.literal("noise_seed", 0))
        gen = torch.Generator(device="cpu").manual_seed(int(seed) % (1 << 63) if isinstance(seed, int) else 0)
        lh, lw = max(1, prm["height"] // 8), max(1, prm["width"] // 8)
        if val is not None and "latent" in val:
            x = val["latent"].to(self.device)
        else:
            x = torch.randn(prm["batch"], 4, lh, lw, generator=gen).to(self.device)
        steps = prm["steps"]
        for i in range(1, steps + 1):
            ctx.check()
            if streaming:
                # The streamed layers cross to the device for this step.
                w, w_in, w_out = model.stand_in_weights(width, self.device, model.stream_in(self.device))
            # STAND-IN for one UNet/DiT evaluation: tokens × (4→W, L × W→W, W→4).
            tokens = x.flatten(2).transpose(1, 2)            # b × (h·w) × 4
            hdn = tokens @ w_in                               # b × n × W
            for _ in range(layers):
                hdn = F.gelu(hdn @ w) + hdn
                hdn = hdn / (hdn.norm(dim=-1, keepdim=True) + 1e-6)
            eps = (hdn @ w_out).transpose(1, 2).reshape_as(x)
            x = x - eps / steps
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            ctx.progress(node.id, i, steps)
            if getattr(ctx, "crash", False):
                os._exit(3)
        return {"latent": x}


def decode(latent):
    """STAND-IN VAE decode: 4 latent channels → RGB, ×8 nearest upsampling, uint8."""
    mix = torch.tensor([[0.35, 0.23, 0.32], [0.33, 0.5, 0.24], [-0.28, 0.18, 0.27], [-0.21, -0.26, -0.72]],
                       device=latent.device, dtype=latent.dtype)
    rgb = torch.einsum("bchw,cd->bdhw", latent, mix)
    rgb = F.interpolate(rgb, scale_factor=8, mode="nearest")
    rgb = ((torch.tanh(rgb) + 1) * 127.5).clamp(0, 255).to(torch.uint8)
    return rgb.permute(0, 2, 3, 1).contiguous()               # b × H × W × 3


_NUMPY = None


def _has_numpy():
    global _NUMPY
    if _NUMPY is None:
        try:
            import numpy  # noqa: F401  (torch's .numpy() needs it; Debian's torch depends on it)
            _NUMPY = True
        except ImportError:
            _NUMPY = False
    return _NUMPY


def parse_args(argv=None):
    """Parse the worker's command line."""
    ap = argparse.ArgumentParser(prog="kiln-worker-torch", description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--width-scale", type=float, default=1.0)
    ap.add_argument("--h2d", choices=H2D_MODES, default="staged")
    ap.add_argument("--vram-budget", type=int, default=0)
    return ap.parse_args(argv)


def main(argv=None):
    """Serve kiln-worker-torch on fd 3."""
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    serve_fd3(TorchWorker(pick_device(args.device), args.width_scale, h2d=args.h2d, vram_budget=args.vram_budget))
