"""AutoAttack-style gradient-masking checks (Croce & Hein 2020, ``autoattack/checks.py``; Athalye et al.
2018) as pure functions: :meth:`MaskingChecks.counts` counts one batch, :meth:`MaskingChecks.report`
turns summed counts into rates and flags. Used by
:class:`~lit_robust.callbacks.GradientMaskingCheck` (validation) and ``evaluate --checks``.

Each check gives a number and a flag (1 = suspicious):

- ``zero_grad``: fraction of images whose input gradient of the cross-entropy is exactly 0
  (saturated softmax, quantised or non-differentiable layers). Flag if > ``zero_grad_tolerance``.
- ``softmax_output``: every output row is non-negative and sums to 1: the net returns probabilities,
  and attacks on its "logits" see flat losses. Flag if so.
- ``randomized``: fraction of images whose eval-mode outputs differ between two forward passes
  (dropout left on, random transforms): gradients of one pass do not attack the other. Flag if > 0.
- ``blackbox``: robust accuracy under a gradient-free attack (best of ``random_restarts`` random
  vertices of the ball: x + eps*sign(u) for L_inf, x + eps*u/||u|| for L_2), and the fraction of images
  that it breaks but the white-box evaluation attack does not. Flag if acc_blackbox < acc_whitebox -
  ``tolerance``: a black-box attack beating a white-box one is the classic masking sign.
- ``more_steps``: robust accuracy under PGD with ``steps_factor`` x ``base_steps`` and ``restarts``. Flag
  if it is below the evaluation attack's by more than ``tolerance`` (the evaluation attack is too weak).
- ``eps_monotone``: robust accuracy of seeded PGD at ``eps_factors`` x eps must not increase with eps
  (beyond ``tolerance``).
- ``large_eps``: at eps = 1 (L_inf; the whole [0,1] box) or sqrt(d) (L_2) robust accuracy must be
  <= ``large_eps_max_acc``.

Every robust count is of images correct clean AND under the attack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lit_robust.attacks import PGD

MESSAGES = {
    "zero_grad": "{v:.1%} of the inputs have an exactly zero input gradient: attacks cannot move them",
    "softmax_output": "the net's outputs are probabilities (non-negative, rows sum to 1), not logits",
    "randomized": "{v:.1%} of the inputs give different outputs in two eval-mode passes: a randomized net",
    "blackbox": "a gradient-free random-vertex attack beats the white-box attack",
    "more_steps": "PGD with more steps/restarts beats the evaluation attack by more than the tolerance",
    "eps_monotone": "robust accuracy increases with eps",
    "large_eps": "robust accuracy at the largest eps stays high",
}


def net_correct(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bool (N,): the net classifies x correctly."""
    with torch.no_grad():
        return net(x).argmax(1) == y


