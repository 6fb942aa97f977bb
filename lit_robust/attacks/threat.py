"""Threat models: the L_inf and L_2 balls of radius eps around x, intersected with the box [0, 1].

Each ball knows three things, all on per-sample perturbations ``delta`` of shape (N, ...):

- ``project(delta)``: Euclidean projection onto {||delta|| <= eps};
- ``random_init(x)``: a uniform sample of the ball (then clipped so that x + delta is in [0, 1]);
- ``ascent_direction(grad)``: the steepest-ascent direction of unit norm, i.e.
  sign(g) for L_inf and g / ||g||_2 for L_2.

Box clipping ``delta <- clip(x + delta, 0, 1) - x`` only shrinks each coordinate's magnitude when x is in
[0, 1], so "project onto the ball, then clip to the box" stays inside both sets.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from lit_robust.errors import ConfigError

_LINF_NAMES = {"inf", "linf", "l_inf", "infinity"}
_L2_NAMES = {"2", "l2", "l_2"}


def _per_sample_norm(t: torch.Tensor, p: float) -> torch.Tensor:
    """Norm of each sample, shaped (N, 1, ..., 1) for broadcasting."""
    norms = t.flatten(1).norm(p=p, dim=1)
    return norms.view(-1, *([1] * (t.dim() - 1)))


class Ball(ABC):
    """An eps-ball of one norm. Subclasses give the norm's projection, sampling and ascent step."""

    name: str
    p: float

    def __init__(self, eps: float) -> None:
        self.eps = float(eps)

    def norm(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-sample norm ``||delta_i||_p`` as a vector of shape (N,)."""
        return delta.flatten(1).norm(p=self.p, dim=1)

    @abstractmethod
    def project(self, delta: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def random_init(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...

    @abstractmethod
    def ascent_direction(self, grad: torch.Tensor) -> torch.Tensor: ...

    def feasible_box(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(lo, hi)`` when {x + delta : ||delta|| <= eps} intersected with [0, 1]^d is the box
        [lo, hi] (L_inf), so that projecting a point onto it is one clamp; None otherwise (L_2)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps:g})"


class LinfBall(Ball):
    """{delta : max_i |delta_i| <= eps}."""

    name, p = "inf", math.inf

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        """Coordinate-wise clip to [-eps, eps]."""
        return delta.clamp(-self.eps, self.eps)

    def random_init(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """delta ~ U[-eps, eps]^d."""
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2 * u - 1) * self.eps

    def ascent_direction(self, grad: torch.Tensor) -> torch.Tensor:
        """sign(g): the maximiser of <g, v> over ||v||_inf <= 1."""
        return grad.sign()

    def feasible_box(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """lo = max(x - eps, 0), hi = min(x + eps, 1): the L_inf ball and the box [0, 1] meet in a box."""
        return (x - self.eps).clamp_(min=0.0), (x + self.eps).clamp_(max=1.0)


class L2Ball(Ball):
    """{delta : ||delta||_2 <= eps}."""

    name, p = "2", 2.0

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        """delta * min(1, eps / ||delta||_2)."""
        norms = _per_sample_norm(delta, 2.0)
        factor = torch.where(norms > self.eps, self.eps / norms.clamp_min(1e-12), torch.ones_like(norms))
        return delta * factor

    def random_init(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform in the ball: direction z/||z|| with z ~ N(0, I), radius eps * U^(1/d)."""
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        z = z / _per_sample_norm(z, 2.0).clamp_min(1e-12)
        d = x[0].numel()
        u = torch.rand(
            (x.shape[0],) + (1,) * (x.dim() - 1), generator=generator, device=x.device, dtype=x.dtype
        )
        return z * self.eps * u.pow(1.0 / d)

    def ascent_direction(self, grad: torch.Tensor) -> torch.Tensor:
        """g / ||g||_2: the maximiser of <g, v> over ||v||_2 <= 1 (0 where g = 0)."""
        return grad / _per_sample_norm(grad, 2.0).clamp_min(1e-12)


def canonical_norm(norm: str | float | int) -> str:
    """Map the accepted spellings of a norm (``"inf"``, ``"Linf"``, ``float("inf")``, ``2``, ``"L2"``) to
    ``"inf"`` or ``"2"``; anything else raises :class:`ConfigError`."""
    if isinstance(norm, (int, float)) and not isinstance(norm, bool):
        if math.isinf(norm):
            return "inf"
        if norm == 2:
            return "2"
    elif isinstance(norm, str):
        key = norm.strip().lower()
        if key in _LINF_NAMES:
            return "inf"
        if key in _L2_NAMES:
            return "2"
    raise ConfigError(f"norm must be one of 'inf' (L_inf) or '2' (L_2), got {norm!r}")


def make_ball(norm: str | float | int, eps: float) -> Ball:
    """The ball of the given norm and radius: ``make_ball("inf", 0.3)``."""
    return LinfBall(eps) if canonical_norm(norm) == "inf" else L2Ball(eps)
