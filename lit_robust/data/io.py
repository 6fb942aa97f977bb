"""Readers for the on-disk dataset formats that torchvision downloads, without importing torchvision.

- idx (MNIST, Fashion-MNIST): a 4-byte magic ``0x00 0x00 <type code> <ndim>``, then ``ndim`` big-endian
  uint32 dimension sizes, then the row-major data (http://yann.lecun.com/exdb/mnist/).
- CIFAR "python version": pickled dicts; ``data`` is uint8 [N, 3072] (1024 red, then 1024 green, then
  1024 blue values, each a row-major 32x32 plane), labels are a list of ints
  (https://www.cs.toronto.edu/~kriz/cifar.html).

All functions are pure: they read files and return numpy arrays or plain Python objects.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_idx", "read_cifar_pickle", "read_cifar_batches"]

# idx type code -> big-endian numpy dtype
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (plain, or gzip-compressed when the name ends in ``.gz``) into a numpy array.

    Multi-byte types are converted to native byte order. Raises ``ValueError`` on a malformed file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = bytearray(f.read())  # writable buffer, so torch.from_numpy works without a copy
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an idx file (bad magic number {bytes(raw[:4]).hex()})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: idx header says shape {shape}, so {expected} bytes, but file has {len(raw)}"
        )
    array = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays and builtin containers (no arbitrary code on load)."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),  # numpy scalars, e.g. labels written as list(np_array)
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 with protocol < 3
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle")
        return super().find_class(module, name)


def read_cifar_pickle(path: str | Path) -> dict[str, Any]:
    """Load one CIFAR pickle (data batch or meta file) as a dict with ``str`` keys.

    Python-2 pickles (the official files) are decoded with ``latin1``; ``bytes`` keys are decoded too.
    No checksum is verified, so subsets and hand-made files in the same format load as well.
    """
    with open(path, "rb") as f:
        obj = _CifarUnpickler(f, encoding="latin1").load()
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar_batches(paths: Sequence[str | Path], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate CIFAR batch files into images uint8 (N, 3, 32, 32) and labels int64 (N,).

    ``label_key`` is ``"labels"`` for CIFAR-10 and ``"fine_labels"`` (or ``"coarse_labels"``) for CIFAR-100.
    """
    images, labels = [], []
    for path in paths:
        batch = read_cifar_pickle(path)
        if "data" not in batch or label_key not in batch:
            raise ValueError(f"{path}: CIFAR batch lacks 'data' or {label_key!r} (keys: {sorted(batch)})")
        data = np.asarray(batch["data"], dtype=np.uint8)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
        if len(images[-1]) != len(labels[-1]):
            raise ValueError(f"{path}: {len(images[-1])} images but {len(labels[-1])} labels")
    return np.concatenate(images), np.concatenate(labels)
