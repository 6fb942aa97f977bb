"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009): 32x32 colour images, 50 000 train / 10 000 test.

Read from the official "python version" folders that ``torchvision.datasets.CIFAR10/100(download=True)``
extract: ``<data_dir>/cifar-10-batches-py`` and ``<data_dir>/cifar-100-python``. No checksum is verified,
so subsets written in the same format load too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lit_robust.data.base import RobustDataModule
from lit_robust.data.io import read_cifar_batches, read_cifar_pickle

__all__ = ["CIFARDataModule", "CIFAR10", "CIFAR100"]


class CIFARDataModule(RobustDataModule):
    """Base of the CIFAR datasets; augmentation (crop + flip) is on by default."""

    input_shape = (3, 32, 32)
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    tarball_url: str

    def __init__(self, augment: bool = True, **kwargs: Any) -> None:
        """Same arguments as :class:`RobustDataModule`; only ``augment`` defaults to True here.

        Args:
            augment: Random crop (4-pixel zero padding) and horizontal flip of training batches,
                applied on the device after transfer.
            **kwargs: data_dir (the folder holding ``cifar-10-batches-py`` or ``cifar-100-python``),
                batch_size, eval_batch_size, num_workers, train_subset, val_size, test_subset,
                label_noise, seed, download: see :class:`RobustDataModule`.
        """
        super().__init__(augment=augment, **kwargs)

    @property
    def dataset_dir(self) -> Path:
        return self.root / self.folder

    def missing_files(self) -> list[Path]:
        names = [*self.train_files, *self.test_files, self.meta_file]
        return [self.dataset_dir / n for n in names if not (self.dataset_dir / n).is_file()]

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        files = self.train_files if train else self.test_files
        x, y = read_cifar_batches([self.dataset_dir / f for f in files], self.label_key)
        return torch.from_numpy(x), torch.from_numpy(y)

    @property
    def classes(self) -> list[str]:
        """Class names, read from the meta file."""
        missing = self.missing_files()
        if missing:
            raise self._not_found(missing)
        return list(read_cifar_pickle(self.dataset_dir / self.meta_file)[self.names_key])

    def offline_hint(self) -> str:
        return (
            f"offline: copy the `{self.folder}` folder from the official tarball {self.tarball_url} "
            f"into {self.root}"
        )


class CIFAR10(CIFARDataModule):
    """CIFAR-10, read from ``<data_dir>/cifar-10-batches-py`` (10 classes)."""

    num_classes = 10
    torchvision_name = "CIFAR10"
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    meta_file = "batches.meta"
    label_key = "labels"
    names_key = "label_names"
    tarball_url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


class CIFAR100(CIFARDataModule):
    """CIFAR-100 with its 100 fine labels, read from ``<data_dir>/cifar-100-python``."""

    num_classes = 100
    torchvision_name = "CIFAR100"
    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    meta_file = "meta"
    label_key = "fine_labels"
    names_key = "fine_label_names"
    tarball_url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
