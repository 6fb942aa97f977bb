"""Building blocks of L2-nonexpansive networks (Qian & Wegman, ICLR 2019).

Every block is nonexpansive in L2 (||f(a) - f(b)|| <= ||a - b||) under the ``strict`` weight scheme, so
any feed-forward stack of them is too.

Weights. For a matrix W (a conv kernel is flattened to [C_out, C_in*K1*K2]),

    sigma_max(W)^2 <= b(W) = min( r(W^T W), r(W W^T) ),    r(M) = max_i sum_j |M_ij|            (eq. 2)

- ``strict``: the forward pass uses W' = W / sqrt(b(W)), so sigma_max(W') <= 1 exactly.
- ``penalty``: the forward pass uses W and the loss adds
  L_W(W) = min( l(W^T W), l(W W^T) ),  l(M) = sum_i max(sum_j |M_ij| - 1, 0)              (eq. 7)
- ``none``: ordinary layers (the "no weight regularisation" ablation).

Feature tensors carry a group dimension G (dim 1) so that K per-class networks run as one batched net:
conv features are (N, G, C, H, W), fully connected ones (N, G, C); channels are always dim 2. G = 1 is a
shared trunk; :class:`Branch` repeats it K times.

Conv layers divide their input by sqrt(ceil(K1/S1) * ceil(K2/S2)), the most patches one input entry can
fall into, so the patch-extraction ("copy") step is nonexpansive too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lit_robust.errors import ConfigError

SCHEMES = ("strict", "penalty", "none")


def _row_gram_bound(w: torch.Tensor) -> torch.Tensor:
    """r(w w^T) = max_i sum_j |<w_i, w_j>| for w of shape (G, m, n) -> (G,).

    The maximising row i* is found without autograd; only row i* of the Gram matrix is recomputed with
    autograd, which gives the same value and the same (sub)gradient at O(m n) instead of O(m^2 n)."""
    with torch.no_grad():
        best = (w @ w.mT).abs().sum(dim=-1).argmax(dim=-1)  # (G,)
    row = w[torch.arange(w.shape[0], device=w.device), best]  # (G, n)
    return torch.einsum("gn,gmn->gm", row, w).abs().sum(dim=-1)


def gram_bound(weight: torch.Tensor) -> torch.Tensor:
    """b(W) = min(r(W^T W), r(W W^T)) for W of shape (G, m, n) -> (G,), computed in float32 or higher.

    The small Gram matrix (min(m, n) square) is computed first; any row of the large one gives a lower
    bound on its r (the row of the longest vector: one matrix-vector product), and when that bound already
    exceeds the small r, the min is the small r and the O(max(m, n)^2 min(m, n)) large Gram is skipped.
    Same value, same gradient: only the cost changes (``make bench``: the L2NNN b(W) row)."""
    w = weight if weight.dtype in (torch.float32, torch.float64) else weight.float()
    small, large = (w, w.mT) if w.shape[-2] <= w.shape[-1] else (w.mT, w)
    r_small = _row_gram_bound(small)
    with torch.no_grad():
        rows = large.detach()
        longest = rows.norm(dim=-1).argmax(dim=-1)  # (G,)
        row = rows[torch.arange(rows.shape[0], device=w.device), longest]
        lower = torch.einsum("gn,gmn->gm", row, rows).abs().sum(dim=-1)
    if bool((lower > r_small.detach()).all()):  # (one host sync per layer and step: a branch needs it)
        return r_small
    return torch.minimum(_row_gram_bound(large), r_small)


def gram_penalty(weight: torch.Tensor) -> torch.Tensor:
    """L_W(W) = min(l(W^T W), l(W W^T)) with l(M) = sum_i relu(sum_j |M_ij| - 1); (G, m, n) -> (G,)."""
    w = weight if weight.dtype in (torch.float32, torch.float64) else weight.float()

    def excess(gram: torch.Tensor) -> torch.Tensor:
        return F.relu(gram.abs().sum(dim=-1) - 1).sum(dim=-1)

    return torch.minimum(excess(w.mT @ w), excess(w @ w.mT))


def check_scheme(scheme: str, name: str = "weight_scheme") -> str:
    if scheme not in SCHEMES:
        raise ConfigError(f"{name} must be one of {list(SCHEMES)}, got {scheme!r}")
    return scheme


class _Nonexpansive(nn.Module):
    """A layer with weight ``(G*out, ...)`` seen as G matrices (G, out, fan_in) and a free bias.

    Subclasses call :meth:`effective_weight` in ``forward``. In eval mode the normalised weight is cached
    (recomputed when the raw weight changes) and treated as a constant."""

    def __init__(self, groups: int, out_features: int, weight_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.groups = groups
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(groups * out_features, *weight_shape))
        self.bias = nn.Parameter(torch.zeros(groups * out_features))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        self.scheme = "strict"
        self.shrink_only = False
        self._cache: tuple | None = None

    def matrices(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The weight as G matrices of shape (out, fan_in)."""
        w = self.weight if weight is None else weight
        return w.reshape(self.groups, self.out_features, -1)

    def scale(self) -> torch.Tensor:
        """Per-group divisor of the raw weight: sqrt(b(W)) (strict), max(1, sqrt(b)) (shrink-only), 1."""
        if self.scheme != "strict":
            return torch.ones(self.groups, device=self.weight.device)
        s = gram_bound(self.matrices()).clamp_min(1e-30).sqrt()
        return s.clamp_min(1.0) if self.shrink_only else s

    def effective_weight(self) -> torch.Tensor:
        key = (self.weight._version, self.weight.data_ptr(), self.scheme, self.shrink_only)
        if not self.training and self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        scale = self.scale().to(self.weight.dtype)
        w = self.weight / scale.repeat_interleave(self.out_features).view(-1, *[1] * (self.weight.dim() - 1))
        if not self.training:
            w = w.detach()
            self._cache = (key, w)
        return w

    def penalty(self) -> torch.Tensor:
        """Sum over groups of L_W(W) on the raw weight (eq. 7)."""
        return gram_penalty(self.matrices()).sum()

    def lipschitz_bound(self) -> torch.Tensor:
        """Per-group upper bound on the operator norm of the weight actually used: sqrt(b(W_used))."""
        with torch.no_grad():
            return gram_bound(self.matrices(self.effective_weight())).sqrt()

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)


