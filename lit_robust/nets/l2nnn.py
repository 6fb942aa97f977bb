"""L2NNN classifiers (Qian & Wegman, ICLR 2019): K overlapping L2-nonexpansive nets, one logit each.

Topology of the authors' released models (widths are configurable; the paper does not give them):

    [mean subtraction] -> [centre crop] -> per conv: NEConv (input / K) -> two-sided ReLU [-> norm-pool 2x2]
    -> flatten -> per FC: NEFC -> two-sided ReLU -> per class: unit-norm filter + bias -> logit y_k

The first ``branch_point`` hidden layers are shared by all classes; the rest are private to each class
(run as one grouped/batched net). MNIST release: convs and the first FCs shared, the last FC private.
CIFAR-10 release: ``branch_point=0``, ten separate nets.

Certificate: every logit is an L-Lipschitz function of the input in L2, where L is the product of the
per-layer bounds sqrt(b(W)) along that class's path (exactly 1 under the strict scheme), so the
prediction cannot change within radius gap / (2L) (Lemma 6; see :mod:`lit_robust.diagnostics.gaps`).
"""

from __future__ import annotations

import torch
from torch import nn

from lit_robust.errors import ConfigError
from lit_robust.nets.l2nnn_layers import (
    Branch,
    ClassHeads,
    MaxPool,
    NEConv2d,
    NELinear,
    NormPool2d,
    OneSidedReLU,
    TwoSidedReLU,
    _Nonexpansive,
    check_scheme,
)
from lit_robust.nets.normalize import _shape
from lit_robust.validate import integer, integers

__all__ = ["L2NNNConvNet"]


