"""``fit --ckpt_path last`` and ``--ckpt_path auto``: continue the latest run of a config in its own folder.

Lightning reads ``--ckpt_path last`` as "the last.ckpt of *this* run's checkpoint folder"; every fit gets
a new ``version_N`` folder, so a restarted job found nothing there and started from scratch, silently.
The CLI resolves the two words itself before anything is built (:func:`resolve_resume`):

- the run is the highest ``<save_dir>/<name>/version_N`` of the first CSV or TensorBoard logger that holds
  ``checkpoints/last.ckpt`` (or the logger's explicit ``version``);
- every CSV/TensorBoard logger of the config is pointed at that version folder, so ``metrics.csv`` is
  continued (:class:`lit_robust.loggers.CSVLogger`; rows the killed run logged after the checkpoint are
  dropped, the resumed run logs them again), and a ``WandbLogger`` without an ``id`` resumes the W&B run
  recorded in the checkpoint (``resume="allow"``);
- one line says which checkpoint, epoch and global step the fit continues from.

``last`` with nothing to resume is an error (a job meant to continue must not start over unnoticed);
``auto`` starts a new run then (for job scripts that are requeued: the first run starts, later ones
continue). Both are for ``fit`` only; ``validate``/``test`` keep Lightning's meaning.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only

from lit_robust.checkpoint import read_checkpoint
from lit_robust.errors import ConfigError
from lit_robust.loggers import drop_rows_from

__all__ = ["RESUME_MODES", "resolve_resume", "latest_run", "log_into_run", "run_of"]

RESUME_MODES = ("last", "auto")
_FOLDER_LOGGERS = ("CSVLogger", "TensorBoardLogger")
_OUR_CSV = "lit_robust.loggers.CSVLogger"


def latest_run(root: Path, version: Any = None) -> tuple[Any, Path] | None:
    """``(version, last.ckpt)`` of the run to continue under ``root`` = ``<save_dir>/<name>``: the
    explicit ``version`` if given, else the highest ``version_N`` that has ``checkpoints/last.ckpt``."""
    if version is not None:
        folder = root / (version if isinstance(version, str) else f"version_{version}")
        last = folder / "checkpoints" / "last.ckpt"
        return (version, last) if last.is_file() else None
    runs = []
    for folder in root.glob("version_*"):
        number = folder.name.removeprefix("version_")
        if number.isdigit() and (folder / "checkpoints" / "last.ckpt").is_file():
            runs.append((int(number), folder / "checkpoints" / "last.ckpt"))
    return max(runs) if runs else None


def _loggers(config: Any) -> list[Any]:
    loggers = config.trainer.logger
    loggers = loggers if isinstance(loggers, list) else [loggers]
    return [lg for lg in loggers if hasattr(lg, "class_path")]


def resolve_resume(config: Any) -> None:
    """Turn ``config.ckpt_path`` ``last``/``auto`` of a parsed ``fit`` config into a checkpoint path and
    point the loggers at that run (see the module docstring). Other values are left alone."""
    mode = config.get("ckpt_path")
    if mode not in RESUME_MODES:
        return
    loggers = _loggers(config)
    folders = [lg for lg in loggers if lg.class_path.rsplit(".", 1)[-1] in _FOLDER_LOGGERS]
    if not folders:
        raise ConfigError(
            f"--ckpt_path {mode} finds the run to continue through the folder of a CSV or TensorBoard "
            "logger, and trainer.logger has none: add one, or give --ckpt_path the checkpoint file"
        )
    args = folders[0].init_args
    save_dir = args.get("save_dir") or config.trainer.get("default_root_dir") or "."
    root = Path(save_dir) / (args.get("name") or "lightning_logs")
    found = latest_run(root, args.get("version"))
    if found is None:
        where = f"{root}/version_*/checkpoints/last.ckpt"
        if mode == "last":
            raise ConfigError(
                f"--ckpt_path last: nothing to resume, no {where}. Start without --ckpt_path, or use "
                "--ckpt_path auto, which continues a run if there is one and starts one otherwise"
            )
        config.ckpt_path = None
        _say(f"--ckpt_path auto: nothing to resume under {root}, starting a new run")
        return
    version, last = found
    ckpt = read_checkpoint(last, field=f"--ckpt_path {mode} ({last})")
    step, epoch = int(ckpt.get("global_step", 0)), int(ckpt.get("epoch", 0))
    for logger in folders:
        logger.init_args.version = version
        if logger.class_path == "lightning.pytorch.loggers.CSVLogger":
            logger.class_path = _OUR_CSV  # Lightning's would delete the run's metrics.csv
    wandb_id = ckpt.get("wandb_id")
    for logger in loggers:
        if logger.class_path.endswith("WandbLogger") and wandb_id and not logger.init_args.get("id"):
            logger.init_args.id = wandb_id
            logger.init_args.resume = "allow"
    config.ckpt_path = str(last)
    if rank_zero_only.rank == 0:
        dropped = drop_rows_from(last.parent.parent / "metrics.csv", step)
        again = f"; {dropped} metrics rows logged after it will be logged again" if dropped else ""
        _say(f"resuming {last}: epoch {epoch}, global step {step}{again}")


def _say(line: str) -> None:
    if rank_zero_only.rank == 0:
        print(line, file=sys.stderr, flush=True)


def run_of(ckpt: str | Path) -> Path | None:
    """The ``<save_dir>/<name>/version_N`` folder a checkpoint file lives in (None elsewhere)."""
    path = Path(ckpt)
    if path.parent.name == "checkpoints" and path.parent.parent.name.startswith("version_"):
        return path.parent.parent
    return None


def log_into_run(config: Any) -> None:
    """``test``/``validate``/``evaluate``/``export`` log into the evaluated run's folder (its
    ``metrics.csv`` continued) when the checkpoint is one of our runs', else next to the results
    (``--output_dir``, or the checkpoint's folder): never a new ``version_N``, never the working directory.
    A logger with an explicit ``version`` keeps its folder."""
    ckpt = config.get("ckpt_path")
    if not ckpt or ckpt in RESUME_MODES + ("best",):
        return
    run = run_of(ckpt)
    if run is not None:
        where = (str(run.parent.parent), run.parent.name, run.name)
    else:
        where = (str(config.get("output_dir") or Path(ckpt).expanduser().absolute().parent), "", "")
    for logger in _loggers(config):  # a logger given its own version keeps it: the user chose the folder
        if (
            logger.class_path.rsplit(".", 1)[-1] in _FOLDER_LOGGERS
            and logger.init_args.get("version") is None
        ):
            logger.init_args.save_dir, logger.init_args.name, logger.init_args.version = where
            if logger.class_path == "lightning.pytorch.loggers.CSVLogger":
                logger.class_path = _OUR_CSV
