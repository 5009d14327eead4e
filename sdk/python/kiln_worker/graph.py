"""ComfyUI API-format graphs: node order, links, models and sampler sizes.

A workflow is ``{node_id: {"class_type": str, "inputs": {name: value}}}``; an
input whose value is ``[other_node_id, output_index]`` is a link. This module
is the small subset of kiln's ``internal/workflow`` that a Python worker needs:
a dependency order, the models loader nodes name (same folders as kiln), and
the width, height, batch and steps a sampler works on.
"""

from . import protocol as p

DEFAULT_STEPS, DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_BATCH = 20, 512, 512, 1

LOADERS = {
    "CheckpointLoaderSimple": [("ckpt_name", "checkpoints")],
    "CheckpointLoader": [("ckpt_name", "checkpoints")],
    "unCLIPCheckpointLoader": [("ckpt_name", "checkpoints")],
    "ImageOnlyCheckpointLoader": [("ckpt_name", "checkpoints")],
    "LoraLoader": [("lora_name", "loras")],
    "LoraLoaderModelOnly": [("lora_name", "loras")],
    "VAELoader": [("vae_name", "vae")],
    "ControlNetLoader": [("control_net_name", "controlnet")],
    "DiffControlNetLoader": [("control_net_name", "controlnet")],
    "UNETLoader": [("unet_name", "diffusion_models")],
    "CLIPLoader": [("clip_name", "text_encoders")],
    "DualCLIPLoader": [("clip_name1", "text_encoders"), ("clip_name2", "text_encoders")],
    "TripleCLIPLoader": [("clip_name1", "text_encoders"), ("clip_name2", "text_encoders"),
                         ("clip_name3", "text_encoders")],
    "CLIPVisionLoader": [("clip_name", "clip_vision")],
    "UpscaleModelLoader": [("model_name", "upscale_models")],
    "StyleModelLoader": [("style_model_name", "style_models")],
    "UnetLoaderGGUF": [("unet_name", "diffusion_models")],
    "CLIPLoaderGGUF": [("clip_name", "text_encoders")],
    "DualCLIPLoaderGGUF": [("clip_name1", "text_encoders"), ("clip_name2", "text_encoders")],
}

