#!/usr/bin/env python3
"""Write a random-weight SD1.5 checkpoint with ComfyUI's own model classes.

NOT YET RUN: prepared for scripts/comfyui-gpu-e2e.sh on a GPU machine
(docs/COMFYUI_ADAPTER.md). Run it with the ComfyUI installation's python:

    python scripts/comfyui_random_checkpoint.py --comfyui DIR --out FILE [--dtype fp16]

The architecture is ComfyUI's: ``comfy.supported_models.SD15`` builds the
UNet (``get_model``), its ``clip_target()`` the CLIP-L text encoder, and
``comfy.ldm.models.autoencoder.AutoencoderKL`` with the VAE configuration
``comfy.sd.VAE`` uses for SD1.x. ``BaseModel.state_dict_for_saving`` lays
the three out with the prefixes of an SD1.5 checkpoint (as ComfyUI's
CheckpointSave does), so ``load_checkpoint_guess_config`` detects it as
SD15 from its keys. Weights are drawn from N(0, 0.02): the image is noise,
the work (shapes, bytes, kernels) is that of a real SD1.5 txt2img.
"""

import argparse
import os
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfyui", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "fp32"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    root = os.path.abspath(args.comfyui)
    sys.argv = sys.argv[:1]  # comfy/cli_args.py must see no arguments of ours
    sys.path.insert(0, root)
    os.chdir(root)

    import torch
    import comfy.supported_models as sm
    import comfy.utils
    from comfy.ldm.models.autoencoder import AutoencoderKL

    torch.manual_seed(args.seed)
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32

    def randomize(module):
        with torch.no_grad():
            for p in module.parameters():
                p.normal_(0.0, 0.02)
        return module

    # The SD1.5 UNet config as ComfyUI writes it out in full
    # (comfy/model_detection.py unet_config_from_diffusers_unet, "SD15"),
    # over comfy/supported_models.py SD15.unet_config.
    unet_config = dict(sm.SD15.unet_config)
    unet_config.update({
        "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
        "legacy": False, "adm_in_channels": None, "dtype": torch.float32, "in_channels": 4,
        "model_channels": 320, "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
        "context_dim": 768, "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "use_temporal_attention": False, "use_temporal_resblock": False,
    })
    mc = sm.SD15(unet_config)
    base = mc.get_model({}, "model.diffusion_model.", device="cpu")
    randomize(base.diffusion_model)

    target = mc.clip_target()
    clip = randomize(target.clip(device="cpu", dtype=torch.float32))

    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    vae = randomize(AutoencoderKL(ddconfig=ddconfig, embed_dim=4))

    sd = base.state_dict_for_saving(clip.state_dict(), vae.state_dict(), None)
    sd = {k: v.to(dtype).contiguous() for k, v in sd.items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    comfy.utils.save_torch_file(sd, args.out, metadata={"kiln.family": "sd15", "kiln.random_weights": "1"})
    n = sum(v.numel() for v in sd.values())
    print("wrote %s: %d tensors, %d parameters, %d bytes" % (args.out, len(sd), n, os.path.getsize(args.out)))

    # Read it back as CheckpointLoaderSimple would, to fail here rather than
    # inside kiln if ComfyUI does not recognise it.
    import comfy.sd
    out = comfy.sd.load_checkpoint_guess_config(args.out, output_vae=True, output_clip=True)
    print("ComfyUI detects: %s" % type(out[0].model.model_config).__name__)
    if type(out[0].model.model_config).__name__ != "SD15":
        sys.exit("the checkpoint is not detected as SD15")


if __name__ == "__main__":
    main()
