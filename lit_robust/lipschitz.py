"""Spectral (L2 operator) norms by power iteration, for linear layers and for local Jacobians.

For a linear map A (a Linear or Conv layer without its bias, at a fixed input shape), power iteration on
A^T A gives sigma_max(A) = ||A||_2:

    v <- grad_v 1/2 ||A v||^2 = A^T A v,   v <- v / ||v||,   sigma = ||A v||

Conv layers are treated as the operators they are (borders and stride included), not as reshaped
kernels. For a nonlinear net f the same loop with a vector-Jacobian and a Jacobian-vector product at a
fixed x gives the local Jacobian norm ||J_f(x)||_2, a lower bound on f's Lipschitz constant.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import jvp, vjp


def _unit(v: torch.Tensor) -> torch.Tensor:
    """Normalise each sample (first dimension) to unit L2 norm."""
    return v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (v.dim() - 1)))


def operator_norm(
    linear_map: Callable[[torch.Tensor], torch.Tensor],
    input_shape: tuple[int, ...],
    iters: int = 100,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> float:
    """sigma_max of a linear map on inputs of ``input_shape`` (per sample, no batch dimension).

    ``linear_map`` must be linear (no bias): e.g. ``lambda v: F.conv2d(v, weight, stride=s, padding=p)``.
    The estimate approaches sigma_max from below as ``iters`` grows."""
    v = _unit(torch.randn((1, *input_shape), generator=generator, dtype=dtype, device=device))
    with torch.enable_grad():
        for _ in range(iters):
            v = v.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(0.5 * linear_map(v).pow(2).sum(), v)
            v = _unit(g)
    with torch.no_grad():
        return float(linear_map(v).flatten().norm())


def layer_operator_norm(
    layer: nn.Module, input_shape: tuple[int, ...], iters: int = 100, generator=None
) -> float:
    """sigma_max of a Linear or Conv layer's linear part (``layer(v) - layer(0)``: the bias cancels)."""
    p = next(layer.parameters())
    zero = torch.zeros((1, *input_shape), dtype=p.dtype, device=p.device)

    def linear_map(v: torch.Tensor) -> torch.Tensor:
        return layer(v) - layer(zero)

    return operator_norm(linear_map, input_shape, iters, generator, p.dtype, p.device)


def jacobian_norm(
    f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, iters: int = 50, generator=None
) -> torch.Tensor:
    """Per-sample local Jacobian spectral norm ||J_f(x_i)||_2 for a batch x (N, ...) -> (N,).

    ``f`` must treat samples independently (eval mode: no batch statistics). Power iteration with
    J^T J v = vjp(jvp(v)), on all samples at once."""
    x = x.detach()
    v = _unit(torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device))
    with torch.enable_grad():
        _, pullback = vjp(f, x)
        for _ in range(iters):
            _, jv = jvp(f, (x,), (v,))
            (jtjv,) = pullback(jv)
            v = _unit(jtjv)
        _, jv = jvp(f, (x,), (v,))
    return jv.detach().flatten(1).norm(dim=1)
