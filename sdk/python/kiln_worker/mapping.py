"""Read-only mappings of model files (L2 shared-memory segments or L3 files).

Model bytes never travel through the socket: a load names a path, and the
worker maps it read-only. :func:`map_model` checks the file as kiln-worker-sim
does (regular, non-empty, the size the request says) and
:func:`checksum_sample` hashes the same sample the Go worker hashes, so both
report the same checksum for the same file.
"""

import hashlib
import mmap
import os
import stat

from . import protocol as p

SAMPLE_CHUNKS = 64
SAMPLE_CHUNK_BYTES = 64 << 10


class MappedFile:
    """A file mapped read-only: ``buf`` is a read-only memoryview of it."""

    def __init__(self, path, size, mm):
        self.path = path
        self.size = size
        self.mm = mm
        self.buf = memoryview(mm)

    def close(self):
        """Unmap the file. Views still exported (tensors) keep it alive:
        the mapping is then released when they are collected."""
        try:
            self.buf.release()
            self.mm.close()
        except BufferError:
            pass


def map_model(model, path, expected_bytes):
    """Map ``path`` read-only after checking it; raise WorkerError on failure."""
    if not model or not path:
        raise p.WorkerError(p.BAD_REQUEST, "load: model and path are required")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise p.WorkerError(p.FAILED, "load %s: %s" % (model, exc)) from None
    try:
        st = os.fstat(fd)
        size = st.st_size
        if not stat.S_ISREG(st.st_mode):
            raise p.WorkerError(p.BAD_REQUEST, "load %s: %s is not a regular file" % (model, path))
        if size != expected_bytes:
            raise p.WorkerError(p.BAD_REQUEST, "load %s: %s has %d bytes, request says %d"
                                % (model, path, size, expected_bytes))
        if size == 0:
            raise p.WorkerError(p.BAD_REQUEST, "load %s: %s is empty" % (model, path))
        try:
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        except (OSError, ValueError) as exc:
            raise p.WorkerError(p.FAILED, "load %s: mmap %s: %s" % (model, path, exc)) from None
    finally:
        os.close(fd)
    return MappedFile(path, size, mm)


def checksum_sample(buf):
    """SHA-256 of 64 chunks of 64 KiB spread evenly over buf (all of it when
    smaller), as kiln-worker-sim computes it. Faults the sampled pages in."""
    h = hashlib.sha256()
    n = len(buf)
    if n <= SAMPLE_CHUNKS * SAMPLE_CHUNK_BYTES:
        h.update(buf)
        return h.hexdigest()
    span = n - SAMPLE_CHUNK_BYTES
    for i in range(SAMPLE_CHUNKS):
        off = span * i // (SAMPLE_CHUNKS - 1)
        h.update(buf[off:off + SAMPLE_CHUNK_BYTES])
    return h.hexdigest()
