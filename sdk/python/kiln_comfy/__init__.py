"""Package kiln_comfy runs ComfyUI as a kiln worker.

:class:`~kiln_comfy.adapter.ComfyAdapter` is the protocol layer: it maps
kiln's hello, load, unload, run, cancel and stats onto a
:class:`~kiln_comfy.adapter.Backend`. :class:`~kiln_comfy.backend.ComfyUIBackend`
is the backend that drives a ComfyUI installation (its executor, model
folders and model management); tests use a fake backend. See
docs/COMFYUI_ADAPTER.md.
"""
