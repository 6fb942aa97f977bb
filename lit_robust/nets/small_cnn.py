"""Small convolutional net: the MNIST classifier of Madry et al. (2018)."""

from __future__ import annotations

import torch
from torch import nn

from lit_robust.errors import ConfigError
from lit_robust.nets.normalize import _check_image_input, _input_normalization
from lit_robust.validate import integer, integers

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """Small CNN; by default the MNIST network of Madry et al. 2018.

    Architecture ("Towards Deep Learning Models Resistant to Adversarial Attacks", Madry, Makelov, Schmidt,
    Tsipras, Vladu, ICLR 2018, MNIST challenge model), for inputs (N, in_channels, input_size, input_size)
    in [0, 1]::

        [Normalize] -> for each width c in channels: Conv 5x5 'same' (c, with bias) -> ReLU -> MaxPool 2x2
        -> flatten -> Linear(hidden) -> ReLU -> Linear(num_classes)

    With the defaults (1x28x28 input, channels [32, 64], hidden 1024) this has 3,274,634 parameters.
    A cheap variant for CPU runs is ``channels=[16, 32], hidden=128``. Each 2x2 max-pool floors the
    spatial size, so ``input_size`` must be >= 2 ** len(channels). PyTorch default initialisation.

    Args:
        in_channels: Number of input channels (1 for MNIST, 3 for CIFAR-10).
        num_classes: Number of output logits.
        channels: Output channels of the 5x5 conv layers, one conv + max-pool stage per entry.
        hidden: Width of the hidden fully connected layer.
        input_size: Height and width of the (square) input images; fixes the size of the first
            fully connected layer (28 for MNIST, 32 for CIFAR-10).
        mean: Per-channel input mean for a leading Normalize layer, one value per input channel
            (None: no normalisation).
        std: Per-channel input std for the Normalize layer, each > 0 (None: no normalisation).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: list[int] = (32, 64),  # type: ignore[assignment]  # tuple: immutable default
        hidden: int = 1024,
        input_size: int = 28,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = integer("SmallCNN.in_channels", in_channels, 1)
        self.num_classes = integer("SmallCNN.num_classes", num_classes, 1)
        self.channels = integers("SmallCNN.channels", channels, 1)
        self.hidden = integer("SmallCNN.hidden", hidden, 1)
        self.input_size = integer("SmallCNN.input_size", input_size, 1)
        min_size = 2 ** len(self.channels)
        if self.input_size < min_size:
            raise ConfigError(
                f"SmallCNN: input_size must be >= {min_size} for {len(self.channels)} conv + 2x2 max-pool "
                f"stages (channels={self.channels}), got {self.input_size}"
            )
        self.normalize = _input_normalization("SmallCNN", mean, std, self.in_channels)

        layers: list[nn.Module] = []
        c_in, size = self.in_channels, self.input_size
        for c_out in self.channels:
            layers += [nn.Conv2d(c_in, c_out, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2)]
            c_in, size = c_out, size // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(c_in * size * size, self.hidden),
            nn.ReLU(),
            nn.Linear(self.hidden, self.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image_input("SmallCNN", x, self.in_channels, self.input_size)
        return self.classifier(self.features(self.normalize(x)))
