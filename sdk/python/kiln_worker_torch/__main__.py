"""``python3 -m kiln_worker_torch``: serve kiln-worker-torch on fd 3."""
from .worker import main

main()
