"""Helpers shared by the monitoring callbacks: RNG isolation, rank-safe logging, run folders.

DDP rules the callbacks follow:

- per-rank partial results are reduced with torchmetrics (which all-gathers on ``compute``) or
  ``trainer.strategy.reduce``, so every rank ends up with the same number;
- ``pl_module.log`` is called on every rank with that number (Lightning's loggers write from rank 0);
- files and W&B media are written from global rank 0 only, by code that makes no collective call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer


@contextlib.contextmanager
def monitoring(device: torch.device) -> Iterator[None]:
    """Context of the callbacks' own computations: torch's global RNG (CPU, and the CUDA device if
    used) is restored afterwards, so monitoring that attacks or samples does not change the training
    run it watches; and inference mode is off, so autograd works even under
    ``trainer.inference_mode=true`` (inputs made inside it must be cloned first)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode(False):
        yield


def evaluated(pl_module: LightningModule, outputs, batch, n: int, attack=None) -> dict[str, torch.Tensor]:
    """The first ``n`` samples of a validation batch as ``x``, ``y``, clean ``logits``, ``x_adv`` and
    ``adv_logits``: the validation step's own (its ``outputs``, see ``RobustClassifier._evaluation_step``)
    when the callback uses the evaluation attack, so nothing is attacked twice; otherwise ``attack`` (or
    the evaluation attack, for a module whose step returns nothing) runs here, under :func:`monitoring`."""
    if attack is None and isinstance(outputs, dict) and "x_adv" in outputs:
        return {k: outputs[k][:n] for k in ("x", "y", "logits", "x_adv", "adv_logits")}
    x, y, net = batch[0][:n], batch[1][:n], pl_module.net
    with monitoring(pl_module.device):
        x_adv = (attack if attack is not None else pl_module.eval_attack)(net, x, y)
    with torch.no_grad():
        return {"x": x, "y": y, "logits": net(x), "x_adv": x_adv, "adv_logits": net(x_adv)}


def log_values(pl_module: LightningModule, values: dict[str, float | torch.Tensor]) -> None:
    """``pl_module.log`` epoch-level values that are already equal on every rank.

    ``sync_dist=True`` averages identical numbers (a no-op up to float rounding) and keeps Lightning from
    warning about unsynchronised epoch-level logging under DDP."""
    for key, value in values.items():
        value = torch.as_tensor(value, dtype=torch.float32, device=pl_module.device)
        pl_module.log(key, value, on_step=False, on_epoch=True, sync_dist=True)


def run_dir(trainer: Trainer, output_dir: str | None) -> Path:
    """Where a callback writes files: ``output_dir``, else the version folder of the run's first CSV or
    TensorBoard logger (``logs/lit_robust/version_N``), else ``trainer.log_dir`` (another logger's
    folder; ``default_root_dir`` without loggers). Never the current directory unless configured so.
    Call on every rank: the folder is broadcast from rank 0 under DDP."""
    if output_dir is not None:
        return Path(output_dir)
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    versioned = [lg for lg in trainer.loggers if isinstance(lg, CSVLogger | TensorBoardLogger)]
    folder = versioned[0].log_dir if versioned else trainer.log_dir
    return Path(trainer.strategy.broadcast(folder))


def wandb_run(trainer: Trainer):
    """The W&B run of the trainer's first ``WandbLogger`` on global rank 0, else None (no import of
    wandb unless such a logger is configured)."""
    if not trainer.is_global_zero:
        return None
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            return logger.experiment
    return None


def is_due(trainer: Trainer, every_n_epochs: int) -> bool:
    """Whether a validation-time monitor runs now: never in the sanity check, on every n-th epoch
    (0, n, 2n, ...) of ``fit``, and always in ``validate``/``test``."""
    if trainer.sanity_checking:
        return False
    return trainer.state.fn != "fit" or trainer.current_epoch % every_n_epochs == 0


def samples_to_take(batch: tuple[torch.Tensor, torch.Tensor], seen: int, limit: int | None) -> int:
    """How many samples of ``batch`` to use when ``seen`` were used already and at most ``limit`` may be."""
    n = batch[0].shape[0]
    return n if limit is None else max(0, min(n, limit - seen))