def random_vertices(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, restarts: int, seed: int = 0
) -> torch.Tensor:
    """Bool (N,): the image stays correct under each of ``restarts`` random vertices of the eps-ball
    (x + eps sign(u) for L_inf, x + eps u/||u|| for L_2, u ~ N(0, I) from a generator seeded ``seed``)."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    survives = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    with torch.no_grad():
        for _ in range(restarts):
            u = torch.randn(x.shape, generator=generator, device=x.device)
            if norm == "inf":
                delta = eps * u.sign()
            else:
                delta = eps * u / u.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
            survives &= net((x + delta).clamp(0, 1)).argmax(1) == y
    return survives


@dataclass
class MaskingChecks:
    """Settings of the checks (validated by the callback that builds them); see the module docstring."""

    random_restarts: int = 20
    steps_factor: int = 5
    restarts: int = 2
    base_steps: int = 20
    eps_factors: tuple[float, ...] = (0.5, 1.0, 1.5)
    large_eps_max_acc: float = 0.1
    tolerance: float = 0.02
    zero_grad_tolerance: float = 0.0
    seed: int = 0

    def _pgd(self, norm: str, eps: float, steps: int, restarts: int = 1) -> PGD:
        return PGD(eps=eps, norm=norm, steps=steps, restarts=restarts, seed=self.seed)

    def counts(
        self,
        net: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        norm: str,
        white_logits: torch.Tensor,
    ) -> dict[str, float]:
        """This batch's counts (sum them over batches and ranks, then :meth:`report`). ``net`` in eval
        mode; ``white_logits``: its logits at the evaluation attack's x'."""
        x, y = x.clone(), y.clone()  # not inference tensors
        c: dict[str, float] = {"n": float(x.shape[0])}
        with torch.enable_grad():
            xg = x.clone().requires_grad_(True)
            out = net(xg)
            (grad,) = torch.autograd.grad(F.cross_entropy(out.float(), y, reduction="sum"), xg)
        out = out.detach()
        c["zero_grad"] = float((grad.flatten(1).abs().sum(1) == 0).sum())
        c["softmax_rows"] = float(((out.min(1).values >= 0) & ((out.sum(1) - 1).abs() < 1e-4)).sum())
        with torch.no_grad():
            c["randomized"] = float(((net(x) - out).flatten(1).abs().amax(1) > 1e-6).sum())
            clean = net(x).argmax(1) == y
        c["clean"] = float(clean.sum())

        def robust(attack) -> torch.Tensor:  # correct clean AND under the attack
            return net_correct(net, attack(net, x, y), y) & clean

        white = (white_logits.argmax(1) == y) & clean
        black = random_vertices(net, x, y, eps, norm, self.random_restarts, self.seed) & clean
        strong = self._pgd(norm, eps, self.base_steps * self.steps_factor, self.restarts)
        c["whitebox"], c["blackbox"] = float(white.sum()), float(black.sum())
        c["black_only"] = float((white & ~black).sum())
        c["more_steps"] = float((net_correct(net, strong(net, x, y), y) & white).sum())
        for i, factor in enumerate(self.eps_factors):
            c[f"eps_{i}"] = float(robust(self._pgd(norm, factor * eps, self.base_steps)).sum())
        big = 1.0 if norm == "inf" else math.sqrt(x[0].numel())
        c["large_eps"] = float(robust(self._pgd(norm, big, self.base_steps)).sum())
        return c

    def report(self, total: dict[str, float]) -> tuple[dict[str, float], dict[str, bool]]:
        """``(values, flags)`` from summed counts: rates in [0, 1], ``flag_<check>`` and ``num_flags``
        in ``values``, and the raised flags by check name."""
        n = max(total["n"], 1.0)
        v = {
            "zero_grad": total["zero_grad"] / n,
            "softmax_output": float(total["softmax_rows"] == total["n"]),
            "randomized": total["randomized"] / n,
            "acc_clean": total["clean"] / n,
            "acc_whitebox": total["whitebox"] / n,
            "acc_blackbox": total["blackbox"] / n,
            "blackbox_only_broken": total["black_only"] / n,
            "acc_more_steps": total["more_steps"] / n,
            "acc_large_eps": total["large_eps"] / n,
        }
        sweep = [total[f"eps_{i}"] / n for i in range(len(self.eps_factors))]
        for factor, acc in zip(self.eps_factors, sweep, strict=True):
            v[f"acc_eps_x{factor:g}"] = acc
        flags = {
            "zero_grad": v["zero_grad"] > self.zero_grad_tolerance,
            "softmax_output": v["softmax_output"] == 1.0,
            "randomized": v["randomized"] > 0,
            "blackbox": v["acc_blackbox"] < v["acc_whitebox"] - self.tolerance,
            "more_steps": v["acc_more_steps"] < v["acc_whitebox"] - self.tolerance,
            "eps_monotone": any(b > a + self.tolerance for a, b in zip(sweep, sweep[1:], strict=False)),
            "large_eps": v["acc_large_eps"] > self.large_eps_max_acc,
        }
        v.update({f"flag_{k}": float(raised) for k, raised in flags.items()})
        v["num_flags"] = float(sum(flags.values()))
        return v, flags

    @staticmethod
    def message(check: str, values: dict[str, float]) -> str:
        """The warning text of a raised flag."""
        return MESSAGES[check].format(v=values.get(check, 0.0))