class L2NNNConvNet(nn.Module):
    """Multi-L2NNN convolutional classifier taking [0, 1] images (N, C, H, W) to logits (N, K).

    Args:
        in_channels: image channels (1 for MNIST, 3 for CIFAR-10).
        image_size: side of the (square) input images.
        conv_channels: output channels of each conv layer (before the two-sided ReLU doubles them).
        pool: per conv layer, whether a 2x2/2 pooling follows it (default: after every conv).
        kernel_size: side of every conv kernel (stride 1, 'same' padding, input divided by kernel_size).
        fc: widths of the fully connected hidden layers.
        num_classes: number of logits K (one head each).
        branch_point: number of hidden layers (convs first, then FCs) shared by all classes; the others
            are private per class. None: all but the last FC layer are shared (the MNIST release);
            0: K separate networks (the CIFAR-10 release).
        weight_scheme: "strict" (W / sqrt(b(W)): exact L2NNN), "penalty" (raw W; the method adds the
            penalty L_W) or "none" (ordinary layers: an ablation). Switchable: :meth:`set_weight_scheme`.
        shrink_only: strict scheme divides by max(1, sqrt(b)) instead of sqrt(b) (never scales up).
        activation: "two_sided" ([relu(x), relu(-x)]) or "relu" (ablation).
        pooling: "norm" (L2-norm pooling) or "max" (ablation).
        crop: centre-crop the input to crop x crop (the CIFAR-10 release uses 28); None keeps it.
        mean: per-channel mean subtracted from the input (a bias: keeps the guarantee). Dividing by a
            std would multiply input distances and break the certificate, so there is no ``std``.
        heads: "per_class" (K unit-norm filters: each logit is 1-Lipschitz, certified radius gap/2; the
            paper's choice) or "joint" (one nonexpansive K-output layer after a fully shared trunk: the
            whole logit vector is 1-Lipschitz, radius gap/sqrt(2); needs branch_point = all layers).
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        conv_channels: list[int] = (32, 64),  # type: ignore[assignment]
        pool: list[bool] | None = None,
        kernel_size: int = 5,
        fc: list[int] = (1024, 1024, 128),  # type: ignore[assignment]
        num_classes: int = 10,
        branch_point: int | None = None,
        weight_scheme: str = "strict",
        shrink_only: bool = False,
        activation: str = "two_sided",
        pooling: str = "norm",
        crop: int | None = None,
        mean: list[float] | None = None,
        heads: str = "per_class",
    ) -> None:
        super().__init__()
        name = "L2NNNConvNet"
        self.in_channels = integer(f"{name}.in_channels", in_channels, 1)
        self.image_size = integer(f"{name}.image_size", image_size, 1)
        convs = integers(f"{name}.conv_channels", conv_channels, 1, allow_empty=True)
        fcs = integers(f"{name}.fc", fc, 1, allow_empty=True)
        self.num_classes = integer(f"{name}.num_classes", num_classes, 2)
        kernel_size = integer(f"{name}.kernel_size", kernel_size, 1)
        pool = [True] * len(convs) if pool is None else list(pool)
        if len(pool) != len(convs):
            raise ConfigError(f"{name}: pool needs one entry per conv layer ({len(convs)}), got {pool}")
        n_hidden = len(convs) + len(fcs)
        if branch_point is None:
            branch_point = max(n_hidden - 1, 0)
        if not 0 <= branch_point <= n_hidden:
            raise ConfigError(f"{name}: branch_point must be in [0, {n_hidden}], got {branch_point}")
        if heads not in ("per_class", "joint"):
            raise ConfigError(f"{name}: heads must be 'per_class' or 'joint', got {heads!r}")
        if heads == "joint" and branch_point != n_hidden:
            raise ConfigError(
                f"{name}: heads='joint' needs every hidden layer shared: set branch_point={n_hidden}"
            )
        if activation not in ("two_sided", "relu"):
            raise ConfigError(f"{name}: activation must be 'two_sided' or 'relu', got {activation!r}")
        if pooling not in ("norm", "max"):
            raise ConfigError(f"{name}: pooling must be 'norm' or 'max', got {pooling!r}")
        side = crop if crop is not None else self.image_size
        if crop is not None and not 1 <= crop <= self.image_size:
            raise ConfigError(f"{name}: crop must be in [1, image_size={self.image_size}], got {crop}")
        if mean is not None and len(mean) != self.in_channels:
            raise ConfigError(f"{name}: mean needs {self.in_channels} values (one per channel), got {mean}")
        self.crop, self.branch_point = crop, branch_point
        self.register_buffer(
            "mean", None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        )

        widen = 2 if activation == "two_sided" else 1
        act = TwoSidedReLU if activation == "two_sided" else OneSidedReLU
        layers: list[nn.Module] = []
        groups, width = 1, self.in_channels
        for i, (channels, pooled) in enumerate(zip(convs, pool, strict=True)):
            if i == branch_point:
                groups = self.num_classes
                layers.append(Branch(groups))
            layers += [NEConv2d(width, channels, kernel_size, groups=groups), act()]
            width = channels * widen
            if pooled:
                if side % 2:
                    raise ConfigError(f"{name}: 2x2 pooling needs an even feature-map side, got {side}")
                layers.append(NormPool2d(2) if pooling == "norm" else MaxPool(2))
                side //= 2
        self.features = nn.Sequential(*layers)
        width = width * side * side if convs else self.in_channels * side * side
        layers = []
        for i, features in enumerate(fcs, start=len(convs)):
            if i == branch_point:
                groups = self.num_classes
                layers.append(Branch(groups))
            layers += [NELinear(width, features, groups=groups), act()]
            width = features * widen
        self.classifier = nn.Sequential(*layers)
        self.joint = heads == "joint"
        self.heads = NELinear(width, self.num_classes) if self.joint else ClassHeads(width, self.num_classes)
        self.set_weight_scheme(weight_scheme, shrink_only)

    # ------------------------------------------------------------------ scheme and certificate
    def nonexpansive_layers(self) -> list[_Nonexpansive]:
        return [m for m in self.modules() if isinstance(m, _Nonexpansive)]

    def set_weight_scheme(self, scheme: str, shrink_only: bool | None = None) -> None:
        """Switch every layer to "strict", "penalty" or "none" (e.g. penalty first, strict at the end)."""
        self.weight_scheme = check_scheme(scheme, "model.net.weight_scheme")
        if shrink_only is not None:
            self.shrink_only = bool(shrink_only)
        for layer in self.nonexpansive_layers():
            layer.scheme, layer.shrink_only = self.weight_scheme, self.shrink_only
            layer._cache = None

    def get_extra_state(self) -> dict:
        """Checkpoints record the active weight scheme (a penalty-then-strict run ends strict)."""
        return {"weight_scheme": self.weight_scheme, "shrink_only": self.shrink_only}

    def set_extra_state(self, state: dict) -> None:
        self.set_weight_scheme(state["weight_scheme"], state["shrink_only"])

    def weight_penalty(self) -> torch.Tensor:
        """Sum over layers of L_W(W) (eq. 7); 0 for nets already within the bound."""
        return torch.stack([layer.penalty() for layer in self.nonexpansive_layers()]).sum()

    def lipschitz_certificate(self) -> tuple[float, bool]:
        """(L, per_logit): per-class heads: L = max over classes of the product of sqrt(b(W)) along the
        class's path, per_logit=True; joint head: the product over all layers, per_logit=False."""
        per_class = torch.ones(self.num_classes, dtype=torch.float64)
        for layer in self.nonexpansive_layers():
            bound = layer.lipschitz_bound().double().cpu()
            per_class = per_class * (bound if bound.numel() == self.num_classes else bound.max())
        return float(per_class.max()), not self.joint

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(
                f"L2NNNConvNet expects images (N, {self.in_channels}, H, W), got input of shape {_shape(x)}: "
                "set model.net.init_args.in_channels"
            )
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ConfigError(
                f"L2NNNConvNet expects {self.image_size}x{self.image_size} images, got input of shape "
                f"{_shape(x)}: set model.net.init_args.image_size"
            )
        if self.mean is not None:
            x = x - self.mean
        if self.crop is not None:
            top, left = (x.shape[-2] - self.crop) // 2, (x.shape[-1] - self.crop) // 2
            x = x[..., top : top + self.crop, left : left + self.crop]
        h = self.features(x.unsqueeze(1))
        h = self.classifier(h.flatten(2))
        return self.heads(h)[:, 0] if self.joint else self.heads(h)