SAMPLERS = {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"}
LATENT_SOURCES = {"EmptyLatentImage", "EmptySD3LatentImage"}
OUTPUT_CLASSES = {"SaveImage", "PreviewImage"}


def is_link(v):
    """True when an input value is a link [node_id, output_index]."""
    # The kernel decodes workflows from JSON, so the index may arrive as a
    # float (0.0): any integral number counts.
    return (isinstance(v, list) and len(v) == 2 and isinstance(v[0], (str, int))
            and not isinstance(v[0], bool) and isinstance(v[1], (int, float)) and not isinstance(v[1], bool)
            and v[1] == int(v[1]))


def _id_key(i):
    return (0, int(i), "") if i.isdigit() else (1, 0, i)


def guess_family(folder, name):
    """Guess a model's family from its folder and name, as kiln does."""
    fixed = {"loras": "lora", "vae": "vae", "controlnet": "controlnet", "upscale_models": "upscaler",
             "text_encoders": "text_encoder", "clip_vision": "clip_vision", "style_models": "style_model"}
    if folder in fixed:
        return fixed[folder]
    n = name.lower()
    for key, fam in (("flux", "flux"), ("sd3", "sd3"), ("xl", "sdxl")):
        if key in n:
            return fam
    return "sd15"


class Node:
    """One node: ``id``, ``class_type`` and ``inputs``."""

    def __init__(self, id_, class_type, inputs):
        self.id, self.class_type, self.inputs = id_, class_type, inputs

    def link(self, name):
        """Return the node id an input links to, or None."""
        v = self.inputs.get(name)
        return str(v[0]) if is_link(v) else None

    def literal(self, name, default):
        """Return an input's literal value (default when absent or linked)."""
        v = self.inputs.get(name, default)
        return default if is_link(v) else v


class Graph:
    """A checked graph with its nodes in dependency order (``order``)."""

    def __init__(self, workflow):
        if not isinstance(workflow, dict) or not workflow:
            raise p.WorkerError(p.FAILED, "workflow is empty or not a map")
        self.nodes = {}
        for nid, raw in workflow.items():
            if not isinstance(raw, dict) or not isinstance(raw.get("class_type"), str):
                raise p.WorkerError(p.FAILED, "node %s: want {class_type, inputs}" % nid)
            inputs = raw.get("inputs") or {}
            if not isinstance(inputs, dict):
                raise p.WorkerError(p.FAILED, "node %s: inputs is not a map" % nid)
            self.nodes[str(nid)] = Node(str(nid), raw["class_type"], inputs)
        self.order = self._sort()

    def _sort(self):
        deps = {}
        for n in self.nodes.values():
            ds = set()
            for name, v in n.inputs.items():
                if is_link(v):
                    if str(v[0]) not in self.nodes:
                        raise p.WorkerError(p.FAILED, "node %s: input %s links to missing node %s" % (n.id, name, v[0]))
                    ds.add(str(v[0]))
            deps[n.id] = ds
        order, done = [], set()
        while len(order) < len(self.nodes):
            ready = sorted((i for i in deps if i not in done and deps[i] <= done), key=_id_key)
            if not ready:
                raise p.WorkerError(p.FAILED, "workflow has a cycle")
            for i in ready:
                done.add(i)
                order.append(self.nodes[i])
        return order

    def models(self):
        """Return [(model_id, node_id, family)] for the loader nodes, deduplicated."""
        out, seen = [], set()
        for n in self.order:
            for inp, folder in LOADERS.get(n.class_type, ()):
                name = n.literal(inp, None)
                if isinstance(name, str) and name:
                    mid = folder + "/" + name
                    if mid not in seen:
                        seen.add(mid)
                        out.append((mid, n.id, guess_family(folder, name)))
        return out

    def upstream(self, node, input_name, want_class=None, depth=0):
        """Follow a link (through single-input pass-through nodes) to a node
        of one of ``want_class``; None when there is none."""
        nid = node.link(input_name)
        while nid is not None and depth < 64:
            n = self.nodes[nid]
            if want_class is None or n.class_type in want_class:
                return n
            nxt = None
            for name in ("latent_image", "samples", "latent", "model", "images", "image", "pixels"):
                nxt = n.link(name)
                if nxt is not None:
                    break
            nid, depth = nxt, depth + 1
        return None

    def model_family(self, node):
        """The family of the checkpoint or diffusion model feeding a node."""
        nid, seen = node.link("model") or node.link("guider"), 0
        while nid is not None and seen < 64:
            n = self.nodes[nid]
            for inp, folder in LOADERS.get(n.class_type, ()):
                if folder in ("checkpoints", "diffusion_models"):
                    name = n.literal(inp, "")
                    if isinstance(name, str) and name:
                        return guess_family(folder, name)
            nid, seen = n.link("model"), seen + 1
        return "sd15"

    def sampler_params(self, node):
        """Return dict(steps, width, height, batch, family) for a sampler node."""
        steps = DEFAULT_STEPS
        if node.class_type == "KSampler":
            steps = _int(node.literal("steps", DEFAULT_STEPS), "steps")
        elif node.class_type == "KSamplerAdvanced":
            total = _int(node.literal("steps", DEFAULT_STEPS), "steps")
            start = _int(node.literal("start_at_step", 0), "start_at_step")
            end = _int(node.literal("end_at_step", 10000), "end_at_step")
            steps = max(min(end, total) - max(start, 0), 0)
        else:
            sid = node.link("sigmas")
            if sid is not None:
                steps = _int(self.nodes[sid].literal("steps", DEFAULT_STEPS), "steps")
        w, h, b = DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_BATCH
        lat = self.upstream(node, "latent_image", LATENT_SOURCES)
        if lat is not None:
            w = _int(lat.literal("width", w), "width")
            h = _int(lat.literal("height", h), "height")
            b = _int(lat.literal("batch_size", b), "batch_size")
        if not (1 <= w <= 16384 and 1 <= h <= 16384 and 1 <= b <= 256 and 0 <= steps <= 10000):
            raise p.WorkerError(p.FAILED, "node %s: size %dx%d batch %d steps %d out of range" % (node.id, w, h, b, steps))
        return {"steps": steps, "width": w, "height": h, "batch": b, "family": self.model_family(node)}


def _int(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
        raise p.WorkerError(p.FAILED, "input %s: want an integer, got %r" % (name, v))
    return int(v)


def check_job_id(job_id):
    """Refuse job ids that are not one safe path segment."""
    if not job_id or job_id in (".", "..") or "/" in job_id or "\\" in job_id or "\0" in job_id \
            or len(job_id) > 255:
        raise p.WorkerError(p.BAD_REQUEST, "run: job_id %r is not a safe directory name" % job_id)


def output_name(node, counters, job_id):
    """Return (subfolder, filename, type) for the next image of a save node,
    named as ComfyUI names them: <prefix>_<NNNNN>_.png."""
    typ, prefix = ("temp", "ComfyUI_temp") if node.class_type == "PreviewImage" else ("output", "ComfyUI")
    pre = node.literal("filename_prefix", prefix)
    if isinstance(pre, str) and pre:
        prefix = pre
    clean = prefix.replace("\\", "/").strip("/")
    parts = [s for s in clean.split("/") if s not in ("", ".")]
    if not parts or ".." in parts or "\0" in clean or prefix.startswith("/"):
        raise p.WorkerError(p.FAILED, "filename_prefix %r leaves the output directory" % prefix)
    key = "/".join(parts)
    counters[key] = counters.get(key, 0) + 1
    sub = "/".join([job_id] + parts[:-1])
    return sub, "%s_%05d_.png" % (parts[-1], counters[key]), typ


# The node classes kiln-worker-sim executes; Python workers that treat the
# ones they do not compute as pass-through advertise the same set (the
# kernel refuses graphs with classes no worker advertises as node:<Class>).
NODE_CLASSES = sorted(set(LOADERS) | SAMPLERS | LATENT_SOURCES | OUTPUT_CLASSES | {
    "CLIPTextEncode", "CLIPTextEncodeSDXL", "CLIPTextEncodeSD3", "CLIPTextEncodeFlux", "RandomNoise",
    "LatentUpscale", "LatentUpscaleBy", "ImageScale", "ImageScaleBy", "ImageScaleToTotalPixels",
    "RepeatLatentBatch", "VAEDecode", "VAEDecodeTiled", "VAEEncode", "ImageUpscaleWithModel", "LoadImage",
    "CLIPSetLastLayer", "ConditioningZeroOut", "ConditioningCombine", "ConditioningConcat",
    "ConditioningAverage", "ConditioningSetArea", "ConditioningSetMask", "ConditioningSetTimestepRange",
    "FluxGuidance", "ControlNetApply", "ControlNetApplyAdvanced", "ControlNetApplySD3",
    "SetUnionControlNetType", "ModelSamplingSD3", "ModelSamplingFlux", "ModelSamplingDiscrete",
    "ModelSamplingAuraFlow", "FreeU", "FreeU_V2", "BasicGuider", "CFGGuider", "DualCFGGuider",
    "KSamplerSelect", "BasicScheduler", "KarrasScheduler", "ExponentialScheduler", "SDTurboScheduler",
    "AlignYourStepsScheduler", "BetaSamplingScheduler", "SplitSigmas", "SamplerEulerAncestral",
    "SamplerDPMPP_2M_SDE", "SamplerDPMPP_SDE", "DisableNoise", "Canny", "ImageInvert",
    "PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline", "PrimitiveBoolean"})
