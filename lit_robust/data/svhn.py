"""SVHN (Netzer et al., 2011): 32x32 colour crops of house-number digits, 73 257 train / 26 032 test.

Read from the MATLAB files that ``torchvision.datasets.SVHN(root, split=..., download=True)`` stores
directly in ``root``: ``<data_dir>/train_32x32.mat`` and ``<data_dir>/test_32x32.mat`` (``X`` uint8
(32, 32, 3, N) as (row, column, channel, image); ``y`` (N, 1) with labels 1..10, where 10 is the digit 0).
Reading them needs scipy (``pip install scipy``, also in the ``[eval]`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lit_robust.data.base import RobustDataModule
from lit_robust.errors import ConfigError

__all__ = ["SVHN", "read_svhn_mat"]


def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 3, 32, 32) and labels int64 (N,) in 0..9 (the file's label 10 is digit 0)."""
    try:
        from scipy.io import loadmat
    except ImportError as err:
        raise ConfigError(
            f"reading SVHN ({path}) needs scipy: pip install scipy (or 'lit_robust[eval]')"
        ) from err
    mat = loadmat(str(path))
    x, y = mat["X"], mat["y"].reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise ValueError(f"{path}: X has shape {x.shape} for {len(y)} labels; expected (32, 32, 3, N)")
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), np.where(y == 10, 0, y)


class SVHN(RobustDataModule):
    """SVHN digits (10 classes, no augmentation by default, as in Kanai et al.'s SVHN runs)."""

    input_shape = (3, 32, 32)
    num_classes = 10
    torchvision_name = "SVHN"
    FILES = {True: "train_32x32.mat", False: "test_32x32.mat"}

    def __init__(self, augment: bool = False, **kwargs: Any) -> None:
        """Same arguments as :class:`RobustDataModule`; ``data_dir`` holds the two ``.mat`` files."""
        super().__init__(augment=augment, **kwargs)

    def missing_files(self) -> list[Path]:
        return [self.root / n for n in self.FILES.values() if not (self.root / n).is_file()]

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = read_svhn_mat(self.root / self.FILES[train])
        return torch.from_numpy(x), torch.from_numpy(y)

    def torchvision_split(self, train: bool) -> dict[str, Any]:
        return {"split": "train" if train else "test"}

    def offline_hint(self) -> str:
        return (
            "offline: copy train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ "
            f"into {self.root}"
        )
