"""Wide residual networks (Zagoruyko & Komodakis 2016), CIFAR variant used in adversarial training."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lit_robust.errors import ConfigError
from lit_robust.nets.normalize import _check_image_input, _input_normalization
from lit_robust.validate import integer, number

__all__ = ["WideBasicBlock", "WideResNet"]


class WideBasicBlock(nn.Module):
    """Pre-activation wide basic block: BN-ReLU-Conv3x3-BN-ReLU-[Dropout]-Conv3x3 plus shortcut.

    When the width or resolution changes, the shortcut is a bias-free 1x1 conv applied to the
    pre-activated input relu(bn1(x)); otherwise it is the identity on x.

    Args:
        in_planes: Input channels.
        out_planes: Output channels.
        stride: Stride of the first 3x3 conv (and of the shortcut conv).
        dropout: Dropout probability between the two convs (0 disables it).
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.convShortcut: nn.Module | None = None  # name as in the reference code
        if stride != 1 or in_planes != out_planes:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        residual = self.convShortcut(out) if self.convShortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + residual


class _BlockGroup(nn.Module):
    """A stage of ``n`` WideBasicBlocks; the first changes width/stride (attribute ``layer`` as reference)."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(
                    in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, dropout
                )
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """Wide ResNet WRN-depth-widen for 32x32 images (WRN-34-10 is the standard adversarial training net).

    From "Wide Residual Networks" (Zagoruyko, Komodakis, BMVC 2016), in the form used for adversarial
    training by Madry et al. 2018, Zhang et al. 2019 (TRADES) and Rice et al. 2020. With
    n = (depth - 4) / 6 blocks per group::

        [Normalize] -> Conv 3x3 (16, no bias)
        -> group 1: n WideBasicBlocks, 16*widen channels, stride 1
        -> group 2: n WideBasicBlocks, 32*widen channels, stride 2
        -> group 3: n WideBasicBlocks, 64*widen channels, stride 2
        -> BN -> ReLU -> global average pool -> Linear(num_classes)

    Each block is BN-ReLU-Conv3x3-BN-ReLU-Dropout-Conv3x3 with an identity shortcut, or a 1x1 conv on the
    pre-activated input where the shape changes. Initialisation as in the reference implementations:
    conv weights Kaiming normal (fan_out, ReLU gain: std = sqrt(2 / (k*k*out_channels))), BatchNorm
    weight 1 and bias 0, linear bias 0 (linear weight PyTorch default). The global average pool is a mean
    over H and W (equal to the reference ``avg_pool2d(out, 8)`` on 32x32 inputs, deterministic on CUDA).
    WRN-34-10 has 46,160,474 parameters and WRN-28-10 36,479,194 (3 input channels, 10 classes).

    Args:
        depth: Total depth; (depth - 4) must be a positive multiple of 6 (10, 16, 22, 28, 34, 40, ...).
        widen: Widening factor k (channel multiplier of the three groups); 10 for WRN-34-10.
        num_classes: Number of output logits.
        dropout: Dropout probability inside each block, in [0, 1); 0 disables dropout.
        in_channels: Number of input channels (3 for CIFAR-10).
        mean: Per-channel input mean for a leading Normalize layer, one value per input channel
            (None: no normalisation).
        std: Per-channel input std for the Normalize layer, each > 0 (None: no normalisation).
    """

    def __init__(
        self,
        depth: int = 34,
        widen: int = 10,
        num_classes: int = 10,
        dropout: float = 0.0,
        in_channels: int = 3,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.depth = integer("WideResNet.depth", depth, 10)
        if (self.depth - 4) % 6 != 0:
            raise ConfigError(
                f"WideResNet: depth must satisfy (depth - 4) % 6 == 0 (e.g. 10, 16, 22, 28, 34), got {depth}"
            )
        self.widen = integer("WideResNet.widen", widen, 1)
        self.num_classes = integer("WideResNet.num_classes", num_classes, 1)
        self.in_channels = integer("WideResNet.in_channels", in_channels, 1)
        self.dropout = number("WideResNet.dropout", dropout, 0.0, 1.0, high_open=True)
        self.normalize = _input_normalization("WideResNet", mean, std, self.in_channels)

        n = (self.depth - 4) // 6
        widths = [16, 16 * self.widen, 32 * self.widen, 64 * self.widen]
        self.conv1 = nn.Conv2d(self.in_channels, widths[0], kernel_size=3, padding=1, bias=False)
        self.block1 = _BlockGroup(n, widths[0], widths[1], 1, self.dropout)
        self.block2 = _BlockGroup(n, widths[1], widths[2], 2, self.dropout)
        self.block3 = _BlockGroup(n, widths[2], widths[3], 2, self.dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], self.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image_input("WideResNet", x, self.in_channels)
        out = self.conv1(self.normalize(x))
        out = self.block3(self.block2(self.block1(out)))
        out = F.relu(self.bn1(out)).mean(dim=(2, 3))
        return self.fc(out)
