"""Package kiln_worker_torch is kiln-worker-torch, a PyTorch worker for kiln.

It maps model files read-only and wraps them with ``torch.frombuffer`` (no
copy on CPU; one host-to-device copy on CUDA), reports real memory, and runs
the sampling nodes of ComfyUI workflows with real tensor compute on the loaded
weights. The compute is a STAND-IN for the diffusion network: per sampler
step it runs a stack of matmuls over the latent tokens, sized by model family
and resolution, using weights taken from the loaded model; the images are
not meaningful, the memory traffic and timings are real. See
docs/python-worker.md.
"""
