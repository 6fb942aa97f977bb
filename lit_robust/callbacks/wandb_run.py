"""What a W&B dashboard of a robust-training run needs beyond Lightning's WandbLogger.

- the full CLI config (every ``class_path``/``init_args`` of the run, from LightningCLI's
  SaveConfigCallback) in the run config under ``cli``;
- ``define_metric`` summaries, so the run table shows the best robust accuracy (max) rather than the last
  one: ``val/robust_acc`` -> max, ``val/clean_acc`` -> max, ``val/loss`` and ``val/robust_loss`` -> min,
  plus any ``summaries`` given; all against ``trainer/global_step``;
- optionally ``wandb.watch`` histograms of the parameters (and gradients).

Histograms of confidence gaps and image grids come from ConfidenceGap and AdversarialExamples; the
checkpoint artifact from ``WandbLogger(log_model=true)``. Without a WandbLogger this callback does
nothing (it warns once). Everything runs on global rank 0.
"""

from __future__ import annotations

import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_warn

from lit_robust.callbacks._common import wandb_run
from lit_robust.errors import ConfigError
from lit_robust.validate import integer

DEFAULT_SUMMARIES = {
    "val/robust_acc": "max",
    "val/clean_acc": "max",
    "val/robust_acc_best": "max",
    "val/loss": "min",
    "val/robust_loss": "min",
    "val/mean_gap": "last",
    "lipschitz/layer_product_estimate": "last",
}
SUMMARY_KINDS = ("min", "max", "mean", "last", "first", "none")


class WandbRun(Callback):
    """Run config, metric summaries and weight histograms for a ``WandbLogger``.

    Args:
        summaries: extra ``{metric: min|max|mean|last|first|none}`` summaries (override the defaults).
        watch: ``"parameters"``, ``"gradients"`` or ``"all"``: ``wandb.watch`` histograms; None: off.
        watch_log_freq: steps between watch histograms.
    """

    def __init__(
        self, summaries: dict[str, str] | None = None, watch: str | None = None, watch_log_freq: int = 100
    ) -> None:
        summaries = {**DEFAULT_SUMMARIES, **(summaries or {})}
        for key, kind in summaries.items():
            if kind not in SUMMARY_KINDS:
                raise ConfigError(f"WandbRun.summaries[{key!r}] must be one of {SUMMARY_KINDS}, got {kind!r}")
        if watch not in (None, "parameters", "gradients", "all"):
            raise ConfigError(
                f"WandbRun.watch must be null, 'parameters', 'gradients' or 'all', got {watch!r}"
            )
        self.summaries = summaries
        self.watch = watch
        self.watch_log_freq = integer("WandbRun.watch_log_freq", watch_log_freq)
        self._done = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        run = wandb_run(trainer)
        if run is None:
            if trainer.is_global_zero and not self._done:
                rank_zero_warn("WandbRun: no WandbLogger among the trainer's loggers; nothing to do")
            self._done = True
            return
        if self._done:
            return
        self._done = True
        run.define_metric("trainer/global_step")
        for key, kind in self.summaries.items():
            run.define_metric(key, step_metric="trainer/global_step", summary=kind)
        config = cli_config(trainer)
        if config is not None:
            run.config.update({"cli": config}, allow_val_change=True)
        if self.watch is not None:
            run.watch(pl_module.net, log=self.watch, log_freq=self.watch_log_freq)


def cli_config(trainer: Trainer) -> dict | None:
    """The LightningCLI config of this run as a plain dict (None outside the CLI)."""
    for callback in trainer.callbacks:
        if isinstance(callback, SaveConfigCallback):
            return yaml.safe_load(callback.parser.dump(callback.config, skip_none=False))
    return None
