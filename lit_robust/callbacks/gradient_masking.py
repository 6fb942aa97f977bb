"""Gradient-masking checks on ``num_samples`` fixed validation images, every ``every_n_epochs``
validation epochs: the checks of :mod:`lit_robust.diagnostics.masking` (zero gradients, softmax outputs,
randomness, a black-box attack, a stronger PGD, the eps sweep, a huge eps), each a rate and a flag; a
raised flag also gives a ``rank_zero_warn``.

The white-box attack is the validation step's own (its adversarial batch is reused); the stronger
attacks the checks need by definition run here, on the subset. Counts are summed over ranks
(``trainer.strategy.reduce``) before any ratio is taken, so the numbers and the flags are those of all
ranks' images together, and equal on every rank. Logged under ``masking/`` (``masking/acc_whitebox``,
``masking/flag_blackbox``, ``masking/num_flags``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from lit_robust.callbacks._common import SampledMonitor, evaluated, log_values, monitoring
from lit_robust.diagnostics.masking import MaskingChecks
from lit_robust.validate import floats, integer, non_negative


class GradientMaskingCheck(SampledMonitor):
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
        super().__init__(every_n_epochs, num_samples, optional_samples=False)
        name = "GradientMaskingCheck"
        self.checks = MaskingChecks(
            random_restarts=integer(f"{name}.random_restarts", random_restarts),
            steps_factor=integer(f"{name}.steps_factor", steps_factor),
            restarts=integer(f"{name}.restarts", restarts),
            base_steps=integer(f"{name}.base_steps", base_steps),
            eps_factors=tuple(floats(f"{name}.eps_factors", eps_factors, increasing=True)),
            large_eps_max_acc=non_negative(f"{name}.large_eps_max_acc", large_eps_max_acc),
            tolerance=non_negative(f"{name}.tolerance", tolerance),
            zero_grad_tolerance=non_negative(f"{name}.zero_grad_tolerance", zero_grad_tolerance),
            seed=integer(f"{name}.seed", seed, 0),
        )

    def start(self, pl_module: LightningModule) -> None:
        self._counts: dict[str, float] = {}

    def observe(self, pl_module: LightningModule, outputs, batch, n: int) -> None:
        white_logits = evaluated(pl_module, outputs, batch, n)["adv_logits"]  # the validation step's attack
        net = pl_module.net
        was_training = net.training
        net.eval()
        try:
            with monitoring(pl_module.device):
                counts = self.checks.counts(
                    net, batch[0][:n].detach(), batch[1][:n], pl_module.eps, pl_module.norm, white_logits
                )
        finally:
            net.train(was_training)
        for key, value in counts.items():
            self._counts[key] = self._counts.get(key, 0.0) + value

    def finish(self, trainer: Trainer, pl_module: LightningModule) -> None:
        keys = sorted(self._counts)
        stacked = torch.tensor([self._counts[k] for k in keys], dtype=torch.float64, device=pl_module.device)
        total = dict(zip(keys, trainer.strategy.reduce(stacked, reduce_op="sum").tolist(), strict=True))
        values, flags = self.checks.report(total)
        for key, raised in flags.items():
            if raised:
                detail = self.checks.message(key, values)
                rank_zero_warn(f"GradientMaskingCheck (epoch {trainer.current_epoch}): {detail}")
        self.last = values
        log_values(pl_module, {f"masking/{k}": val for k, val in values.items()})
