"""Fully connected classifier (multi-layer perceptron)."""

from __future__ import annotations

import torch
from torch import nn

from lit_robust.errors import ConfigError
from lit_robust.nets.normalize import _input_normalization, _shape
from lit_robust.validate import integer, integers

__all__ = ["MLP"]


class MLP(nn.Module):
    """Multi-layer perceptron: [Normalize] -> flatten -> (Linear -> ReLU) per hidden width -> Linear.

    Takes a batch in [0, 1] of any per-sample shape whose element count is ``in_features`` (e.g. MNIST
    (N, 1, 28, 28) with ``in_features=784``) and returns logits of shape (N, num_classes). Linear layers
    use PyTorch's default initialisation.

    Args:
        in_features: Number of input values per sample, C*H*W (784 for MNIST, 3072 for CIFAR-10).
        hidden: Widths of the hidden layers, each >= 1; an empty list gives a linear (softmax
            regression) model.
        num_classes: Number of output logits.
        mean: Per-channel input mean for a leading Normalize layer (None: no normalisation). The input
            must then be (N, C, ...) with C == len(mean).
        std: Per-channel input std for the Normalize layer, each > 0 (None: no normalisation).
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: list[int] = (256, 256),  # type: ignore[assignment]  # tuple: immutable default
        num_classes: int = 10,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.in_features = integer("MLP.in_features", in_features, 1)
        self.num_classes = integer("MLP.num_classes", num_classes, 1)
        widths = integers("MLP.hidden", hidden, 1, allow_empty=True)
        self.hidden = widths
        self.normalize = _input_normalization("MLP", mean, std, in_channels=None)
        layers: list[nn.Module] = []
        width_in = self.in_features
        for width in widths:
            layers += [nn.Linear(width_in, width), nn.ReLU()]
            width_in = width
        layers.append(nn.Linear(width_in, self.num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ConfigError(f"MLP expects a batch (N, ...) of samples, got input of shape {_shape(x)}")
        per_sample = x.shape[1:]
        if per_sample.numel() != self.in_features:
            raise ConfigError(
                f"MLP expects {self.in_features} input features per sample, got input of shape "
                f"{tuple(per_sample)} = {per_sample.numel()} features: "
                "set model.net.init_args.in_features or use a convolutional net"
            )
        x = self.normalize(x)
        return self.layers(x.flatten(1))
