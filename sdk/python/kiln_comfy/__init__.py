"""Package kiln_comfy runs ComfyUI as a kiln worker.

:class:`~kiln_comfy.adapter.ComfyAdapter` is the protocol layer: it maps
kiln's hello, load, unload, run, cancel and stats onto a
:class:`~kiln_comfy.adapter.Backend`. :class:`~kiln_comfy.backend.ComfyUIBackend`
is the backend that drives a ComfyUI installation (its executor, model
folders and model management) through the modules of a
:class:`~kiln_comfy.backend.ComfyModules`, which tests fake;
:mod:`kiln_comfy.held` keeps each loaded model's file open so that
ComfyUI's path to it outlives the L2 lease. Start it with
``sdk/python/kiln-worker-comfy`` (configs/comfyui-gpu.yaml). See
docs/COMFYUI_ADAPTER.md.
"""
