"""Moving batches from worker processes to the trainer.

Small objects go through the pipe as pickles. NumPy arrays of at least
`SHM_THRESHOLD_BYTES` are copied once into a POSIX shared-memory segment in the
worker; the trainer maps the segment, unlinks its name at once (so nothing can
leak in `/dev/shm` even if the trainer is killed later) and hands out an array
*viewing* the mapping: one copy instead of the four a pickle through a pipe makes
(pickle, pipe write, pipe read, unpickle). `benchmarks/transfer.py` measures both.

Shared memory can be small (Docker gives a container 64 MB of `/dev/shm`, as do
many Kubernetes pods), and writing into a segment the tmpfs has no page for kills
the writer with SIGBUS. So a segment is used only when `/dev/shm` has room for it
with `SHM_HEADROOM` to spare, and its pages are reserved up front
(`posix_fallocate`, which fails cleanly with ENOSPC instead): a batch that does not
fit travels through the pipe instead (`Encoder.fallbacks` counts those arrays).
"""

from __future__ import annotations

import itertools
import os
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import numpy as np

SHM_THRESHOLD_BYTES = 256 * 1024
SHM_PREFIX = "klt"
SHM_DIR = "/dev/shm"
SHM_HEADROOM = 0.125  # fraction of /dev/shm's size left free for others (and the queue)


def shm_fits(nbytes: int, extra: int = 0) -> bool:
    """Whether `nbytes` (plus `extra` held elsewhere) fit in `/dev/shm` with headroom.

    Args:
        nbytes: Size of the segment to create.
        extra: Bytes to keep free on top (e.g. a queue's worth of batches).

    Example:

    ```python
    if not shm_fits(array.nbytes):
        ...  # send it through the pipe
    ```
    """
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return True  # not Linux: shared_memory manages
    free = st.f_bavail * st.f_frsize
    return free - nbytes - extra >= SHM_HEADROOM * st.f_blocks * st.f_frsize


def create_segment(name: str, nbytes: int) -> shared_memory.SharedMemory | None:
    """A new segment with its pages reserved, or None when shared memory is full.

    Reserving (`posix_fallocate`) makes a full tmpfs fail here with ENOSPC rather than
    with SIGBUS at the first write into the mapping.

    Args:
        name: Segment name.
        nbytes: Size in bytes.

    Example:

    ```python
    shm = create_segment("klt_1_2_0", array.nbytes)  # None: send the array in band
    ```
    """
    shm = shared_memory.SharedMemory(name=name, create=True, size=max(nbytes, 1))
    fd = getattr(shm, "_fd", -1)
    if fd >= 0 and hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, max(nbytes, 1))
        except OSError:
            shm.close()
            shm.unlink()
            return None
    return shm


class _ShmArray:
    """Placeholder for an array that travels in a shared-memory segment."""

    __slots__ = ("dtype", "name", "shape")

    def __init__(self, name: str, shape: tuple[int, ...], dtype: str):
        self.name = name
        self.shape = shape
        self.dtype = dtype


def segment_prefix(parent_pid: int, worker_id: int) -> str:
    """Name prefix of every segment one worker creates (used to clean up after a crash)."""
    return f"{SHM_PREFIX}_{parent_pid}_{worker_id}_"


class Encoder:
    """Worker side: replaces big arrays by shared-memory placeholders."""

    def __init__(self, prefix: str, threshold: int = SHM_THRESHOLD_BYTES):
        self._prefix = prefix
        self._threshold = threshold
        self._counter = itertools.count()
        self.fallbacks = 0  # big arrays sent through the pipe: shared memory was full

    def encode(self, obj: Any) -> Any:
        if (
            type(obj) is np.ndarray
            and obj.nbytes >= self._threshold
            and obj.dtype.hasobject is False
        ):
            return self._to_shm(obj)
        if isinstance(obj, tuple):
            return tuple(self.encode(v) for v in obj)
        if type(obj) is list:
            return [self.encode(v) for v in obj]
        if type(obj) is dict:
            return {k: self.encode(v) for k, v in obj.items()}
        return obj

    def _to_shm(self, array: np.ndarray) -> _ShmArray | np.ndarray:
        if not shm_fits(array.nbytes):
            self.fallbacks += 1
            return array
        name = f"{self._prefix}{next(self._counter)}"
        shm = create_segment(name, array.nbytes)
        if shm is None:
            self.fallbacks += 1
            return array
        try:
            np.copyto(np.ndarray(array.shape, array.dtype, buffer=shm.buf), array, casting="no")
        finally:
            shm.close()
        return _ShmArray(name, array.shape, array.dtype.str)


def decode(obj: Any) -> Any:
    """Trainer side: turns placeholders back into arrays (zero-copy views)."""
    if isinstance(obj, _ShmArray):
        return _from_shm(obj)
    if isinstance(obj, tuple):
        return tuple(decode(v) for v in obj)
    if type(obj) is list:
        return [decode(v) for v in obj]
    if type(obj) is dict:
        return {k: decode(v) for k, v in obj.items()}
    return obj


def discard(obj: Any) -> None:
    """Unlinks the segments of a payload that will not be delivered."""
    if isinstance(obj, _ShmArray):
        unlink_quietly(obj.name)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            discard(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            discard(v)


def _from_shm(ref: _ShmArray) -> np.ndarray:
    shm = shared_memory.SharedMemory(name=ref.name, create=False)
    # Unlink the name now: the mapping stays valid while the array lives, and no
    # segment can outlive the trainer. The array keeps `shm.buf` (and the mmap) alive.
    shm.unlink()
    array = np.ndarray(ref.shape, np.dtype(ref.dtype), buffer=shm.buf)
    # Drop our handle without closing the mmap the array still views.
    shm._buf = None
    shm._mmap = None
    return array


def unlink_quietly(name: str) -> None:
    """Unlinks a segment by name if it exists (crash clean-up)."""
    try:
        shm = shared_memory.SharedMemory(name=name, create=False)
    except (FileNotFoundError, OSError):
        return
    try:
        shm.close()
        shm.unlink()
    except (FileNotFoundError, OSError):
        pass


def unlink_prefix(prefix: str) -> int:
    """Unlinks every segment whose name starts with `prefix` (after a worker died)."""
    removed = 0
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    for name in names:
        if name.startswith(prefix):
            try:
                os.unlink(os.path.join(SHM_DIR, name))
                removed += 1
            except OSError:
                continue
            try:
                resource_tracker.unregister("/" + name, "shared_memory")
            except Exception:
                pass
    return removed
