"""Checks of a parsed ``fit``/``validate``/``test``/``evaluate`` config that run before anything is built
or written, so that a job that cannot work fails in seconds with one line naming the field:

- ``trainer.accelerator``/``devices``/``num_nodes`` against what exists (64 CPU "devices" on a 2-core
  machine spawned 64 processes and hung; ``num_nodes=2`` outside torchrun/SLURM waits for peers forever);
- an online ``WandbLogger`` without an API key, or without a route to the W&B server within
  :data:`WANDB_TIMEOUT_S` (W&B itself retries for minutes), with the advice ``WANDB_MODE=offline``;
- log folders that cannot be written;
- ``--ckpt_path`` that is not a readable checkpoint (a truncated file, a foreign pickle).
"""

from __future__ import annotations

import netrc
import os
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from lit_robust.checkpoint import read_any, read_checkpoint
from lit_robust.errors import ConfigError
from lit_robust.validate import integer

__all__ = ["preflight", "check_devices", "check_wandb", "check_writable", "WANDB_TIMEOUT_S"]

#: seconds to wait for a TCP connection to the W&B server before advising offline mode
WANDB_TIMEOUT_S = 5.0
_CLUSTER_ENV = ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "LSB_JOBID", "PMI_SIZE")
_LIGHTNING_CKPT_WORDS = ("best", "last", "auto", "hpc", "registry")


def preflight(config: Any, subcommand: str) -> None:
    """Run every check on ``config`` (the subcommand's namespace)."""
    trainer = config.trainer
    check_devices(trainer)
    loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
    loggers = [lg for lg in loggers if hasattr(lg, "class_path")]
    check_wandb(loggers)
    folders = [("trainer.default_root_dir", trainer.get("default_root_dir"))]
    folders += [("trainer.logger.save_dir", lg.init_args.get("save_dir")) for lg in loggers]
    for field, folder in folders:
        if folder:
            check_writable(Path(folder), field)
    ckpt = config.get("ckpt_path")
    if ckpt and ckpt not in _LIGHTNING_CKPT_WORDS and not str(ckpt).startswith(("hf://", "s3://", "gs://")):
        (read_checkpoint if subcommand == "fit" else read_any)(ckpt)  # evaluate/export take any format


def _count(devices: Any, available: int) -> int | None:
    """How many devices ``trainer.devices`` asks for (None: "auto" or not a count)."""
    if isinstance(devices, list | tuple):
        return len(devices)
    text = str(devices).strip()
    if text in ("auto", "None", ""):
        return None
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    try:
        n = int(text)
    except ValueError:
        return None
    return available if n == -1 else n


def check_devices(trainer: Any) -> None:
    """``trainer.accelerator``, ``devices`` and ``num_nodes`` ask for no more than exists."""
    accelerator = str(trainer.get("accelerator") or "auto").lower()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator in ("gpu", "cuda") and gpus == 0:
        raise ConfigError(
            f"trainer.accelerator={accelerator}, but no CUDA GPU is visible (torch.cuda.is_available() is "
            f"False; torch {torch.__version__}): use --trainer.accelerator=cpu or auto"
        )
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and gpus == 0)
    available = (os.cpu_count() or 1) if on_cpu else gpus
    wanted = _count(trainer.get("devices", "auto"), available)
    if wanted is not None and (wanted < 1 or wanted > available):
        what = "CPU cores (one process per device)" if on_cpu else "GPUs"
        raise ConfigError(
            f"trainer.devices must be between 1 and {available} here ({available} {what}), got "
            f"{trainer.get('devices')}"
        )
    nodes = integer("trainer.num_nodes", trainer.get("num_nodes", 1), 1)
    if nodes > 1 and not any(os.environ.get(k) for k in _CLUSTER_ENV):
        raise ConfigError(
            f"trainer.num_nodes={nodes}, but this process was not started by torchrun or SLURM (none of "
            f"{', '.join(_CLUSTER_ENV)} is set), so it would wait for the other nodes forever: start one "
            "command per node with torchrun or srun (docs/cluster.md)"
        )
    world = os.environ.get("WORLD_SIZE")
    if world and world.isdigit() and wanted is not None and int(world) != nodes * wanted:
        raise ConfigError(
            f"trainer.num_nodes x trainer.devices = {nodes} x {wanted} = {nodes * wanted}, but the launcher "
            f"started WORLD_SIZE={world} processes: make them agree"
        )


def _has_key(host: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC") or None).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_wandb(loggers: list[Any], timeout: float = WANDB_TIMEOUT_S) -> None:
    """An online ``WandbLogger`` has an API key and reaches its server within ``timeout`` seconds."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    for logger in loggers:
        if not logger.class_path.endswith("WandbLogger"):
            continue
        args = logger.init_args
        if args.get("offline") or mode in ("offline", "disabled", "dryrun") or args.get("mode") == "offline":
            continue
        url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
        host = url.hostname or "api.wandb.ai"
        advice = "set WANDB_MODE=offline to log locally (upload later with `wandb sync`)"
        if not _has_key(host):
            raise ConfigError(
                f"trainer.logger WandbLogger is online but has no W&B API key (WANDB_API_KEY, or `wandb "
                f"login` for {host}): {advice}"
            )
        port = url.port or (80 if url.scheme == "http" else 443)
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as err:
            raise ConfigError(
                f"trainer.logger WandbLogger is online but cannot reach {host}:{port} within {timeout:g} s "
                f"({err.strerror or type(err).__name__}): {advice}"
            ) from None


def check_writable(folder: Path, field: str) -> None:
    """``folder`` exists as a writable folder or can be made under one (probed without creating it)."""
    existing = folder.expanduser().absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{field} {str(folder)!r} cannot be made: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(
            f"{field} {str(folder)!r} is not writable: cannot write in {existing} ({err.strerror or err})"
        ) from None
