"""A fake of the parts of ComfyUI that kiln_comfy's backend calls.

Each function keeps the name, signature and the behaviour the backend
depends on of the ComfyUI function it stands for (read from ComfyUI's
source; see docs/COMFYUI_ADAPTER.md), with tensors replaced by byte counts
and without torch:

* ``mm`` — comfy/model_management.py: ``current_loaded_models`` of
  ``LoadedModel`` (weak reference to a patcher, ``__eq__`` by patcher
  identity), ``load_models_gpu`` (a patcher already loaded is not loaded
  again), ``free_memory(memory_required, device, keep_loaded=[])``,
  ``unload_all_models()`` = ``free_memory(1e30, get_torch_device())``,
  ``get_total_memory``/``get_free_memory``, ``soft_empty_cache``, the
  interrupt flag.
* ``sd`` — comfy/sd.py ``load_checkpoint_guess_config``: reads the file by
  path, returns a new (MODEL patcher, CLIP, VAE, None) per call.
* ``folder_paths`` — folder_paths.py ``add_model_folder_path`` (appends,
  or prepends with is_default), ``get_full_path`` (first folder where the
  name ``isfile``; a dangling link is skipped), ``get_folder_paths``.
* ``nodes`` — nodes.py ``CheckpointLoaderSimple.load_checkpoint`` (calls
  ``comfy.sd.load_checkpoint_guess_config`` through the module attribute on
  every execution) and toy KSampler/VAEDecode/SaveImage/EmptyLatentImage.
* ``execution`` — execution.py ``PromptExecutor``: an output cache keyed by
  each node's input signature that keeps only the nodes of the current
  prompt (comfy_execution/caching.py ``BasicCache.clean_unused``);
  ``executing`` messages only for a client (``client_id``); ``reset()``.
* ``utils`` — comfy/utils.py ``set_progress_bar_global_hook``; the toy
  KSampler reports each step through it as ``ProgressBar`` does.
"""

import os
import threading
import time
import types
import weakref

GiB = 1 << 30


class Device:
    """A torch.device stand-in."""

    def __init__(self, type_):
        self.type = type_

    def __eq__(self, other):
        return isinstance(other, Device) and other.type == self.type

    def __hash__(self):
        return hash(self.type)


class Weights:
    """A torch module stand-in: ``nbytes`` of weights, on ``device``."""

    def __init__(self, nbytes, tag):
        self.nbytes = nbytes
        self.tag = tag


class ModelPatcher:
    """comfy/model_patcher.py ModelPatcher: ``model`` is the shared module,
    clones share it (``is_clone``)."""

    def __init__(self, model, mm):
        self.model = model
        self.mm = mm
        self.load_device = mm.get_torch_device()
        self.offload_device = Device("cpu")
        self.parent = None
        self.loaded = 0

    def clone(self):
        n = ModelPatcher(self.model, self.mm)
        n.parent = self
        return n

    def is_clone(self, other):
        return hasattr(other, "model") and self.model is other.model

    def model_size(self):
        return self.model.nbytes

    def loaded_size(self):
        return self.loaded

    def model_patches_models(self):
        return []

    def partially_load(self, device, extra_memory=0, force_patch_weights=False):
        self.loaded = self.model.nbytes
        return self.loaded

    def partially_unload(self, device, memory_to_free=0):
        return 0

    def detach(self, unpatch_all=True):
        self.loaded = 0


class CLIP:
    def __init__(self, patcher):
        self.patcher = patcher


class VAE:
    def __init__(self, patcher):
        self.patcher = patcher


