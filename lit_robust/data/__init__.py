"""LightningDataModules for the image datasets (MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100, SVHN).

They read torchvision's on-disk layout without importing torchvision, hold the data in memory as float32
in [0, 1], and share the validation split, training subset, label noise and augmentation logic of
:class:`RobustDataModule`.
"""

from lit_robust.data.base import RobustDataModule
from lit_robust.data.cifar import CIFAR10, CIFAR100
from lit_robust.data.mnist import MNIST, FashionMNIST
from lit_robust.data.svhn import SVHN

__all__ = ["RobustDataModule", "MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "SVHN"]
