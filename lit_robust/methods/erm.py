"""Empirical risk minimisation: the non-robust baseline.  loss = mean_i CE(f(x_i), y_i)."""

from __future__ import annotations

import torch

from lit_robust.losses import cross_entropy
from lit_robust.methods.base import RobustClassifier


class ERM(RobustClassifier):
    """Standard training on clean inputs (validation still reports robust accuracy).

    Checkpoints are selected on validation clean accuracy: robustness is not what ERM optimises."""

    monitor = "val/clean_acc"

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        self.log_accuracy("train", "clean", logits, y)
        return cross_entropy(logits, y).mean()