def make_mm(total=1024 * GiB):
    """comfy.model_management."""
    mm = types.ModuleType("comfy.model_management")
    mm.current_loaded_models = []
    mm.interrupt_processing = False
    mm.empty_cache_calls = 0
    gpu = Device("cuda")

    class LoadedModel:
        def __init__(self, model):
            self._model = weakref.ref(model)
            self.device = model.load_device
            self.currently_used = True

        @property
        def model(self):
            return self._model()

        def model_memory(self):
            return self.model.model_size()

        def model_offloaded_memory(self):
            return self.model.model_size() - self.model.loaded_size()

        def model_load(self, lowvram_model_memory=0, force_patch_weights=False):
            self.model.partially_load(self.device, lowvram_model_memory)

        def model_unload(self, memory_to_free=None, unpatch_weights=True):
            self.model.detach(unpatch_weights)
            return True

        def __eq__(self, other):
            return self.model is other.model

        def is_dead(self):
            return False

    mm.LoadedModel = LoadedModel

    def get_torch_device():
        return gpu

    def get_total_memory(dev=None, torch_total_too=False):
        return (total, total) if torch_total_too else total

    def used():
        return sum(lm.model.loaded_size() for lm in mm.current_loaded_models if lm.model is not None)

    def get_free_memory(dev=None, torch_free_too=False):
        free = total - used()
        return (free, 0) if torch_free_too else free

    def free_memory(memory_required, device, keep_loaded=[]):
        can_unload, unloaded = [], []
        for i in range(len(mm.current_loaded_models) - 1, -1, -1):
            shift = mm.current_loaded_models[i]
            if shift.device == device and shift not in keep_loaded and not shift.is_dead():
                can_unload.append((-shift.model_offloaded_memory(), shift.model_memory(), i))
                shift.currently_used = False
        for x in sorted(can_unload):
            i = x[-1]
            if get_free_memory(device) > memory_required:
                break
            if mm.current_loaded_models[i].model_unload(memory_required - get_free_memory(device)):
                unloaded.append(i)
        out = [mm.current_loaded_models.pop(i) for i in sorted(unloaded, reverse=True)]
        if out:
            soft_empty_cache()
        return out

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        for x in models:
            lm = LoadedModel(x)
            if lm in mm.current_loaded_models:
                mm.current_loaded_models[mm.current_loaded_models.index(lm)].currently_used = True
                continue
            lm.model_load()
            mm.current_loaded_models.insert(0, lm)

    def unload_all_models():
        free_memory(1e30, get_torch_device())

    def soft_empty_cache(force=False):
        mm.empty_cache_calls += 1

    def cleanup_models_gc():
        pass

    def interrupt_current_processing(value=True):
        mm.interrupt_processing = value

    def processing_interrupted():
        return mm.interrupt_processing

    class InterruptProcessingException(Exception):
        pass

    mm.InterruptProcessingException = InterruptProcessingException

    def throw_exception_if_processing_interrupted():
        if mm.interrupt_processing:
            mm.interrupt_processing = False
            raise InterruptProcessingException()

    for f in (get_torch_device, get_total_memory, get_free_memory, free_memory, load_models_gpu,
              unload_all_models, soft_empty_cache, cleanup_models_gc, interrupt_current_processing,
              processing_interrupted, throw_exception_if_processing_interrupted):
        setattr(mm, f.__name__, f)
    return mm


def make_sd(mm):
    """comfy.sd: a checkpoint of N bytes on disk is a MODEL of N GiB, a CLIP
    and a VAE of 1 GiB each."""
    sd = types.ModuleType("comfy.sd")
    sd.calls = []

    def load_checkpoint_guess_config(ckpt_path, output_vae=True, output_clip=True, output_clipvision=False,
                                     embedding_directory=None, output_model=True, model_options={},
                                     te_model_options={}):
        with open(ckpt_path, "rb") as f:  # comfy.utils.load_torch_file(ckpt_path)
            data = f.read()
        sd.calls.append(ckpt_path)
        tag = os.path.basename(ckpt_path)
        model = ModelPatcher(Weights(len(data) * GiB, tag + ":unet"), mm) if output_model else None
        clip = CLIP(ModelPatcher(Weights(GiB, tag + ":clip"), mm)) if output_clip else None
        vae = VAE(ModelPatcher(Weights(GiB, tag + ":vae"), mm)) if output_vae else None
        return (model, clip, vae, None)

    sd.load_checkpoint_guess_config = load_checkpoint_guess_config
    return sd


