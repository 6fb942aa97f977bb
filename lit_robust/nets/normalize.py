"""Per-channel input normalisation as a layer, plus argument and input checks shared by the nets.

Attacks work in input space ([0, 1] images, epsilon balls measured there), so dataset normalisation must
happen inside the network, not in the data pipeline. Every net in :mod:`lit_robust.nets` therefore takes
optional ``mean``/``std`` arguments and, when they are given, starts with a :class:`Normalize` layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lit_robust.errors import ConfigError
from lit_robust.validate import number

__all__ = ["Normalize"]


class Normalize(nn.Module):
    """Per-channel affine normalisation ``(x - mean) / std`` for inputs of shape (N, C, ...).

    ``mean`` and ``std`` are stored as (non-trainable) buffers of shape (1, C, 1, 1), so they move with
    ``.to(device)`` and are saved in the ``state_dict``. The input is never modified in place.

    Args:
        mean: Per-channel mean subtracted from the input, one value per channel (e.g. CIFAR-10
            ``[0.4914, 0.4822, 0.4465]``).
        std: Per-channel standard deviation the centred input is divided by, one value per channel,
            each > 0 (e.g. CIFAR-10 ``[0.2471, 0.2435, 0.2616]``).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        mean_values = _float_list("Normalize", "mean", mean)
        std_values = _float_list("Normalize", "std", std)
        if len(mean_values) != len(std_values):
            raise ConfigError(
                f"Normalize: mean and std must have the same length (one value per channel), "
                f"got {len(mean_values)} means {mean_values} and {len(std_values)} stds {std_values}"
            )
        if any(s <= 0 for s in std_values):
            raise ConfigError(f"Normalize: every std must be > 0, got {std_values}")
        self.num_channels = len(mean_values)
        self.register_buffer("mean", torch.tensor(mean_values, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std_values, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ConfigError(
                f"Normalize has {self.num_channels} channel(s) (length of mean/std) but got input of shape "
                f"{_shape(x)}: expected (N, {self.num_channels}, ...); give one mean/std value per channel"
            )
        mean, std = self.mean, self.std
        if x.dim() != 4:  # (N, C) or (N, C, L) or (N, C, D, H, W): reshape the (1, C, 1, 1) buffers
            view = (1, self.num_channels) + (1,) * (x.dim() - 2)
            mean, std = mean.view(view), std.view(view)
        return (x - mean) / std

    def extra_repr(self) -> str:
        mean = [round(v, 4) for v in self.mean.flatten().tolist()]
        std = [round(v, 4) for v in self.std.flatten().tolist()]
        return f"mean={mean}, std={std}"


# --------------------------------------------------------------------------------------------------
# Helpers shared by the nets (private to lit_robust.nets).
# --------------------------------------------------------------------------------------------------


def _shape(x: torch.Tensor) -> str:
    """Shape as a plain tuple string, e.g. ``(3, 32, 32)`` (``torch.Size`` repr is noisier)."""
    return str(tuple(x.shape))


def _float_list(owner: str, name: str, value: object) -> list[float]:
    if isinstance(value, torch.Tensor):
        value = value.detach().flatten().tolist()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ConfigError(f"{owner}: {name} must be a list of floats (one per channel), got {value!r}")
    out: list[float] = []
    for v in value:
        out.append(number(f"{owner}.{name}[{len(out)}]", v))
    if not out:
        raise ConfigError(f"{owner}: {name} must not be empty (one value per input channel)")
    return out


def _input_normalization(
    owner: str, mean: list[float] | None, std: list[float] | None, in_channels: int | None
) -> nn.Module:
    """``Normalize(mean, std)`` when both are given, ``nn.Identity()`` when both are None.

    With ``in_channels`` set, the lengths of mean/std must equal it (checked here, so the error names the
    net and the argument rather than surfacing at the first forward pass).
    """
    if mean is None and std is None:
        return nn.Identity()
    if mean is None or std is None:
        missing, given = ("mean", "std") if mean is None else ("std", "mean")
        raise ConfigError(f"{owner}: {given} is set but {missing} is not; give both mean and std, or neither")
    mean_values = _float_list(owner, "mean", mean)
    std_values = _float_list(owner, "std", std)
    if in_channels is not None:
        for name, values in (("mean", mean_values), ("std", std_values)):
            if len(values) != in_channels:
                raise ConfigError(
                    f"{owner}: {name} has {len(values)} value(s) {values} but in_channels={in_channels}; "
                    f"give one {name} value per input channel"
                )
    if any(s <= 0 for s in std_values):
        raise ConfigError(f"{owner}: every std must be > 0, got {std_values}")
    return Normalize(mean_values, std_values)


def _check_image_input(owner: str, x: torch.Tensor, in_channels: int, input_size: int | None = None) -> None:
    """Raise ConfigError unless ``x`` is (N, in_channels, H, W) (with H == W == input_size if given)."""
    if x.dim() != 4:
        raise ConfigError(
            f"{owner} expects a 4-D input batch (N, C, H, W), got input of shape {_shape(x)}"
            + (": add a channel dimension (e.g. x.unsqueeze(1))" if x.dim() == 3 else "")
        )
    if x.shape[1] != in_channels:
        raise ConfigError(
            f"{owner} expects {in_channels} input channel(s), got input of shape {_shape(x)} with "
            f"{x.shape[1]} channel(s) per sample {_shape(x[0])}: set model.net.init_args.in_channels="
            f"{x.shape[1]} (and mean/std with {x.shape[1]} value(s)) or use a matching dataset"
        )
    if input_size is not None and (x.shape[2] != input_size or x.shape[3] != input_size):
        raise ConfigError(
            f"{owner} expects {input_size}x{input_size} inputs, got input of shape {_shape(x)} with "
            f"spatial size {x.shape[2]}x{x.shape[3]}: set model.net.init_args.input_size (square inputs only)"
        )
