"""Shipping the dataset to worker processes: by value where needed, big arrays once.

The dataset is pickled with cloudpickle: a class or function defined in `__main__`, a
notebook or `python -c` travels *by value* (its code goes along), so a worker never
imports the user's script; classes of importable modules go by reference, as with
plain `pickle`. Pickle protocol 5 hands every NumPy array of at least
`OUT_OF_BAND_MIN_BYTES` to us out of band: we copy it once into a POSIX shared-memory
segment and only the segment's name travels. Segments are cached by the array's
identity, address and a sampled digest of its bytes, so sending the dataset again
after a small attribute changed does not copy a 256 MB array again. Workers map the
segments copy-on-write (Linux): all workers share one physical copy, and a worker
that writes into its array changes only its own pages, exactly like the private copy
a plain pickle gave it. `np.memmap`-backed arrays travel by file reference (file name,
dtype, shape, strides, offset; workers map the file copy-on-write), never copied. When
`/dev/shm` has no room for an array (plus as much again for the batch queue), it is
pickled in band instead (`SourceShipper.fallbacks`).

Deciding whether the dataset changed must not cost a pickle: `fingerprint()` walks the
dataset's attributes (`__dict__`, recursively, within a budget) and records values of
small scalars and strings, a hash of small arrays' bytes, and for big arrays their
identity, shape, dtype, address and a sampled digest.

Limits (documented, not silent): a big array changed *in place* at a few positions the
sampled digest does not look at is not seen as changed; objects without `__dict__`
(C extension types) are compared by identity. Reassigning the attribute
(`self.x = new_array`) is always seen.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import mmap
import os
import pickle
import sys
import threading
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from typing import Any

import cloudpickle
import numpy as np

from keras_loadtune.engine.errors import DatasetNotPicklableError
from keras_loadtune.engine.process import _keras, _transfer

OUT_OF_BAND_MIN_BYTES = 1 << 20
SHM_DIR = _transfer.SHM_DIR
_SAMPLES = 64  # chunks of the sampled digest
_SAMPLE_BYTES = 64  # bytes per chunk
_FINGERPRINT_BUDGET = 200_000  # values walked before giving up (then: pickle and compare)
_FINGERPRINT_DEPTH = 6
_SCALARS = (int, float, complex, bool, str, bytes, type(None))


# -- errors ------------------------------------------------------------------------------------
def _culprit(obj: Any, path: str, depth: int = 3) -> str | None:
    """The attribute path of the first value that cannot be pickled (None if not found)."""
    attrs = getattr(obj, "__dict__", None)
    if not isinstance(attrs, dict) or depth == 0:
        return None
    for name, value in attrs.items():
        try:
            cloudpickle.dumps(value, protocol=5, buffer_callback=lambda _: False)
        except Exception as exc:
            deeper = _culprit(value, f"{path}.{name}", depth - 1)
            return deeper or f"{path}.{name} ({type(value).__name__}: {exc})"
    return None


def not_picklable_error(source: Any, exc: BaseException) -> DatasetNotPicklableError:
    """The one error that says why `source` cannot go to worker processes and what to do."""
    name = type(source).__name__
    where = _culprit(source, name) or f"{type(exc).__name__}: {exc}"
    return DatasetNotPicklableError(
        f"{name} cannot be sent to worker processes: {where}. Open files, locks, sockets "
        "and clients cannot be copied to another process; open them lazily in "
        "__getitem__ (store the path or the address instead), or use threads "
        "(use_multiprocessing=False)."
    )


def memmap_reference(array: np.memmap) -> tuple | None:
    """(filename, dtype, shape, strides, file offset, mode) of a file-backed array, or None.

    Args:
        array: An `np.memmap`, or a view of one.

    Example:

    ```python
    ref = memmap_reference(np.memmap("data.bin", np.float32, "r", shape=(100,)))
    ```
    """
    filename = getattr(array, "filename", None)
    mapping = getattr(array, "_mmap", None)
    if not filename or mapping is None or not os.path.isfile(filename):
        return None
    try:
        start = np.frombuffer(mapping, np.uint8).__array_interface__["data"][0]
    except (TypeError, ValueError, BufferError):
        return None
    offset = int(array.offset or 0)
    aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
    position = array.__array_interface__["data"][0] - start + aligned
    mode = "r" if array.mode in ("r", "readonly") else "c"  # a worker's writes stay its own
    return filename, array.dtype.str, array.shape, array.strides, position, mode


def open_memmap(
    filename: str,
    dtype: str,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    position: int,
    mode: str,
) -> np.ndarray:
    """Worker side of `memmap_reference`: maps the same bytes of the same file.

    Example:

    ```python
    array = open_memmap(*memmap_reference(trainer_array))
    ```
    """
    whole = np.memmap(filename, np.uint8, mode)
    return np.ndarray(shape, np.dtype(dtype), buffer=whole, offset=position, strides=strides)


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, sending `np.memmap`-backed arrays by file reference, never by copy.

    With `light_base` (the base class `_keras.light_pickle` names), that class is sent
    as `_keras.stand_in()`: workers then unpickle the dataset without importing Keras
    (see `_keras`).
    """

    def __init__(self, *args: Any, light_base: type | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._light_base = light_base

    def reducer_override(self, obj: Any) -> Any:
        if self._light_base is not None and obj is self._light_base:
            return _keras.stand_in, ()
        if isinstance(obj, np.memmap):
            ref = memmap_reference(obj)
            if ref is not None:
                return open_memmap, ref
        return super().reducer_override(obj)


def dumps(
    source: Any,
    buffer_callback: Callable[[pickle.PickleBuffer], Any] | None,
    *,
    light_base: type | None = None,
    by_value: tuple[str, ...] = (),
) -> bytes:
    """Pickles `source` with cloudpickle (protocol 5), or raises `DatasetNotPicklableError`.

    `light_base`: the base class to send as the stand-in (`_Pickler`, `_keras.light_pickle`).
    `by_value`: modules whose classes and functions this pickle sends by value (see
    `_keras.by_value_modules`); if that fails, they go by reference and
    the real base goes with them (`dumps_light` says which happened).
    """
    return dumps_light(source, buffer_callback, light_base=light_base, by_value=by_value)[0]


def dumps_light(
    source: Any,
    buffer_callback: Callable[[pickle.PickleBuffer], Any] | None,
    *,
    light_base: type | None = None,
    by_value: tuple[str, ...] = (),
    on_retry: Callable[[], Any] | None = None,
) -> tuple[bytes, bool]:
    """`dumps`, and whether the pickle names the stand-in base (workers import no Keras).

    `on_retry` is called before pickling again by reference (the by-value pickle
    failed): whatever `buffer_callback` collected for it must be dropped there.

    Example:

    ```python
    data, light = dumps_light(ds, None, light_base=base, by_value=("mypackage.data",))
    ```
    """
    if by_value:
        try:
            with _pickled_by_value(by_value):
                return _dump(source, buffer_callback, light_base), light_base is not None
        except Exception:  # e.g. a module constant that cannot be copied: by reference
            light_base = None
            if on_retry is not None:
                on_retry()
    try:
        return _dump(source, buffer_callback, light_base), light_base is not None
    except Exception as exc:
        raise not_picklable_error(source, exc) from exc


def _dump(
    source: Any,
    buffer_callback: Callable[[pickle.PickleBuffer], Any] | None,
    light_base: type | None,
) -> bytes:
    out = io.BytesIO()
    pickler = _Pickler(out, protocol=5, buffer_callback=buffer_callback, light_base=light_base)
    pickler.dump(source)
    return out.getvalue()


_BY_VALUE_LOCK = threading.Lock()


@contextlib.contextmanager
def _pickled_by_value(names: tuple[str, ...]) -> Iterator[None]:
    """cloudpickle sends `names`' objects by value inside this block (one pickle at a time:
    the registration is cloudpickle's global state, undone on the way out)."""
    with _BY_VALUE_LOCK:
        added = []
        try:
            for name in names:
                module = sys.modules[name]
                if name not in cloudpickle.list_registry_pickle_by_value():
                    cloudpickle.register_pickle_by_value(module)
                    added.append(module)
            yield
        finally:
            for module in added:
                cloudpickle.unregister_pickle_by_value(module)


def check_picklable(source: Any) -> None:
    """Raises `DatasetNotPicklableError` if `source` cannot go to worker processes.

    Cheap for big arrays: their buffers are handed out of band and not copied. The
    Keras adapter calls it up front, before any worker starts.

    Args:
        source: The dataset.

    Example:

    ```python
    check_picklable(dataset)  # raises DatasetNotPicklableError naming the culprit attribute
    ```
    """
    dumps(source, lambda _: False)


# -- fingerprint -------------------------------------------------------------------------------
def _sampled_digest(raw: memoryview) -> bytes:
    """Digest of `_SAMPLES` evenly spaced chunks of a flat byte view (cheap for any size)."""
    n = raw.nbytes
    h = hashlib.blake2b(digest_size=8)
    if n <= _SAMPLES * _SAMPLE_BYTES:
        h.update(raw)
        return h.digest()
    step = (n - _SAMPLE_BYTES) // (_SAMPLES - 1)
    for i in range(_SAMPLES):
        start = i * step
        h.update(raw[start : start + _SAMPLE_BYTES])
    return h.digest()


def _array_key(arr: np.ndarray) -> Hashable | None:
    if arr.dtype.hasobject:
        if arr.size > 10_000:
            return None
        return ("ndo", arr.shape, tuple(_leaf(v) for v in arr.ravel().tolist()))
    address = arr.__array_interface__["data"][0]
    if arr.nbytes < OUT_OF_BAND_MIN_BYTES:
        digest = hashlib.blake2b(np.ascontiguousarray(arr).tobytes(), digest_size=8).digest()
    elif arr.flags.c_contiguous:
        digest = _sampled_digest(memoryview(arr.reshape(-1).view(np.uint8)))
    else:
        sample = arr.flat[np.linspace(0, arr.size - 1, 4096).astype(np.intp)]
        digest = hashlib.blake2b(sample.tobytes(), digest_size=8).digest()
    return ("nd", id(arr), arr.shape, arr.strides, arr.dtype.str, address, digest)


def _leaf(value: Any) -> Hashable:
    return value if type(value) in _SCALARS else ("id", type(value).__qualname__, id(value))


class _Walk:
    def __init__(self) -> None:
        self.budget = _FINGERPRINT_BUDGET
        self.seen: set[int] = set()

    def __call__(self, obj: Any, depth: int) -> Hashable:
        self.budget -= 1
        if self.budget < 0:
            raise OverflowError
        kind = type(obj)
        if kind in _SCALARS:
            return obj
        if isinstance(obj, np.generic):
            return ("np", obj.dtype.str, obj.tobytes()) if not obj.dtype.hasobject else _leaf(obj)
        if isinstance(obj, np.ndarray):
            key = _array_key(obj)
            if key is None:
                raise OverflowError
            return key
        if depth <= 0 or id(obj) in self.seen:
            return ("id", kind.__qualname__, id(obj))
        self.seen.add(id(obj))
        if kind in (list, tuple):
            if all(type(v) in _SCALARS for v in obj):  # fast path: paths, labels, ids
                self.budget -= len(obj) // 16
                return (kind.__name__, tuple(obj))
            return (kind.__name__, tuple(self(v, depth - 1) for v in obj))
        if kind in (set, frozenset):
            return (kind.__name__, len(obj), id(obj), tuple(sorted(hash(_leaf(v)) for v in obj)))
        if kind is dict:
            return ("dict", tuple((_leaf(k), self(v, depth - 1)) for k, v in obj.items()))
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict) and not isinstance(obj, type):
            return ("obj", kind.__qualname__, id(obj), self(attrs, depth - 1))
        return ("id", kind.__qualname__, id(obj))