class NEConv2d(_Nonexpansive):
    """Nonexpansive convolution on (N, G, C_in, H, W) -> (N, G, C_out, H', W'), one kernel set per group.

    y = conv(x / sqrt(ceil(K1/S1) ceil(K2/S2)), W') + bias,  W' = W / sqrt(b(W)) per group."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | str = "same",
        groups: int = 1,
    ) -> None:
        super().__init__(groups, out_channels, (in_channels, kernel_size, kernel_size))
        if padding == "same":
            if stride != 1:
                raise ConfigError("NEConv2d: padding 'same' needs stride 1; give an integer padding")
        elif not isinstance(padding, int) or padding < 0:
            raise ConfigError(f"NEConv2d: padding must be 'same' or an int >= 0, got {padding!r}")
        self.in_channels, self.kernel_size, self.stride, self.padding = (
            in_channels,
            kernel_size,
            stride,
            padding,
        )
        self.input_scale = 1.0 / math.ceil(kernel_size / stride)  # 1/sqrt(ceil(K/S)^2), square kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, g, c, h, w = x.shape
        out = F.conv2d(
            x.reshape(n, g * c, h, w) * self.input_scale,
            self.effective_weight(),
            self.bias,
            stride=self.stride,
            padding=self.padding,
            groups=self.groups,
        )
        return out.view(n, g, self.out_features, *out.shape[-2:])


class NELinear(_Nonexpansive):
    """Nonexpansive fully connected layer on (N, G, in) -> (N, G, out): y_g = W'_g x_g + b_g."""

    def __init__(self, in_features: int, out_features: int, groups: int = 1) -> None:
        super().__init__(groups, out_features, (in_features,))
        self.in_features = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.effective_weight().view(self.groups, self.out_features, self.in_features)
        return torch.einsum("ngi,goi->ngo", x, w) + self.bias.view(self.groups, self.out_features)


