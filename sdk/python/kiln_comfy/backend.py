"""ComfyUIBackend: the adapter's backend inside a ComfyUI installation.

It reaches ComfyUI only through the modules in a :class:`ComfyModules`
(``folder_paths``, ``nodes``, ``execution``, ``comfy.model_management``,
``comfy.sd``), so that tests drive it with fakes shaped like those modules
(sdk/python/tests/test_comfy_backend.py) and :meth:`ComfyUIBackend.from_root`
imports the real ones. What each call relies on, read against ComfyUI's
source, is in docs/COMFYUI_ADAPTER.md.

Three rules, each the fix of a bug the first version had:

1. The model folders link to the adapter's held descriptor
   (``/proc/self/fd/<n>``, kiln_comfy/held.py), never to the kernel's L2
   segment, which the tiers may evict once the load is answered.
2. A warmed checkpoint is the one the executor uses. ComfyUI's
   ``CheckpointLoaderSimple.load_checkpoint`` (nodes.py) calls
   ``comfy.sd.load_checkpoint_guess_config`` on every execution that is not
   an output-cache hit, and the executor's cache (``comfy_execution/caching.py``
   ``HierarchicalCache``, keyed by the node's input signature) never holds
   an object loaded outside it and drops a node's outputs as soon as a
   prompt without that node runs (``BasicCache.clean_unused``). A second
   ``load_checkpoint_guess_config`` builds a second ``ModelPatcher``, which
   ``model_management.load_models_gpu`` does not recognise (``LoadedModel.__eq__``
   compares patchers by identity) and loads again: two copies in RAM and
   VRAM. The backend therefore wraps ``comfy.sd.load_checkpoint_guess_config``
   so that a call for a checkpoint kiln holds, with the arguments the loader
   nodes use, returns the warmed outputs.
3. Unloading one model unloads that model. ``unload_all_models()`` is
   ``free_memory(1e30, get_torch_device())``: every model on the device. The
   backend calls ``free_memory(1e30, device, keep_loaded=...)`` with every
   loaded model that is not (a clone of) one of the unloaded checkpoint's
   patchers, and drops the executor's output cache so that no cached node
   output keeps the unloaded weights alive.

NOT RUN against a real ComfyUI on a GPU yet (docs/COMFYUI_ADAPTER.md says
what was and what is to be run).
"""

import asyncio
import inspect
import logging
import os
import sys
import threading

from kiln_worker import protocol as p

from .adapter import Backend, Interrupted

# The arguments with which ComfyUI's checkpoint loader nodes call
# comfy.sd.load_checkpoint_guess_config (nodes.py CheckpointLoaderSimple);
# only a call like it may be answered with the warmed outputs.
# The client id kiln's runs are executed for: ComfyUI reports node progress
# only to a client.
KILN_CLIENT_ID = "kiln"

_WARM_ARGS = {"output_vae": True, "output_clip": True, "output_clipvision": False, "output_model": True}


class ComfyModules:
    """The ComfyUI modules the backend uses: ``folder_paths``, ``nodes``,
    ``execution``, ``mm`` (``comfy.model_management``), ``sd``
    (``comfy.sd``) and ``utils`` (``comfy.utils``, for the progress hook;
    may be None)."""

    def __init__(self, folder_paths, nodes, execution, mm, sd, utils=None):
        self.folder_paths = folder_paths
        self.nodes = nodes
        self.execution = execution
        self.mm = mm
        self.sd = sd
        self.utils = utils


