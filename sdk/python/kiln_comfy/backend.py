"""ComfyUIBackend: the adapter's backend inside a ComfyUI installation.

NOT VERIFIED in kiln's CI: no ComfyUI installation was available where this
was written. It targets ComfyUI's module layout as of 2024-2025
(``folder_paths``, ``execution.PromptExecutor``, ``nodes.NODE_CLASS_MAPPINGS``,
``comfy.model_management``); see docs/COMFYUI_ADAPTER.md for what each call
relies on.
"""

import os
import sys

from .adapter import Backend, Interrupted


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

    def __init__(self, comfy_root, models_dir):
        sys.path.insert(0, comfy_root)
        os.chdir(comfy_root)
        import folder_paths  # noqa: E402  (ComfyUI modules)
        import execution
        import nodes
        import comfy.model_management as mm
        self.folder_paths, self.execution, self.nodes, self.mm = folder_paths, execution, nodes, mm
        if hasattr(nodes, "init_extra_nodes"):
            nodes.init_extra_nodes()
        self.models_dir = models_dir  # kiln-owned folder of links, one per loaded model
        self.server = _ServerStub()
        self.executor = execution.PromptExecutor(self.server)
        self.loaded = {}

    def node_specs(self):
        import server  # ComfyUI's server module has node_info()
        info = getattr(server.PromptServer, "node_info", None)
        out = {}
        for cls in self.nodes.NODE_CLASS_MAPPINGS:
            try:
                out[cls] = info(None, cls) if info else {"name": cls}
            except Exception:
                out[cls] = {"name": cls}
        return out

    def register_model(self, folder, name, path):
        d = os.path.join(self.models_dir, folder)
        link = os.path.join(d, name)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(path, link)
        self.folder_paths.add_model_folder_path(folder, d)

    def load_model(self, folder, name):
        # Warm ComfyUI's model management the way a loader node would.
        path = self.folder_paths.get_full_path(folder, name)
        before = self.mm.get_total_memory() - self.mm.get_free_memory()
        if folder == "checkpoints":
            import comfy.sd
            out = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True)
            self.mm.load_models_gpu([out[0]])
            self.loaded[(folder, name)] = out
        return max(0, self.mm.get_total_memory() - self.mm.get_free_memory() - before) or os.path.getsize(path)

    def unload_model(self, folder, name):
        self.loaded.pop((folder, name), None)
        self.mm.unload_all_models()
        self.mm.soft_empty_cache()
        link = os.path.join(self.models_dir, folder, name)
        if os.path.lexists(link):
            os.unlink(link)

    def execute(self, prompt, prompt_id, output_dir, on_progress):
        job_dir = os.path.join(output_dir, prompt_id)
        self.folder_paths.set_output_directory(job_dir)
        self.server.on_progress = on_progress
        try:
            outputs = [nid for nid, n in prompt.items()
                       if getattr(self.nodes.NODE_CLASS_MAPPINGS.get(n["class_type"]), "OUTPUT_NODE", False)]
            self.executor.execute(prompt, prompt_id, {}, outputs)
        finally:
            self.server.on_progress = None
        if self.mm.processing_interrupted():
            self.mm.interrupt_current_processing(False)
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
        self.mm.interrupt_current_processing(True)

    def vram_used(self):
        try:
            return int(self.mm.get_total_memory() - self.mm.get_free_memory())
        except Exception:
            return 0