class ClassHeads(_Nonexpansive):
    """One scalar logit per class from a unit-norm filter: (N, G, in) -> (N, K), G in {1, K}.

    y_k = <w_k / ||w_k||, h_k> + b_k, where h_k is the class's own features (G = K) or the shared ones
    (G = 1). For a single row b(w) = ||w||^2, so the strict scheme is exactly w / ||w||."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__(num_classes, 1, (in_features,))
        self.in_features = in_features

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        w = self.effective_weight().view(self.groups, self.in_features)
        if h.shape[1] == 1:
            return h[:, 0] @ w.T + self.bias
        return torch.einsum("nki,ki->nk", h, w) + self.bias


class TwoSidedReLU(nn.Module):
    """x -> [relu(x), relu(-x)] concatenated along the channel dimension (2): widths double.

    Nonexpansive in every L_p norm, and distance-preserving between inputs of the same sign."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(x), F.relu(-x)], dim=2)


class OneSidedReLU(nn.Module):
    """Plain ReLU (the "no two-sided ReLU" ablation); widths stay the same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


def _pool_input(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    n, g, c, h, w = x.shape
    return x.reshape(n, g * c, h, w), (n, g, c)


class NormPool2d(nn.Module):
    """L2-norm pooling: each window -> sqrt(sum_window x^2 + eps), on (N, G, C, H, W).

    ``eps`` keeps the gradient finite at all-zero windows (plain sqrt gives NaN there); the map stays
    1-Lipschitz per window because ||grad|| = ||w|| / sqrt(||w||^2 + eps) < 1. Overlapping windows
    (stride < kernel) are divided by ceil(kernel/stride), the most windows an entry falls into (sqrt of
    ceil(K/S)^2), which keeps the layer nonexpansive. Zero padding is counted as zeros."""

    def __init__(self, kernel_size: int = 2, stride: int | None = None, eps: float = 1e-12) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.eps = kernel_size, stride or kernel_size, eps
        self.overlap = math.ceil(kernel_size / self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat, (n, g, c) = _pool_input(x)
        k = self.kernel_size
        sq = F.avg_pool2d(flat * flat, k, self.stride) * (k * k)
        out = (sq + self.eps).sqrt() / self.overlap
        return out.view(n, g, c, *out.shape[-2:])


class MaxPool(nn.Module):
    """Max-pooling over non-overlapping windows (the "no norm-pooling" ablation; still nonexpansive)."""

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat, (n, g, c) = _pool_input(x)
        out = F.max_pool2d(flat, self.kernel_size)
        return out.view(n, g, c, *out.shape[-2:])


class Branch(nn.Module):
    """Split a shared trunk into ``groups`` copies: (N, 1, ...) -> (N, G, ...) (free: an expand)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(x.shape[0], self.groups, *x.shape[2:])


class SplitResidual(nn.Module):
    """Nonexpansive residual block (paper A.3, eqs. 9-10), with t = sigmoid(theta) per channel:

        x1 = t x,  x2 = sqrt(1 - t^2) x   (split: an isometry)
        y  = t x1 + sqrt(1 - t^2) f(x2)   (merge: a 1x2 matrix of norm 1)

    so y = t^2 x + sqrt(1 - t^2) f(sqrt(1 - t^2) x) is nonexpansive whenever f is. Channels are dim 2;
    f must keep the shape. (Mixing without the split scaling, t x + sqrt(1 - t^2) f(x), can expand
    distances by up to sqrt(2).)"""

    def __init__(self, f: nn.Module, channels: int, init_t: float = 0.7) -> None:
        super().__init__()
        if not 0 < init_t < 1:
            raise ConfigError(f"SplitResidual: init_t must be in (0, 1), got {init_t!r}")
        self.f = f
        self.theta = nn.Parameter(torch.full((channels,), math.log(init_t / (1 - init_t))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1, 1, -1] + [1] * (x.dim() - 3)
        t = torch.sigmoid(self.theta).view(shape)
        s = (1 - t * t).clamp_min(0).sqrt()
        return t * t * x + s * self.f(s * x)
