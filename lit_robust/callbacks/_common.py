"""Helpers shared by the monitoring callbacks: RNG isolation, rank-safe logging, run folders.

DDP rules the callbacks follow:

- per-rank partial results are reduced with torchmetrics (which all-gathers on ``compute``) or
  ``trainer.strategy.reduce``, so every rank ends up with the same number;
- ``pl_module.log`` is called on every rank with that number (Lightning's loggers write from rank 0);
- files and W&B media are written from global rank 0 only, by code that makes no collective call.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lit_robust.attacks import Attack
from lit_robust.errors import ConfigError
from lit_robust.validate import integer


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


class SampledMonitor(Callback):
    """Base of the monitors that look at the first ``num_samples`` validation samples (None: all; split
    evenly across DDP ranks) on every ``every_n_epochs``-th validation epoch (:func:`is_due`).

    A subclass implements :meth:`start` (reset its per-epoch state), :meth:`observe` (one batch's first
    ``n`` samples, with the validation step's ``outputs``) and :meth:`finish` (reduce and log). An ``attack``
    of its own, if given, is bound to the module's threat model at setup; otherwise the validation step's
    adversarial batch is reused (:func:`evaluated`). ``self.first`` holds the first validation image."""

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_samples: int | None = None,
        attack: Attack | None = None,
        min_samples: int = 1,
        optional_samples: bool = True,
    ) -> None:
        name = type(self).__name__
        self.every_n_epochs = integer(f"{name}.every_n_epochs", every_n_epochs)
        self.num_samples = integer(f"{name}.num_samples", num_samples, min_samples, optional=optional_samples)
        if attack is not None and not isinstance(attack, Attack):
            raise ConfigError(f"{name}.attack must be a lit_robust Attack, got {type(attack).__name__}")
        self.attack = attack
        self.last: dict = {}
        self.first: torch.Tensor | None = None
        self._active, self._seen = False, 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.attack is not None:
            pl_module.bind_attack(self.attack)

    def start(self, pl_module: LightningModule) -> None:
        """Reset the per-epoch state (default: nothing)."""

    def observe(self, pl_module: LightningModule, outputs, batch, n: int) -> None:
        """Take the first ``n`` samples of ``batch``."""
        raise NotImplementedError

    def finish(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Reduce over ranks, log, write."""
        raise NotImplementedError

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._active, self._seen, self.first = is_due(trainer, self.every_n_epochs), 0, None
        self.start(pl_module)

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
        if self.first is None:
            self.first = batch[0][:1].detach()
        limit = None if self.num_samples is None else math.ceil(self.num_samples / trainer.world_size)
        n = samples_to_take(batch, self._seen, limit)
        if n > 0:
            self._seen += n
            self.observe(pl_module, outputs, batch, n)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._active:
            self._active = False
            self.finish(trainer, pl_module)
