"""Callbacks: training schedules (EpsWarmup) and DDP-safe monitoring.

| callback | logs |
|---|---|
| :class:`RobustOverfitting` | ``overfit/*``: best vs last val robust accuracy, best epoch, train - val gap |
| :class:`ConfidenceGap` | ``val/mean_gap[_adv]``, gap histograms, ``val/certified_acc@r`` |
| :class:`LipschitzEstimate` | ``lipschitz/*``: per-layer spectral norms, their product, lower bounds |
| :class:`GradientMaskingCheck` | ``masking/*``: AutoAttack-style flags and warnings |
| :class:`AdversarialExamples` | PNG grid clean / perturbation / adversarial (and W&B image) |
| :class:`WandbRun` | W&B run config, ``define_metric`` summaries, weight histograms |
| :class:`Preemption` | (no metrics) SIGUSR1/SIGTERM: exact ``last.ckpt``, SLURM requeue, stop |
| :class:`MidEpochCheckpoint` | (no metrics) periodic ``last.ckpt`` only where it resumes exactly |
"""

from lit_robust.callbacks.adversarial_examples import AdversarialExamples
from lit_robust.callbacks.confidence_gap import ConfidenceGap
from lit_robust.callbacks.eps_warmup import EpsWarmup
from lit_robust.callbacks.gradient_masking import GradientMaskingCheck
from lit_robust.callbacks.lipschitz_estimate import LipschitzEstimate
from lit_robust.callbacks.mid_epoch_checkpoint import MidEpochCheckpoint
from lit_robust.callbacks.preemption import Preemption
from lit_robust.callbacks.robust_overfitting import RobustOverfitting
from lit_robust.callbacks.wandb_run import WandbRun

__all__ = [
    "AdversarialExamples",
    "ConfidenceGap",
    "EpsWarmup",
    "GradientMaskingCheck",
    "LipschitzEstimate",
    "MidEpochCheckpoint",
    "Preemption",
    "RobustOverfitting",
    "WandbRun",
]
