"""``python3 -m kiln_comfy --comfyui DIR``: serve ComfyUI as a kiln worker on fd 3."""

import argparse
import os
import tempfile

from kiln_worker.server import serve_fd3

from .adapter import ComfyAdapter
from .backend import ComfyUIBackend


def main():
    """Parse arguments, import ComfyUI, serve."""
    ap = argparse.ArgumentParser(prog="kiln-comfy")
    ap.add_argument("--comfyui", required=True, help="ComfyUI installation (the folder with main.py)")
    ap.add_argument("--models-dir", default="", help="folder for kiln's model links (default: a temp dir)")
    args = ap.parse_args()
    models = args.models_dir or tempfile.mkdtemp(prefix="kiln-comfy-models-")
    serve_fd3(ComfyAdapter(ComfyUIBackend(os.path.abspath(args.comfyui), models)))


main()