class _ServerStub:
    """The bits of ComfyUI's PromptServer that the executor calls."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.on_progress = None

    def send_sync(self, event, data, sid=None):
        cb = self.on_progress
        if cb is None or not isinstance(data, dict):
            return
        if event == "executing" and data.get("node") is not None:
            cb(str(data["node"]), 0, 0)
        elif event == "progress":
            cb(str(data.get("node")), int(data.get("value", 0)), int(data.get("max", 0)))

    def queue_updated(self):
        pass


class ComfyUIBackend(Backend):
    """Drives ComfyUI in-process: its executor, folders and model management."""

    def __init__(self, comfy, models_dir):
        self.comfy = comfy
        self.models_dir = os.path.abspath(models_dir)  # kiln-owned folder of links
        self.server = _ServerStub()
        self.executor = comfy.execution.PromptExecutor(self.server)
        self.mu = threading.Lock()
        # ComfyUI's model management and executor are driven from one
        # thread in ComfyUI (its prompt worker); loads and unloads arrive
        # here on their own threads while a prompt may run. They wait for
        # it: free_memory or an executor reset in the middle of a prompt
        # would pull weights or cached outputs from under it. interrupt
        # and vram_used do not take it.
        self.comfy_lock = threading.RLock()
        self.warm = {}  # link path → outputs of load_checkpoint_guess_config
        _clear_links(self.models_dir)
        self._original_load = _install_checkpoint_hook(comfy.sd, self)
        if comfy.utils is not None:
            # Sampler steps reach a server only through this global hook,
            # which ComfyUI's main.py installs (hijack_progress); kiln runs
            # no main.py, so it installs its own.
            comfy.utils.set_progress_bar_global_hook(self._progress_hook)

    @classmethod
    def from_root(cls, comfy_root, models_dir, comfy_args=()):
        """Import ComfyUI from ``comfy_root`` and its built-in extra nodes.
        ``comfy_args`` are ComfyUI's own command-line flags (comfy/cli_args.py
        parses sys.argv only once comfy.options.enable_args_parsing ran,
        as main.py does)."""
        # ComfyUI logs through `logging` (main.py sets it up); at INFO, as
        # there, on stderr, which kiln collects line by line.
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
        sys.path.insert(0, comfy_root)
        os.chdir(comfy_root)
        sys.argv = sys.argv[:1] + list(comfy_args)
        if comfy_args:
            import comfy.options
            comfy.options.enable_args_parsing()
        import folder_paths  # noqa: E402  (ComfyUI modules)
        import execution
        import nodes
        import comfy.model_management as mm
        import comfy.sd as sd
        import comfy.utils as utils
        if hasattr(nodes, "init_extra_nodes"):
            # A coroutine since ComfyUI made node loading async (main.py runs it).
            # Not the API nodes (paid cloud services), where ComfyUI has them.
            kw = {"init_api_nodes": False} if "init_api_nodes" in inspect.signature(nodes.init_extra_nodes).parameters else {}
            r = nodes.init_extra_nodes(**kw)
            if inspect.iscoroutine(r):
                asyncio.run(r)
        return cls(ComfyModules(folder_paths, nodes, execution, mm, sd, utils), models_dir)

    # -- node specs --------------------------------------------------------

    def node_specs(self):
        out = {}
        for cls in self.comfy.nodes.NODE_CLASS_MAPPINGS:
            try:
                out[cls] = node_info(self.comfy.nodes, cls)
            except Exception:
                out[cls] = {"name": cls}
        return out

    # -- models ------------------------------------------------------------

    def _link(self, folder, name):
        return os.path.join(self.models_dir, folder, name)

    def register_model(self, folder, name, path):
        link = self._link(folder, name)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(path, link)
        d = os.path.join(self.models_dir, folder)
        fp = self.comfy.folder_paths
        try:
            # First in the folder's list: a file of the same name in
            # ComfyUI's own models folder must not shadow kiln's.
            fp.add_model_folder_path(folder, d, is_default=True)
        except TypeError:  # ComfyUI before is_default
            fp.add_model_folder_path(folder, d)
        got = fp.get_full_path(folder, name)
        if got != link:
            raise p.WorkerError(p.FAILED, "register %s/%s: ComfyUI resolves it to %r, not kiln's %s"
                                % (folder, name, got, link))

    def load_model(self, folder, name):
        with self.comfy_lock:
            return self._load_model(folder, name)

    def _load_model(self, folder, name):
        fp, mm = self.comfy.folder_paths, self.comfy.mm
        path = fp.get_full_path(folder, name)
        before = mm.get_total_memory() - mm.get_free_memory()
        if folder == "checkpoints":
            # As CheckpointLoaderSimple.load_checkpoint calls it (nodes.py),
            # through the unwrapped function: the hook answers the node's
            # later calls with these outputs.
            out = self._original_load(path, output_vae=True, output_clip=True,
                                      embedding_directory=fp.get_folder_paths("embeddings"))
            with self.mu:
                self.warm[os.path.abspath(path)] = out
            mm.load_models_gpu([out[0]])
        return max(0, mm.get_total_memory() - mm.get_free_memory() - before) or os.path.getsize(path)

    def warmed(self, path):
        """The warmed outputs for a checkpoint path, or None."""
        with self.mu:
            return self.warm.get(os.path.abspath(path))

    def unload_model(self, folder, name):
        with self.comfy_lock:
            self._unload_model(folder, name)

    def _unload_model(self, folder, name):
        mm = self.comfy.mm
        link = self._link(folder, name)
        with self.mu:
            out = self.warm.pop(link, None)
        patchers = _patchers(out)
        if patchers:
            keep = [lm for lm in list(mm.current_loaded_models) if not _is_ours(lm, patchers)]
            mm.free_memory(1e30, mm.get_torch_device(), keep_loaded=keep)
        # The executor's cache may hold the loader node's outputs (or, for
        # a model that was not warmed, the only references to it): drop it,
        # or the unloaded weights stay in memory and a later prompt reuses
        # them behind kiln's back. Warmed checkpoints come back from the
        # hook at no cost.
        self._reset_executor()
        del out, patchers
        if os.path.lexists(link):
            os.unlink(link)
        mm.soft_empty_cache()

    def _reset_executor(self):
        if hasattr(self.executor, "reset"):
            self.executor.reset()
        else:
            self.executor = self.comfy.execution.PromptExecutor(self.server)

    # -- runs --------------------------------------------------------------

    def _progress_hook(self, value, total, preview_image=None, prompt_id=None, node_id=None):
        """comfy.utils' progress-bar hook (main.py hijack_progress has the
        same signature): one kiln progress frame a step. Older ComfyUI
        passes no node_id: the node executing is the executor's
        last_node_id."""
        node = node_id if node_id is not None else self.server.last_node_id
        self.server.send_sync("progress", {"value": value, "max": total, "node": node, "prompt_id": prompt_id},
                              self.server.client_id)
        # As main.py's hook does: a cancel stops the sampler at this step
        # rather than at the next node.
        self.comfy.mm.throw_exception_if_processing_interrupted()

    def execute(self, prompt, prompt_id, output_dir, on_progress):
        with self.comfy_lock:
            return self._execute(prompt, prompt_id, output_dir, on_progress)

    def _execute(self, prompt, prompt_id, output_dir, on_progress):
        fp, mm, nodes = self.comfy.folder_paths, self.comfy.mm, self.comfy.nodes
        job_dir = os.path.join(output_dir, prompt_id)
        fp.set_output_directory(job_dir)
        self.server.on_progress = on_progress
        try:
            outputs = [nid for nid, n in prompt.items()
                       if getattr(nodes.NODE_CLASS_MAPPINGS.get(n["class_type"]), "OUTPUT_NODE", False)]
            # The executor sends "executing" (and sets last_node_id) only
            # for a client (execution.py: `if server.client_id is not None`).
            self.executor.execute(prompt, prompt_id, {"client_id": KILN_CLIENT_ID}, outputs)
        finally:
            self.server.on_progress = None
        # The step hook consumes the interrupt flag when it raises
        # (throw_exception_if_processing_interrupted); the executor then
        # records execution_interrupted.
        interrupted = any(ev == "execution_interrupted" for ev, _ in self.executor.status_messages)
        if mm.processing_interrupted() or interrupted:
            mm.interrupt_current_processing(False)
            raise Interrupted()
        if not self.executor.success:
            raise RuntimeError("ComfyUI execution failed: %s" % (self.executor.status_messages[-1:],))
        result = []
        for nid, ui in self.executor.history_result.get("outputs", {}).items():
            for img in ui.get("images", []):
                sub = "/".join(s for s in (prompt_id, img.get("subfolder", "")) if s)
                result.append({"node": nid, "filename": img["filename"], "subfolder": sub,
                               "type": img.get("type", "output"), "width": 0, "height": 0})
        return result

    def interrupt(self):
        self.comfy.mm.interrupt_current_processing(True)

    def vram_used(self):
        mm = self.comfy.mm
        try:
            return int(mm.get_total_memory() - mm.get_free_memory())
        except Exception:
            return 0


def _install_checkpoint_hook(sd, backend):
    """Wrap ``sd.load_checkpoint_guess_config`` so that loader nodes get the
    backend's warmed outputs; return the unwrapped function."""
    original = getattr(sd.load_checkpoint_guess_config, "kiln_original", sd.load_checkpoint_guess_config)
    sig = inspect.signature(original)

    def load_checkpoint_guess_config(ckpt_path, *args, **kwargs):
        out = backend.warmed(ckpt_path) if isinstance(ckpt_path, (str, os.PathLike)) else None
        if out is not None and _warm_call(sig, ckpt_path, args, kwargs):
            return out
        return original(ckpt_path, *args, **kwargs)

    load_checkpoint_guess_config.kiln_original = original
    load_checkpoint_guess_config.__doc__ = original.__doc__
    sd.load_checkpoint_guess_config = load_checkpoint_guess_config
    return original


