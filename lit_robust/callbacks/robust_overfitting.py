"""Robust overfitting (Rice, Wong & Kolter, ICML 2020): validation robust accuracy peaks and then falls
while training robust accuracy keeps rising.

Per validated epoch e the callback records, from the module's (already DDP-reduced) metrics,

    a_e = val/robust_acc,   c_e = val/clean_acc,   t_e = train/robust_acc (epoch mean, AT methods)

and logs

    overfit/best_robust_acc  = max_e a_e              overfit/best_epoch = argmax_e a_e
    overfit/best_minus_last  = max_e a_e - a_last     (> 0: the last checkpoint is worse than the best)
    overfit/train_minus_val  = t_last - a_last        (the generalisation gap of robust accuracy)

With ``patience`` set, training stops after that many validated epochs without an improvement of more
than ``min_delta`` (decided identically on every rank). At the end of fit it writes
``robust_overfitting.md`` and ``.json`` (per-epoch history and the best/last table) to the run folder.
"""

from __future__ import annotations

import json
import math
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from lit_robust.callbacks._common import log_values, run_dir
from lit_robust.errors import ConfigError
from lit_robust.validate import integer, non_negative

#: columns of the history: metric key in trainer.callback_metrics -> short name
TRACKED = {
    "val/robust_acc": "val_robust_acc",
    "val/clean_acc": "val_clean_acc",
    "val/robust_loss": "val_robust_loss",
    "val/loss": "val_loss",
    "train/robust_acc_epoch": "train_robust_acc",
    "train/clean_acc_epoch": "train_clean_acc",
    "train/loss_epoch": "train_loss",
}


class RobustOverfitting(Callback):
    """Best vs last validation robust accuracy, the train-val gap, optional early stop, end summary.

    Args:
        monitor: the validation metric whose maximum defines "best" (default ``val/robust_acc``).
        patience: stop after this many validated epochs without improvement (None: never stop).
        min_delta: an improvement must exceed this (accuracy units, e.g. 0.001 = 0.1 point).
        output_dir: where the summary files go (default: the run's log folder).
    """

    def __init__(
        self,
        monitor: str = "val/robust_acc",
        patience: int | None = None,
        min_delta: float = 0.0,
        output_dir: str | None = None,
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(f"RobustOverfitting.monitor must be a metric name, got {monitor!r}")
        self.monitor = monitor
        self.patience = integer("RobustOverfitting.patience", patience, 1, optional=True)
        self.min_delta = non_negative("RobustOverfitting.min_delta", min_delta)
        self.output_dir = output_dir
        self.history: list[dict[str, float]] = []
        self._validated = False
        self._dir = None

    # ------------------------------------------------------------------ state
    @property
    def best(self) -> dict[str, float] | None:
        """The history row with the highest ``monitor`` value (the earliest on ties)."""
        rows = [r for r in self.history if math.isfinite(r.get("monitor", math.nan))]
        return max(rows, key=lambda r: (r["monitor"], -r["epoch"])) if rows else None

    def summary(self) -> dict[str, float]:
        """Best/last monitor values, the best epoch, best - last and train - val robust accuracy."""
        best, last = self.best, self.history[-1] if self.history else None
        if best is None or last is None:
            return {}
        out = {
            "best_robust_acc": best["monitor"],
            "best_epoch": best["epoch"],
            "last_robust_acc": last["monitor"],
            "best_minus_last": best["monitor"] - last["monitor"],
        }
        if "train_robust_acc" in last and "val_robust_acc" in last:
            out["train_minus_val"] = last["train_robust_acc"] - last["val_robust_acc"]
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._dir = run_dir(trainer, self.output_dir)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._validated = not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Runs after the epoch's validation: train epoch means and val metrics are both available."""
        if not self._validated:
            return
        self._validated = False
        metrics = trainer.callback_metrics
        row = {"epoch": float(trainer.current_epoch)}
        for key, name in TRACKED.items():
            if key in metrics:
                row[name] = float(metrics[key])
        row["monitor"] = float(metrics[self.monitor]) if self.monitor in metrics else math.nan
        self.history.append(row)
        log_values(pl_module, {f"overfit/{k}": v for k, v in self.summary().items()})
        self._maybe_stop(trainer)

    def _maybe_stop(self, trainer: Trainer) -> None:
        best = self.best
        if self.patience is None or best is None:
            return
        improved_at = [
            r["epoch"]
            for i, r in enumerate(self.history)
            if i == 0 or r["monitor"] > max(h["monitor"] for h in self.history[:i]) + self.min_delta
        ]
        stale = sum(1 for r in self.history if r["epoch"] > improved_at[-1])
        should_stop = trainer.strategy.reduce_boolean_decision(stale >= self.patience, all=False)
        if should_stop:
            trainer.should_stop = True
            rank_zero_info(
                f"RobustOverfitting: {self.monitor} has not improved for {stale} validated epochs "
                f"(best {best['monitor']:.4f} at epoch {int(best['epoch'])}); stopping"
            )

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or not self.history or self._dir is None:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        payload = {"monitor": self.monitor, "summary": self.summary(), "history": self.history}
        (self._dir / "robust_overfitting.json").write_text(json.dumps(payload, indent=2))
        table = self.to_markdown()
        (self._dir / "robust_overfitting.md").write_text(table)
        rank_zero_info(table)

    def to_markdown(self) -> str:
        """Best vs last table: one row per tracked metric."""
        best, last = self.best, self.history[-1]
        names = [n for n in TRACKED.values() if n in last]
        best_epoch = "-" if best is None else int(best["epoch"])
        last_epoch = int(last["epoch"])
        lines = [
            f"Robust overfitting ({self.monitor}; best = epoch {best_epoch}, last = epoch {last_epoch})",
            "",
            "| metric | best | last | best - last |",
            "|---|---|---|---|",
        ]
        for name in names:
            b = best.get(name, math.nan) if best else math.nan
            lines.append(f"| {name} | {b:.4f} | {last[name]:.4f} | {b - last[name]:+.4f} |")
        return "\n".join(lines) + "\n"
