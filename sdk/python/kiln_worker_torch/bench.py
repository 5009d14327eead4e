"""Benchmark: model bytes from L2 (/dev/shm) into torch tensors vs reading
the same safetensors file from disk (L3), in one run.

    /usr/bin/python3 -m kiln_worker_torch.bench --gib 1 --disk-dir /var/tmp

Paths measured, each ending with every tensor's bytes resident and readable:
  l2-map     mmap read-only + torch.frombuffer views (zero copy) + touch each page
  l2-copy    the same views cloned into private tensors (what a worker that
             needs writable weights pays)
  l3-cold    read from disk into tensors after dropping the file from the page
             cache (posix_fadvise DONTNEED), as safetensors' loader reads
  l3-warm    the same read with the file in the page cache
On CUDA (--device cuda) each path also moves the tensors to the GPU, and
l2-copy is replaced by the worker's other host-to-device modes (--h2d):
  l2-map       pageable copies from the mapping (tensor.to("cuda"))
  l2-staged    through two pinned 64 MiB staging buffers, CPU copy and DMA
               overlapped
  l2-register  the mapping pinned with cudaHostRegister, DMA straight from it
"""

import argparse
import json
import os
import time

import torch

from kiln_worker import mapping, safetensors
from kiln_worker_torch.worker import DTYPES, tensors_from_mapping


def make_file(path, total, tensor_bytes):
    """Write a safetensors file of F16 tensors of pseudo-random bytes."""
    n = max(1, total // tensor_bytes)
    blob = os.urandom(tensor_bytes)
    tensors = {"model.layer%03d.weight" % i: ("F16", [tensor_bytes // 2], blob) for i in range(n)}
    safetensors.write_file(path, tensors, {"kiln.family": "sdxl"})


def touch(tensors):
    """Read one element per 4 KiB page of every tensor; return a checksum."""
    s = 0
    for t in tensors.values():
        b = t.view(torch.uint8).reshape(-1) if t.dtype != torch.uint8 else t.reshape(-1)
        s += int(b[::4096].sum())
    return s


def read_disk(path, device):
    """Read a safetensors file into tensors with read(), like safetensors.torch.load_file."""
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little")
        hbuf = head + f.read(n)
        size = os.fstat(f.fileno()).st_size
    doc = json.loads(hbuf[8:])
    doc.pop("__metadata__", None)
    out = {}
    with open(path, "rb", buffering=0) as f:
        for name, t in sorted(doc.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            b, e = t["data_offsets"]
            buf = torch.empty(e - b, dtype=torch.uint8)
            f.seek(8 + n + b)
            f.readinto(memoryview(buf.numpy()))
            v = buf.view(DTYPES[t["dtype"]])
            out[name] = v.to(device) if device.type == "cuda" else v
    return out, size


def drop_cache(path):
    """Evict path from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed(fn):
    t = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--tensor-mib", type=int, default=64)
    ap.add_argument("--disk-dir", default="/var/tmp")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    total = int(args.gib * (1 << 30))
    shm = "/dev/shm/kiln-bench.safetensors"
    disk = os.path.join(args.disk_dir, "kiln-bench.safetensors")
    make_file(shm, total, args.tensor_mib << 20)
    with open(shm, "rb") as src, open(disk, "wb") as dst:
        while True:
            chunk = src.read(64 << 20)
            if not chunk:
                break
            dst.write(chunk)
    size = os.path.getsize(shm)
    dev_name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print("file %.2f GiB, %d tensors of %d MiB, device %s (%s), torch %s, %d threads" % (
        size / (1 << 30), size // (args.tensor_mib << 20), args.tensor_mib, device, dev_name,
        torch.__version__, torch.get_num_threads()))
    results = {}
    # Every path must deliver the same bytes: one checksum among them all.
    sums = set()

    def l2(copy, h2d="pageable"):
        mf = mapping.map_model("bench", shm, size)
        ts = tensors_from_mapping(mf.buf, safetensors.read_header(mf.buf), device, h2d)
        if copy and device.type == "cpu":
            ts = {k: v.clone() for k, v in ts.items()}
        sums.add(touch(ts))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return ts, mf

    def l3(cold):
        if cold:
            drop_cache(disk)
        ts, _ = read_disk(disk, device)
        sums.add(touch(ts))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return ts, None

    for _ in range(args.repeat):
        paths = [("l2-map", lambda: l2(False)), ("l2-copy", lambda: l2(True)),
                 ("l3-cold", lambda: l3(True)), ("l3-warm", lambda: l3(False))]
        if device.type == "cuda":
            paths[1:2] = [("l2-staged", lambda: l2(False, "staged")), ("l2-register", lambda: l2(False, "register"))]
        for name, fn in paths:
            (ts, mf), dt = timed(fn)
            del ts
            if mf is not None:
                mf.close()
            results.setdefault(name, []).append(dt)
    if len(sums) != 1:
        raise SystemExit("paths delivered different bytes: checksums %s" % sorted(sums))
    best = {k: min(v) for k, v in results.items()}
    for k, dt in best.items():
        print("%-8s %7.3f s  %6.2f GB/s  (best of %d)" % (k, dt, size / dt / 1e9, args.repeat))
    for k in best:
        if k.startswith("l2"):
            print("ratio %s vs l3-cold: %.1fx, vs l3-warm: %.1fx" % (k, best["l3-cold"] / best[k], best["l3-warm"] / best[k]))
    os.unlink(shm)
    os.unlink(disk)


if __name__ == "__main__":
    main()