def _warm_call(sig, ckpt_path, args, kwargs):
    """Whether a call asks for what the warm load built: MODEL, CLIP and
    VAE, no CLIP vision, default model options."""
    try:
        bound = sig.bind(ckpt_path, *args, **kwargs)
    except TypeError:
        return False
    bound.apply_defaults()
    a = bound.arguments
    for k, want in _WARM_ARGS.items():
        if k in a and bool(a[k]) != want:
            return False
    return not a.get("model_options") and not a.get("te_model_options")


def _patchers(out):
    """The ModelPatchers of load_checkpoint_guess_config's outputs: the
    MODEL, and the CLIP's and VAE's ``patcher``."""
    if not out:
        return []
    found = [out[0]] + [getattr(o, "patcher", None) for o in out[1:3]]
    return [x for x in found if x is not None]


def _is_ours(loaded, patchers):
    """Whether a model_management.LoadedModel is one of the patchers or a
    clone of one (a LoRA or sampler patch clones the checkpoint's MODEL;
    ModelPatcher.is_clone: same underlying model)."""
    m = loaded.model  # a weakref's target; None when collected
    if m is None:
        return False
    for x in patchers:
        if m is x:
            return True
        is_clone = getattr(m, "is_clone", None)
        if is_clone is not None and is_clone(x):
            return True
    return False


