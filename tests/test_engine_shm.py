"""Small /dev/shm (Docker's 64 MB): every batch once, no SIGBUS; np.memmap by reference."""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_loadtune.engine.process import _shipping, _transfer

SCRIPT = Path(__file__).parent / "scripts" / "small_dev_shm.py"


def _can_mount_tmpfs() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a mount namespace with a small tmpfs on /dev/shm)"
    if shutil.which("unshare") is None:
        return "needs unshare(1)"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
        capture_output=True,
    )
    return None if probe.returncode == 0 else "unshare -m / mount not permitted here"


@pytest.mark.parametrize("kind", ["array", "memmap"])
def test_big_batches_and_a_256_mib_dataset_train_through_a_64_mib_dev_shm(kind):
    reason = _can_mount_tmpfs()
    if reason:
        pytest.skip(reason)
    command = f"mount -t tmpfs -o size=64m tmpfs /dev/shm && exec {sys.executable} {SCRIPT} {kind}"
    out = subprocess.run(
        ["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["seen"] == list(range(16))  # every batch, once, in order
    assert result["bytes_copied"] == 0  # 256 MiB never fit: not copied into /dev/shm
    assert result["fallbacks"] > 0
    assert "/dev/shm was too small" in result["note"]


class _Holder:
    pass


def test_memmap_arrays_travel_by_file_reference_never_by_copy(tmp_path):
    path = tmp_path / "data.bin"
    data = np.memmap(path, np.float32, "w+", shape=(512, 1024))  # 2 MiB
    data[:] = np.arange(data.size, dtype=np.float32).reshape(data.shape)
    data.flush()
    holder = _Holder()
    holder.whole, holder.view = data, data[7:300:3, ::5]
    holder.readonly = np.memmap(path, np.float32, "r", shape=(100, 1024), offset=4 * 1024 * 3)
    shipper = _shipping.SourceShipper("klt_test_memmap_")
    try:
        shipment = shipper.ship(holder)
        assert shipper.bytes_copied == 0 and shipment.segments == ()
        assert len(shipment.data) < 10_000  # the reference, not 2 MiB of data
        loaded = _shipping.load(shipment)
    finally:
        shipper.close()
    for name in ("whole", "view", "readonly"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(holder, name))
    loaded.whole[0, 0] = -1.0  # a worker's write stays its own (copy-on-write)
    assert data[0, 0] == 0.0
    assert not loaded.readonly.flags.writeable


def test_encoder_sends_in_band_when_shared_memory_is_full(monkeypatch):
    monkeypatch.setattr(_transfer, "shm_fits", lambda nbytes, extra=0: False)
    encoder = _transfer.Encoder("klt_test_full_")
    batch = (np.ones(1 << 20), np.arange(3))
    payload = encoder.encode(batch)
    assert encoder.fallbacks == 1
    decoded = _transfer.decode(pickle.loads(pickle.dumps(payload)))
    np.testing.assert_array_equal(decoded[0], batch[0])


def test_create_segment_reports_a_full_tmpfs_instead_of_a_sigbus(monkeypatch):
    def no_space(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    name = f"klt_test_nospace_{os.getpid()}"
    assert _transfer.create_segment(name, 1 << 20) is None
    assert not os.path.exists(os.path.join(_transfer.SHM_DIR, name))
