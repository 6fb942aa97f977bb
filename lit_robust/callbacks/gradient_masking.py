"""AutoAttack-style gradient-masking checks (Croce & Hein 2020, ``autoattack/checks.py``; Athalye et al.
2018), run on ``num_samples`` fixed validation images.

Each check gives a number and a flag (1 = suspicious); a raised flag also gives a ``rank_zero_warn``:

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
- ``more_steps``: robust accuracy under PGD with ``steps_factor`` x the steps and ``restarts``. Flag if
  it is below the evaluation attack's by more than ``tolerance`` (the evaluation attack is too weak).
- ``eps_monotone``: robust accuracy of seeded PGD at ``eps_factors`` x eps must not increase with eps
  (beyond ``tolerance``).
- ``large_eps``: at eps = 1 (L_inf; the whole [0,1] box) robust accuracy must be <= ``large_eps_max_acc``.

Counts are summed over ranks (``trainer.strategy.reduce``) before any ratio is taken, so the numbers
and the flags are those of all ranks' images together, and equal on every rank. Logged under
``masking/`` (``masking/acc_whitebox``, ``masking/flag_blackbox``, ``masking/num_flags``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from lit_robust.attacks import PGD
from lit_robust.callbacks._common import (
    check_float,
    check_floats,
    check_int,
    is_due,
    log_values,
    monitoring,
    samples_to_take,
)
from lit_robust.errors import ConfigError

MESSAGES = {
    "zero_grad": "{v:.1%} of the inputs have an exactly zero input gradient: attacks cannot move them",
    "softmax_output": "the net's outputs are probabilities (non-negative, rows sum to 1), not logits",
    "randomized": "{v:.1%} of the inputs give different outputs in two eval-mode passes: a randomized net",
    "blackbox": "a gradient-free random-vertex attack beats the white-box attack",
    "more_steps": "PGD with more steps/restarts beats the evaluation attack by more than the tolerance",
    "eps_monotone": "robust accuracy increases with eps",
    "large_eps": "robust accuracy at the largest eps stays high",
}


class GradientMaskingCheck(Callback):
    """Warnings and flags for gradient masking / a too weak evaluation, on validation.

    Args:
        every_n_epochs: run on every n-th validation epoch of fit (always in ``validate``).
        num_samples: validation images (the first ones, across ranks).
        random_restarts: random vertices tried by the black-box attack.
        steps_factor: the stronger PGD uses ``steps_factor`` x the base steps.
        restarts: random restarts of the stronger PGD.
        base_steps: steps of the seeded PGD used for the eps sweep (and, times ``steps_factor``, the
            stronger attack).
        eps_factors: multiples of the module's eps for the monotonicity sweep (increasing).
        large_eps_max_acc: accuracy allowed at eps = 1 (L_inf) or sqrt(d) (L_2).
        tolerance: accuracy slack (fraction) of the comparisons.
        zero_grad_tolerance: fraction of zero gradients tolerated.
        seed: seed of every attack the check runs.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_samples: int = 200,
        random_restarts: int = 20,
        steps_factor: int = 5,
        restarts: int = 2,
        base_steps: int = 20,
        eps_factors: Sequence[float] = (0.5, 1.0, 1.5),
        large_eps_max_acc: float = 0.1,
        tolerance: float = 0.02,
        zero_grad_tolerance: float = 0.0,
        seed: int = 0,
    ) -> None:
        name = "GradientMaskingCheck"
        self.every_n_epochs = check_int(name, "every_n_epochs", every_n_epochs)
        self.num_samples = check_int(name, "num_samples", num_samples)
        self.random_restarts = check_int(name, "random_restarts", random_restarts)
        self.steps_factor = check_int(name, "steps_factor", steps_factor)
        self.restarts = check_int(name, "restarts", restarts)
        self.base_steps = check_int(name, "base_steps", base_steps)
        self.eps_factors = check_floats(name, "eps_factors", eps_factors)
        if self.eps_factors != sorted(self.eps_factors):
            raise ConfigError(f"{name}.eps_factors must be increasing, got {list(eps_factors)}")
        self.large_eps_max_acc = check_float(name, "large_eps_max_acc", large_eps_max_acc)
        self.tolerance = check_float(name, "tolerance", tolerance)
        self.zero_grad_tolerance = check_float(name, "zero_grad_tolerance", zero_grad_tolerance)
        self.seed = check_int(name, "seed", seed, 0)
        self.last: dict[str, float] = {}
        self._active = False

    # ------------------------------------------------------------------ attacks
    def _pgd(self, pl_module: LightningModule, eps: float, steps: int, restarts: int = 1) -> PGD:
        return PGD(eps=eps, norm=pl_module.norm, steps=steps, restarts=restarts, seed=self.seed)

    def random_vertices(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str):
        """Per-sample: is the image still correct under each of ``random_restarts`` random vertices?
        Returns the bool (N,) "survives all"."""
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        survives = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        with torch.no_grad():
            for _ in range(self.random_restarts):
                u = torch.randn(x.shape, generator=generator, device=x.device)
                if norm == "inf":
                    delta = eps * u.sign()
                else:
                    delta = eps * u / u.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
                survives &= net((x + delta).clamp(0, 1)).argmax(1) == y
        return survives

    # ------------------------------------------------------------------ hooks
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._active = is_due(trainer, self.every_n_epochs)
        self._seen = 0
        self._counts: dict[str, torch.Tensor] = {}

    def _add(self, key: str, value: torch.Tensor | float) -> None:
        value = torch.as_tensor(value, dtype=torch.float64)
        self._counts[key] = self._counts.get(key, torch.zeros((), dtype=torch.float64)) + value.cpu()

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs,
        batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._active:
            return
        n = samples_to_take(batch, self._seen, math.ceil(self.num_samples / trainer.world_size))
        if n == 0:
            return
        self._seen += n
        x, y = batch[0][:n].detach(), batch[1][:n]
        net, eps, norm = pl_module.net, pl_module.eps, pl_module.norm
        was_training = net.training
        net.eval()
        try:
            with monitoring(pl_module.device):
                self._check_batch(pl_module, net, x, y, eps, norm)
        finally:
            net.train(was_training)

    def _check_batch(self, pl_module, net: nn.Module, x, y, eps: float, norm: str) -> None:
        x, y = x.clone(), y.clone()  # not inference tensors
        self._add("n", x.shape[0])
        with torch.enable_grad():
            xg = x.clone().requires_grad_(True)
            out = net(xg)
            (grad,) = torch.autograd.grad(F.cross_entropy(out.float(), y, reduction="sum"), xg)
        out = out.detach()
        self._add("zero_grad", (grad.flatten(1).abs().sum(1) == 0).sum())
        probs = (out.min(1).values >= 0) & ((out.sum(1) - 1).abs() < 1e-4)
        self._add("softmax_rows", probs.sum())
        with torch.no_grad():
            self._add("randomized", ((net(x) - out).flatten(1).abs().amax(1) > 1e-6).sum())
            clean = net(x).argmax(1) == y
        self._add("clean", clean.sum())

        def robust(attack) -> torch.Tensor:  # every robust count: correct clean AND under the attack
            return net_correct(net, attack(net, x, y), y) & clean

        white = robust(pl_module.eval_attack)
        self._add("whitebox", white.sum())
        black = self.random_vertices(net, x, y, eps, norm) & clean
        self._add("blackbox", black.sum())
        self._add("black_only", (white & ~black).sum())
        strong = self._pgd(pl_module, eps, self.base_steps * self.steps_factor, self.restarts)
        self._add("more_steps", (net_correct(net, strong(net, x, y), y) & white).sum())
        for i, factor in enumerate(self.eps_factors):
            self._add(
                f"eps_{i}",
                robust(self._pgd(pl_module, factor * eps, self.base_steps)).sum(),
            )
        big = 1.0 if norm == "inf" else math.sqrt(x[0].numel())
        self._add(
            "large_eps",
            robust(self._pgd(pl_module, big, self.base_steps)).sum(),
        )

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active:
            return
        self._active = False
        keys = sorted(self._counts)
        stacked = torch.stack([self._counts[k] for k in keys]).to(pl_module.device)
        total = dict(zip(keys, trainer.strategy.reduce(stacked, reduce_op="sum").tolist(), strict=True))
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
        for key, raised in flags.items():
            v[f"flag_{key}"] = float(raised)
            if raised:
                detail = MESSAGES[key].format(v=v.get(key, 0.0))
                rank_zero_warn(f"GradientMaskingCheck (epoch {trainer.current_epoch}): {detail}")
        v["num_flags"] = float(sum(flags.values()))
        self.last = v
        log_values(pl_module, {f"masking/{k}": val for k, val in v.items()})


def net_correct(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bool (N,): the net classifies x correctly."""
    with torch.no_grad():
        return net(x).argmax(1) == y