def make_folder_paths():
    """folder_paths."""
    fp = types.ModuleType("folder_paths")
    fp.folder_names_and_paths = {"checkpoints": (["/nonexistent/ComfyUI/models/checkpoints"], set()),
                                 "loras": (["/nonexistent/ComfyUI/models/loras"], set()),
                                 "embeddings": (["/nonexistent/ComfyUI/models/embeddings"], set())}
    fp.output_directory = "/nonexistent/output"

    def add_model_folder_path(folder_name, full_folder_path, is_default=False):
        if folder_name in fp.folder_names_and_paths:
            paths = fp.folder_names_and_paths[folder_name][0]
            if full_folder_path in paths:
                if is_default and paths[0] != full_folder_path:
                    paths.remove(full_folder_path)
                    paths.insert(0, full_folder_path)
            elif is_default:
                paths.insert(0, full_folder_path)
            else:
                paths.append(full_folder_path)
        else:
            fp.folder_names_and_paths[folder_name] = ([full_folder_path], set())

    def get_folder_paths(folder_name):
        return fp.folder_names_and_paths[folder_name][0][:]

    def get_full_path(folder_name, filename):
        if folder_name not in fp.folder_names_and_paths:
            return None
        filename = os.path.relpath(os.path.join("/", filename), "/")
        for x in fp.folder_names_and_paths[folder_name][0]:
            full_path = os.path.join(x, filename)
            if os.path.isfile(full_path):
                return full_path
            elif os.path.islink(full_path):
                pass  # ComfyUI logs "exists but doesn't link anywhere, skipping."
        return None

    def set_output_directory(output_dir):
        fp.output_directory = output_dir

    def get_output_directory():
        return fp.output_directory

    for f in (add_model_folder_path, get_folder_paths, get_full_path, set_output_directory, get_output_directory):
        setattr(fp, f.__name__, f)
    return fp


def make_utils():
    """comfy.utils."""
    utils = types.ModuleType("comfy.utils")
    utils.PROGRESS_BAR_HOOK = None

    def set_progress_bar_global_hook(function):
        utils.PROGRESS_BAR_HOOK = function

    utils.set_progress_bar_global_hook = set_progress_bar_global_hook
    return utils


def make_nodes(fp, sd, mm, utils, executing):
    """nodes: the loader as nodes.py has it, and toys for the rest."""
    nodes = types.ModuleType("nodes")
    comfy = types.SimpleNamespace(sd=sd)  # nodes.py: import comfy.sd

    class CheckpointLoaderSimple:
        @classmethod
        def INPUT_TYPES(s):
            return {"required": {"ckpt_name": (["a.safetensors"], {"tooltip": "The name of the checkpoint."})}}
        RETURN_TYPES = ("MODEL", "CLIP", "VAE")
        FUNCTION = "load_checkpoint"
        CATEGORY = "loaders"
        DESCRIPTION = "Loads a diffusion model checkpoint."

        def load_checkpoint(self, ckpt_name):
            ckpt_path = fp.get_full_path("checkpoints", ckpt_name)
            out = comfy.sd.load_checkpoint_guess_config(ckpt_path, output_vae=True, output_clip=True,
                                                        embedding_directory=fp.get_folder_paths("embeddings"))
            return out[:3]

    class LoraLoaderModelOnly:
        @classmethod
        def INPUT_TYPES(s):
            return {"required": {"model": ("MODEL",), "lora_name": ([],), "strength_model": ("FLOAT", {})}}
        RETURN_TYPES = ("MODEL",)
        FUNCTION = "load_lora_model_only"

        def load_lora_model_only(self, model, lora_name, strength_model):
            with open(fp.get_full_path("loras", lora_name), "rb") as f:  # comfy.utils.load_torch_file
                f.read()
            return (model.clone(),)

    class EmptyLatentImage:
        @classmethod
        def INPUT_TYPES(s):
            return {"required": {"width": ("INT", {}), "height": ("INT", {}), "batch_size": ("INT", {})}}
        RETURN_TYPES = ("LATENT",)
        FUNCTION = "generate"

        def generate(self, width, height, batch_size=1):
            return ({"samples": (batch_size, height, width)},)

    class KSampler:
        used = []
        started = threading.Event()

        @classmethod
        def INPUT_TYPES(s):
            return {"required": {"model": ("MODEL",), "latent_image": ("LATENT",), "steps": ("INT", {}),
                                 "seed": ("INT", {})}}
        RETURN_TYPES = ("LATENT",)
        FUNCTION = "sample"

        def sample(self, model, latent_image, steps, seed):
            mm.load_models_gpu([model])
            KSampler.started.set()
            KSampler.used.append(model)
            for i in range(1, int(steps) + 1):  # comfy.utils.ProgressBar.update_absolute
                if utils.PROGRESS_BAR_HOOK is not None:
                    utils.PROGRESS_BAR_HOOK(i, int(steps), None, node_id=executing[0])
                if int(steps) > 100:
                    time.sleep(0.001)
            return (latent_image,)

    class VAEDecode:
        @classmethod
        def INPUT_TYPES(s):
            return {"required": {"samples": ("LATENT",), "vae": ("VAE",)}}
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "decode"

        def decode(self, samples, vae):
            mm.load_models_gpu([vae.patcher])
            return (samples,)

    class SaveImage:
        @classmethod
        def INPUT_TYPES(s):
            return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {})}}
        RETURN_TYPES = ()
        FUNCTION = "save_images"
        OUTPUT_NODE = True

        def save_images(self, images, filename_prefix="ComfyUI"):
            sub, _, base = filename_prefix.rpartition("/")
            return {"ui": {"images": [{"filename": base + "_00001_.png", "subfolder": sub, "type": "output"}]}}

    nodes.NODE_CLASS_MAPPINGS = {c.__name__: c for c in (CheckpointLoaderSimple, LoraLoaderModelOnly,
                                                           EmptyLatentImage, KSampler, VAEDecode, SaveImage)}
    nodes.NODE_DISPLAY_NAME_MAPPINGS = {"CheckpointLoaderSimple": "Load Checkpoint"}
    return nodes


