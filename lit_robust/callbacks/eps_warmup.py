"""Linear warm-up of the training attack's radius.

    eps_t = eps * min(1, (t + 1) / warmup_steps)     (t = optimiser step)

Adversarial training at a large radius from a random initialisation can sit on a plateau where the
network predicts a constant (MNIST at eps 0.3 is the classic case: the loss stays at log 10). Growing
the radius over the first steps (as in Gowal et al. 2018 and most certified-training schedules) avoids
it. Only ``pl_module.train_attack`` changes: validation and test always attack at the full radius.

The step size follows the radius: an explicitly configured step (PGD's ``alpha``, BETA's ``lr``) is scaled
by the same factor, so alpha_t / eps_t = alpha / eps during the warm-up and no step is larger, relative
to the ball, than the configured one (a fixed alpha = 0.1 at eps_t = 0.003 would jump across the ball and
land on its vertices every step). Steps left unset (None) are already derived from ``eps``.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from lit_robust.errors import ConfigError
from lit_robust.validate import integer

#: attributes of an attack that hold an explicitly configured step size (None: derived from eps)
STEP_FIELDS = ("alpha", "lr")


class EpsWarmup(Callback):
    """Ramp ``pl_module.train_attack.eps`` linearly from ~0 to its configured value.

    Args:
        warmup_steps: number of optimiser steps of the ramp (>= 1).
    """

    def __init__(self, warmup_steps: int = 500) -> None:
        self.warmup_steps = integer("EpsWarmup.warmup_steps", warmup_steps)
        self.target_eps: float | None = None
        self.target_steps: dict[str, float] = {}  # explicitly set step sizes, scaled with eps

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        attack = getattr(pl_module, "train_attack", None)
        if attack is None:
            raise ConfigError(
                f"EpsWarmup needs a method with a train_attack; {type(pl_module).__name__} has none"
            )
        if self.target_eps is None:
            self.target_eps = attack.eps
            self.target_steps = {
                name: getattr(attack, name) for name in STEP_FIELDS if getattr(attack, name, None) is not None
            }

    def factor_at(self, step: int) -> float:
        """min(1, (step + 1) / warmup_steps)."""
        return min(1.0, (step + 1) / self.warmup_steps)

    def eps_at(self, step: int) -> float:
        return self.target_eps * self.factor_at(step)

    def _set(self, attack, factor: float) -> None:
        attack.eps = self.target_eps * factor
        for name, value in self.target_steps.items():
            setattr(attack, name, value * factor)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._set(pl_module.train_attack, self.factor_at(trainer.global_step))
        pl_module.log("train/eps", pl_module.train_attack.eps, on_step=True, on_epoch=False)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.target_eps is not None and getattr(pl_module, "train_attack", None) is not None:
            self._set(pl_module.train_attack, 1.0)
