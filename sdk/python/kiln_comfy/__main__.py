"""``python3 -m kiln_comfy --comfyui DIR [--models-dir DIR] [ComfyUI args]``: serve ComfyUI
as a kiln worker on fd 3."""

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
    # Arguments after these go to ComfyUI's own parser (comfy/cli_args.py),
    # e.g. --reserve-vram 1 or --disable-smart-memory.
    args, comfy_args = ap.parse_known_args()
    models = os.path.abspath(args.models_dir) if args.models_dir else tempfile.mkdtemp(prefix="kiln-comfy-models-")
    serve_fd3(ComfyAdapter(ComfyUIBackend.from_root(os.path.abspath(args.comfyui), models, comfy_args)))


if __name__ == "__main__":
    main()
