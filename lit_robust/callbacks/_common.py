"""Helpers shared by the monitoring callbacks: argument checks, RNG isolation, rank-safe logging.

DDP rules the callbacks follow:

- per-rank partial results are reduced with torchmetrics (which all-gathers on ``compute``) or
  ``trainer.strategy.reduce``, so every rank ends up with the same number;
- ``pl_module.log`` is called on every rank with that number (Lightning's loggers write from rank 0);
- files and W&B media are written from global rank 0 only, by code that makes no collective call.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer

from lit_robust.errors import ConfigError


def check_int(
    owner: str, name: str, value: int | None, minimum: int = 1, optional: bool = False
) -> int | None:
    """``value`` if it is an int >= minimum (or None when ``optional``); else ConfigError naming it."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        bound = f"an integer >= {minimum}" + (" or null" if optional else "")
        raise ConfigError(f"{owner}.{name} must be {bound}, got {value!r}")
    return value


def check_float(owner: str, name: str, value: float, minimum: float = 0.0, strict: bool = False) -> float:
    """``float(value)`` if it is a finite number >= minimum (> minimum when ``strict``)."""
    bad = isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    if bad or value < minimum or (strict and value == minimum):
        raise ConfigError(
            f"{owner}.{name} must be a finite number {'>' if strict else '>='} {minimum}, got {value!r}"
        )
    return float(value)


def check_floats(
    owner: str, name: str, values: Sequence[float], strict: bool = True, allow_empty: bool = False
) -> list[float]:
    """A list of finite numbers > 0 (>= 0 unless ``strict``), non-empty unless ``allow_empty``."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not (values or allow_empty):
        what = "a list" if allow_empty else "a non-empty list"
        raise ConfigError(f"{owner}.{name} must be {what} of numbers, got {values!r}")
    return [check_float(owner, f"{name}[{i}]", v, 0.0, strict) for i, v in enumerate(values)]


@contextlib.contextmanager
def monitoring(device: torch.device) -> Iterator[None]:
    """Context of the callbacks' own computations: torch's global RNG (CPU, and the CUDA device if
    used) is restored afterwards, so monitoring that attacks or samples does not change the training
    run it watches; and inference mode is off, so autograd works even under
    ``trainer.inference_mode=true`` (inputs made inside it must be cloned first)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode(False):
        yield


def log_values(pl_module: LightningModule, values: dict[str, float | torch.Tensor]) -> None:
    """``pl_module.log`` epoch-level values that are already equal on every rank.

    ``sync_dist=True`` averages identical numbers (a no-op up to float rounding) and keeps Lightning from
    warning about unsynchronised epoch-level logging under DDP."""
    for key, value in values.items():
        value = torch.as_tensor(value, dtype=torch.float32, device=pl_module.device)
        pl_module.log(key, value, on_step=False, on_epoch=True, sync_dist=True)


def run_dir(trainer: Trainer, output_dir: str | None) -> Path:
    """Where a callback writes files: ``output_dir`` or the trainer's log directory (the CSV logger's
    version folder). Call on every rank: ``trainer.log_dir`` broadcasts under DDP."""
    if output_dir is not None:
        return Path(output_dir)
    log_dir = trainer.log_dir
    return Path(log_dir if log_dir is not None else trainer.default_root_dir)


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