def make_execution(nodes, mm, executing):
    """execution: PromptExecutor with an input-signature output cache."""
    execution = types.ModuleType("execution")

    class PromptExecutor:
        def __init__(self, server, cache_type=False, cache_size=None):
            self.server = server
            self.reset()

        def reset(self):
            self.cache = {}  # input signature → outputs (HierarchicalCache)
            self.status_messages = []
            self.success = True

        def _signature(self, prompt, nid):
            n = prompt[nid]
            parts = [n["class_type"]]
            for k in sorted(n["inputs"]):
                v = n["inputs"][k]
                parts.append((k, self._signature(prompt, v[0]) + (v[1],) if isinstance(v, list) else v))
            return tuple(parts)

        def execute(self, prompt, prompt_id, extra_data={}, execute_outputs=[]):
            mm.interrupt_processing = False
            self.server.client_id = extra_data.get("client_id")
            keys = {nid: self._signature(prompt, nid) for nid in prompt}
            for k in [k for k in self.cache if k not in keys.values()]:  # clean_unused
                del self.cache[k]
            done, ui_outputs = {}, {}

            def run(nid):
                if nid in done:
                    return done[nid]
                n = prompt[nid]
                args = {}
                for k, v in n["inputs"].items():
                    args[k] = run(v[0])[int(v[1])] if isinstance(v, list) else v
                if keys[nid] in self.cache:
                    done[nid] = self.cache[keys[nid]]
                    return done[nid]
                if self.server.client_id is not None:
                    self.server.last_node_id = nid
                    self.server.send_sync("executing", {"node": nid, "prompt_id": prompt_id}, self.server.client_id)
                executing[0] = nid
                cls = nodes.NODE_CLASS_MAPPINGS[n["class_type"]]
                r = getattr(cls(), cls.FUNCTION)(**args)
                if isinstance(r, dict):
                    ui_outputs[nid] = r["ui"]
                    r = ()
                self.cache[keys[nid]] = done[nid] = r
                return r

            self.status_messages = []
            try:
                for nid in execute_outputs:
                    run(nid)
            except mm.InterruptProcessingException:
                self.success = False
                self.status_messages.append(("execution_interrupted", {"prompt_id": prompt_id}))
            self.history_result = {"outputs": ui_outputs, "meta": {}}
            self.server.last_node_id = None

    execution.PromptExecutor = PromptExecutor
    return execution


def make_comfy():
    """A fresh fake ComfyUI: a kiln_comfy.backend.ComfyModules."""
    from kiln_comfy.backend import ComfyModules
    executing = [None]
    mm = make_mm()
    sd = make_sd(mm)
    fp = make_folder_paths()
    utils = make_utils()
    nodes = make_nodes(fp, sd, mm, utils, executing)
    return ComfyModules(fp, nodes, make_execution(nodes, mm, executing), mm, sd, utils)
