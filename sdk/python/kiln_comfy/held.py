"""Model files the adapter holds for as long as a model is loaded.

The kernel pins a model's L2 segment only while the worker answers ``load``
(``internal/dispatch`` ``Dispatcher.load`` releases the tier lease when the
load is answered); after that the tiers may evict the segment and unlink its
file. A mapping taken during the load stays valid, but ComfyUI does not read
kiln's mapping: its loaders open files by path
(``folder_paths.get_full_path`` → ``comfy.utils.load_torch_file``), and a
symlink to the segment's path dangles once the segment is evicted
(``get_full_path`` then logs "exists but doesn't link anywhere" and returns
None).

:func:`hold` therefore opens the segment while the lease is held and keeps
the descriptor until unload. The open descriptor keeps the file's inode (and
its pages) alive after the tiers unlink it, exactly as the mapping does, and
``/proc/self/fd/<n>`` reopens that inode by path — so the path ComfyUI is
given stays valid for exactly as long as kiln says the model is loaded, no
longer, with no copy of the bytes. The process's death closes the descriptor,
so a crashed worker holds nothing.
"""

import os
import stat

from kiln_worker import mapping
from kiln_worker import protocol as p


class HeldFile:
    """An open descriptor of a model file and a read-only mapping of it.

    ``path`` names the descriptor (``/proc/self/fd/<n>``): it opens the file
    the kernel named at load time, even after that name was unlinked, until
    :meth:`close`. ``mapped`` is the :class:`kiln_worker.mapping.MappedFile`.
    """

    def __init__(self, fd, mapped):
        self.fd = fd
        self.mapped = mapped
        self.path = fd_path(fd)

    def close(self):
        """Unmap and close the descriptor; the path stops resolving."""
        self.mapped.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def fd_path(fd):
    """The path that reopens descriptor ``fd`` of this process."""
    return "/proc/self/fd/%d" % fd


def hold(model, path, expected_bytes):
    """Open and map ``path`` (checks as :func:`kiln_worker.mapping.map_model`)
    and return a :class:`HeldFile`; raise WorkerError on failure."""
    if not model or not path:
        raise p.WorkerError(p.BAD_REQUEST, "load: model and path are required")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise p.WorkerError(p.FAILED, "load %s: %s" % (model, exc)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise p.WorkerError(p.BAD_REQUEST, "load %s: %s is not a regular file" % (model, path))
        if not os.path.exists(fd_path(fd)):
            raise p.WorkerError(p.FAILED, "load %s: %s does not resolve (no /proc?)" % (model, fd_path(fd)))
        # Map through the descriptor's path: the mapping and the path handed
        # to ComfyUI are then the same inode, whatever happens to `path`.
        mapped = mapping.map_model(model, fd_path(fd), expected_bytes)
    except BaseException:
        os.close(fd)
        raise
    return HeldFile(fd, mapped)
