"""Robust-training methods: LightningModules that override only ``training_loss``."""

from lit_robust.methods.base import RobustClassifier
from lit_robust.methods.erm import ERM
from lit_robust.methods.pgd_at import PGDAT

__all__ = ["RobustClassifier", "ERM", "PGDAT"]