def _clear_links(models_dir):
    """Remove the symlinks a previous adapter left in its own folder: they
    name descriptors of a dead process (/proc/self/fd/<n> would resolve to
    whatever this process has open under that number)."""
    if not os.path.isdir(models_dir):
        return
    for root, _dirs, files in os.walk(models_dir):
        for f in files:
            path = os.path.join(root, f)
            if os.path.islink(path):
                os.unlink(path)


def node_info(nodes, cls):
    """The /object_info entry of node class ``cls``, the shape PROTOCOL.md
    documents. ComfyUI builds it in a function local to
    ``server.PromptServer.__init__`` (``node_info``), which no module
    attribute reaches; v3 nodes build it themselves (``GET_NODE_INFO_V1``)."""
    c = nodes.NODE_CLASS_MAPPINGS[cls]
    v1 = getattr(c, "GET_NODE_INFO_V1", None)
    if v1 is not None:
        return v1()
    inputs = c.INPUT_TYPES()
    outputs = list(getattr(c, "RETURN_TYPES", ()))
    names = getattr(c, "RETURN_NAMES", None)
    display = getattr(nodes, "NODE_DISPLAY_NAME_MAPPINGS", {}).get(cls, cls)
    return {
        "input": inputs,
        "input_order": {k: list(v.keys()) for k, v in inputs.items() if isinstance(v, dict)},
        "output": outputs,
        "output_is_list": list(getattr(c, "OUTPUT_IS_LIST", [False] * len(outputs))),
        "output_name": list(names) if names else outputs,
        "name": cls,
        "display_name": display,
        "description": getattr(c, "DESCRIPTION", ""),
        "python_module": getattr(c, "RELATIVE_PYTHON_MODULE", "nodes"),
        "category": getattr(c, "CATEGORY", "sd"),
        "output_node": bool(getattr(c, "OUTPUT_NODE", False)),
    }