def fingerprint(source: Any) -> Hashable | None:
    """A cheap value that changes when the dataset's state changes (None: too big to walk).

    Args:
        source: The dataset (or the engine's source wrapping it).

    Returns:
        A hashable, comparable summary; `None` when the object graph exceeds the budget
        (the caller then pickles and compares instead).

    Example:

    ```python
    before = fingerprint(ds)
    ds.on_epoch_end()
    changed = fingerprint(ds) != before
    ```
    """
    try:
        return _Walk()(source, _FINGERPRINT_DEPTH)
    except (OverflowError, RecursionError):
        return None


# -- shipping ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """A shared-memory segment holding one out-of-band buffer."""

    name: str
    nbytes: int


@dataclass(frozen=True)
class Shipment:
    """One pickled version of the dataset, as a worker receives it."""

    generation: int
    data: bytes
    segments: tuple[Segment, ...]


@dataclass
class _Cached:
    shm: shared_memory.SharedMemory
    buffer: pickle.PickleBuffer  # keeps the array alive: its address stays unique
    segment: Segment
    generations: set[int] = field(default_factory=set)


class SourceShipper:
    """Trainer side: pickles the dataset and keeps its big arrays in shared memory.

    Args:
        prefix: Name prefix of the segments it creates (unique per pool).

    Example:

    ```python
    shipper = SourceShipper("klt_123_d7_")
    shipment = shipper.ship(dataset)  # send to workers; they call load(shipment)
    shipper.release_older_than(shipment.generation)  # once every worker loaded it
    shipper.close()
    ```
    """

    def __init__(self, prefix: str):
        self._prefix = prefix
        self._counter = itertools.count()
        self._generations = itertools.count()
        self._cache: dict[tuple, _Cached] = {}
        self.pickles = 0
        self.bytes_copied = 0
        self.fallbacks = 0  # big arrays pickled in band: shared memory had no room
        self.light_base = False  # the last shipment sent the stand-in base (`_keras`)

    def ship(self, source: Any) -> Shipment:
        """Pickles `source`; arrays already in shared memory are not copied again."""
        generation = next(self._generations)
        segments: list[Segment] = []

        def out_of_band(buffer: pickle.PickleBuffer) -> bool:
            try:
                raw = buffer.raw()
            except BufferError:  # not contiguous: let pickle copy it in band
                return True
            if raw.nbytes < OUT_OF_BAND_MIN_BYTES:
                return True
            entry = self._segment_for(buffer, raw)
            if entry is None:
                return True
            entry.generations.add(generation)
            segments.append(entry.segment)
            return False

        light_base, by_value = _keras.light_pickle(source) or (None, ())
        data, self.light_base = dumps_light(
            source, out_of_band, light_base=light_base, by_value=by_value, on_retry=segments.clear
        )
        self.pickles += 1
        return Shipment(generation, data, tuple(segments))

    def _segment_for(self, buffer: pickle.PickleBuffer, raw: memoryview) -> _Cached | None:
        address = np.frombuffer(raw, np.uint8).__array_interface__["data"][0]
        key = (id(raw.obj), raw.nbytes, address, _sampled_digest(raw))
        entry = self._cache.get(key)
        if entry is not None:
            return entry
        # Leave room for a queue of batches too: they travel through the same tmpfs.
        if not _transfer.shm_fits(raw.nbytes, extra=raw.nbytes):
            self.fallbacks += 1
            return None
        name = f"{self._prefix}{next(self._counter)}"
        shm = _transfer.create_segment(name, raw.nbytes)
        if shm is None:
            self.fallbacks += 1
            return None
        shm.buf[: raw.nbytes] = raw
        self.bytes_copied += raw.nbytes
        entry = self._cache[key] = _Cached(shm, buffer, Segment(name, raw.nbytes))
        return entry

    def release_older_than(self, generation: int) -> None:
        """Unlinks segments that no shipment of `generation` or later uses."""
        for key, entry in list(self._cache.items()):
            entry.generations = {g for g in entry.generations if g >= generation}
            if not entry.generations:
                del self._cache[key]
                _unlink(entry.shm)

    def close(self) -> None:
        """Unlinks every segment (workers keep their mappings until they exit)."""
        entries, self._cache = list(self._cache.values()), {}
        for entry in entries:
            _unlink(entry.shm)


def _unlink(shm: shared_memory.SharedMemory) -> None:
    try:
        shm.close()
        shm.unlink()
    except (FileNotFoundError, OSError, BufferError):
        pass


# -- worker side -------------------------------------------------------------------------------
_ATTACHED: list[shared_memory.SharedMemory] = []  # fallback mappings, kept for the worker's life


def _map(segment: Segment) -> memoryview:
    path = os.path.join(SHM_DIR, segment.name)
    if sys.platform.startswith("linux") and os.path.exists(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            mapping = mmap.mmap(fd, segment.nbytes, access=mmap.ACCESS_COPY)
        finally:
            os.close(fd)
        return memoryview(mapping)
    shm = shared_memory.SharedMemory(name=segment.name, create=False)
    try:  # the trainer owns the segment: the worker's tracker must not unlink it
        from multiprocessing import resource_tracker

        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    except Exception:
        pass
    _ATTACHED.append(shm)
    return shm.buf[: segment.nbytes]


def load(shipment: Shipment) -> Any:
    """Worker side: rebuilds the dataset; big arrays view the shared segments (no copy)."""
    return pickle.loads(shipment.data, buffers=[_map(s) for s in shipment.segments])
