"""Pre-activation ResNets (He et al. 2016), CIFAR variant as used by Rice et al. (2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lit_robust.nets.normalize import _check_image_input, _input_normalization
from lit_robust.validate import choice, integer, integers

__all__ = ["PreActBlock", "PreActResNet", "PreActResNet18"]


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-Conv3x3-BN-ReLU-Conv3x3 plus identity (or 1x1 conv) shortcut.

    When the block changes resolution or width, the shortcut is a bias-free 1x1 conv applied to the
    pre-activated input relu(bn1(x)), as in the reference CIFAR implementation (Rice et al.; RobustBench's
    ``PreActBlockV2``), or to x itself with ``shortcut_on="input"`` (RobustBench's ``PreActBlock``).

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first 3x3 conv (and of the shortcut conv).
        shortcut_on: ``"activation"`` (relu(bn1(x))) or ``"input"`` (x): what the 1x1 shortcut conv sees.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut_on: str = "activation") -> None:
        super().__init__()
        self.shortcut_on = choice("PreActBlock.shortcut_on", shortcut_on, ("activation", "input"))
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            # Sequential so parameter names match the reference code (``shortcut.0.weight``).
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        if self.shortcut is None:
            residual = x
        else:
            residual = self.shortcut(out if self.shortcut_on == "activation" else x)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + residual


class PreActResNet(nn.Module):
    """Pre-activation ResNet with basic blocks, CIFAR variant (no stem max-pool).

    From "Identity Mappings in Deep Residual Networks" (He, Zhang, Ren, Sun, ECCV 2016), in the CIFAR
    form used by "Overfitting in adversarially robust deep learning" (Rice, Wong, Kolter, ICML 2020)::

        [Normalize] -> Conv 3x3 (base_width, stride 1, no bias)
        -> stage i = 0..len(num_blocks)-1: num_blocks[i] PreActBlocks of width base_width * 2**i,
           the first with stride 1 for stage 0 and stride 2 otherwise
        -> BN -> ReLU (``final_bn``) -> global average pool -> Linear(num_classes)

    The global average pool is a mean over H and W (equal to the reference ``avg_pool2d(out, 4)`` on 32x32
    inputs, accepts other sizes, and has a deterministic CUDA backward). PyTorch default initialisation.

    Args:
        num_blocks: Number of PreActBlocks in each stage, e.g. [2, 2, 2, 2] for PreActResNet-18.
        num_classes: Number of output logits.
        in_channels: Number of input channels (3 for CIFAR-10, 1 for MNIST).
        base_width: Width of the stem and of the first stage; stage i has base_width * 2**i channels.
        mean: Per-channel input mean for a leading Normalize layer, one value per input channel
            (None: no normalisation).
        std: Per-channel input std for the Normalize layer, each > 0 (None: no normalisation).
        final_bn: the BN -> ReLU before the pool (He et al.; RobustBench's ``bn_before_fc=True``). False
            pools the last block's output directly, as RobustBench's plain ``PreActResNet18`` does.
        shortcut_on: what the blocks' 1x1 shortcut convs see, see :class:`PreActBlock`. RobustBench's plain
            ``PreActResNet18`` is ``final_bn=False, shortcut_on="input"``; its ``PreActBlockV2`` nets with
            ``bn_before_fc=True`` (Rice et al.) are the defaults.
    """

    def __init__(
        self,
        num_blocks: list[int],
        num_classes: int = 10,
        in_channels: int = 3,
        base_width: int = 64,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        final_bn: bool = True,
        shortcut_on: str = "activation",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_blocks = integers(f"{name}.num_blocks", num_blocks, 1)
        self.num_classes = integer(f"{name}.num_classes", num_classes, 1)
        self.in_channels = integer(f"{name}.in_channels", in_channels, 1)
        self.base_width = integer(f"{name}.base_width", base_width, 1)
        self.normalize = _input_normalization(name, mean, std, self.in_channels)

        self.conv1 = nn.Conv2d(self.in_channels, self.base_width, kernel_size=3, padding=1, bias=False)
        # Stages are registered as layer1, layer2, ... so that state_dict keys match the reference code
        # (a checkpoint trained without Normalize loads with strict=False; only normalize.* is missing).
        self._stage_names: list[str] = []
        width_in = self.base_width
        for i, n in enumerate(self.num_blocks):
            width = self.base_width * 2**i
            strides = [1 if i == 0 else 2] + [1] * (n - 1)
            blocks = []
            for stride in strides:
                blocks.append(PreActBlock(width_in, width, stride, shortcut_on))
                width_in = width
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self._stage_names.append(f"layer{i + 1}")
        self.final_bn = bool(choice(f"{name}.final_bn", final_bn, (True, False)))
        self.bn = nn.BatchNorm2d(width_in) if final_bn else None
        self.linear = nn.Linear(width_in, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image_input(type(self).__name__, x, self.in_channels)
        out = self.conv1(self.normalize(x))
        for stage in self._stage_names:
            out = getattr(self, stage)(out)
        if self.bn is not None:
            out = F.relu(self.bn(out))
        out = out.mean(dim=(2, 3))
        return self.linear(out)


class PreActResNet18(PreActResNet):
    """PreActResNet-18 for 32x32 images, the CIFAR-10 network of Rice et al. 2020 (~11.17M parameters).

    ``PreActResNet(num_blocks=[2, 2, 2, 2], base_width=64)``: 3x3 stem conv with 64 channels (no max-pool),
    four stages of two PreActBlocks with 64/128/256/512 channels and strides 1/2/2/2, final BN-ReLU,
    global average pool and a linear layer (He et al. 2016, "Identity Mappings in Deep Residual
    Networks"; Rice, Wong, Kolter 2020, "Overfitting in adversarially robust deep learning").
    11,172,170 parameters with 3 input channels and 10 classes.

    Args:
        num_classes: Number of output logits.
        in_channels: Number of input channels (3 for CIFAR-10).
        mean: Per-channel input mean for a leading Normalize layer, one value per input channel
            (None: no normalisation).
        std: Per-channel input std for the Normalize layer, each > 0 (None: no normalisation).
        final_bn, shortcut_on: see :class:`PreActResNet` (``False, "input"``: RobustBench's plain
            ``PreActResNet18``).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        final_bn: bool = True,
        shortcut_on: str = "activation",
    ) -> None:
        super().__init__(
            num_blocks=[2, 2, 2, 2],
            num_classes=num_classes,
            in_channels=in_channels,
            base_width=64,
            mean=mean,
            std=std,
            final_bn=final_bn,
            shortcut_on=shortcut_on,
        )
