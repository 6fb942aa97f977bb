"""Synthetic CIFAR-10 in the official on-disk layout, for benchmarks and tests on machines without the
real files: uniformly random images and labels, read by :class:`~lit_robust.data.CIFAR10` like the real
ones (the same loader, split, augmentation and transfer path, so timings measure the real pipeline)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the official files are protocol-2 pickles


def write_synthetic_cifar10(root: str | Path, n_train: int, n_test: int, seed: int = 0) -> dict:
    """Write ``<root>/cifar-10-batches-py`` with ``n_train`` training images split over the five
    ``data_batch_*`` files (``n_train`` must be a multiple of 5) and ``n_test`` test images.

    Returns ``{"train_x", "train_y", "test_x", "test_y"}``: uint8 (N, 3, 32, 32) images, int64 labels."""
    if n_train % 5:
        raise ValueError(f"n_train must be a multiple of 5 (one share per data_batch file), got {n_train}")
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_x = rng.integers(0, 256, size=(n_train, 3, 32, 32), dtype=np.uint8)
    test_x = rng.integers(0, 256, size=(n_test, 3, 32, 32), dtype=np.uint8)
    train_y, test_y = rng.integers(0, 10, n_train), rng.integers(0, 10, n_test)
    share = n_train // 5
    for i in range(5):
        part = slice(share * i, share * (i + 1))
        _dump(
            folder / f"data_batch_{i + 1}",
            {
                "batch_label": f"training batch {i + 1} of 5",
                "data": train_x[part].reshape(share, 3072),
                "labels": [int(v) for v in train_y[part]],
            },
        )
    _dump(folder / "test_batch", {"data": test_x.reshape(n_test, 3072), "labels": [int(v) for v in test_y]})
    _dump(
        folder / "batches.meta",
        {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": share, "num_vis": 3072},
    )
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
