"""Linear warm-up of the training attack's radius.

    eps_t = eps * min(1, (t + 1) / warmup_steps)     (t = optimiser step)

Adversarial training at a large radius from a random initialisation can sit on a plateau where the
network predicts a constant (MNIST at eps 0.3 is the classic case: the loss stays at log 10). Growing
the radius over the first steps (as in Gowal et al. 2018 and most certified-training schedules) avoids
it. Only ``pl_module.train_attack`` changes: validation and test always attack at the full radius.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from lit_robust.errors import ConfigError


class EpsWarmup(Callback):
    """Ramp ``pl_module.train_attack.eps`` linearly from ~0 to its configured value.

    Args:
        warmup_steps: number of optimiser steps of the ramp (>= 1).
    """

    def __init__(self, warmup_steps: int = 500) -> None:
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 1:
            raise ConfigError(f"EpsWarmup.warmup_steps must be an integer >= 1, got {warmup_steps!r}")
        self.warmup_steps = warmup_steps
        self.target_eps: float | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        attack = getattr(pl_module, "train_attack", None)
        if attack is None:
            raise ConfigError(
                f"EpsWarmup needs a method with a train_attack; {type(pl_module).__name__} has none"
            )
        if self.target_eps is None:
            self.target_eps = attack.eps

    def eps_at(self, step: int) -> float:
        return self.target_eps * min(1.0, (step + 1) / self.warmup_steps)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        pl_module.train_attack.eps = self.eps_at(trainer.global_step)
        pl_module.log("train/eps", pl_module.train_attack.eps, on_step=True, on_epoch=False)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.target_eps is not None and getattr(pl_module, "train_attack", None) is not None:
            pl_module.train_attack.eps = self.target_eps
