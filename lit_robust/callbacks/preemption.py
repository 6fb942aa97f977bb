"""Preemption: stop at a resumable point when the job is told to stop, and requeue it under SLURM.

SLURM sends SIGUSR1 some time before a job's end when asked to (``#SBATCH --signal=USR1@120``) and
SIGTERM when it preempts or cancels it; torchrun and container schedulers send SIGTERM. Either signal
only sets a flag here. At the end of the running training batch (where ``last.ckpt`` resumes bit-exactly:
the same point as ``checkpoint_every_n_steps``; after the last batch of an epoch, or one that a validation
follows, it waits for the next batch, see :mod:`~lit_robust.callbacks.mid_epoch_checkpoint`) all ranks agree
that one of them was signalled, the fit writes ``last.ckpt`` in the run's checkpoint folder, rank 0 runs
``scontrol requeue <job id>`` when ``SLURM_JOB_ID`` is set, and the fit stops with
:class:`~lit_robust.errors.Preempted` (the CLI prints one line and exits with 128 + the signal number).
The requeued job runs the same command with ``--ckpt_path auto`` and continues from that checkpoint.

A signal that arrives after the last batch (during the final validation) lets the fit finish. Every
:class:`~lit_robust.methods.RobustClassifier` adds this callback (``configure_callbacks``); the handlers are
installed when the fit starts, so that Lightning's own SLURM handler (an ``hpc_ckpt`` written inside the
signal handler, in the middle of a step) never takes SIGUSR1, and again right after Lightning installs its
handlers, later in the fit's start (:class:`PreemptionFirst`, the signal connector of
:class:`~lit_robust.trainer.RobustTrainer`): Lightning's SIGTERM handler broadcasts inside the handler,
which hangs DDP, and its ``SIGTERMException`` ends the fit with no ``last.ckpt`` and no requeue. With a
plain ``Trainer`` they are installed again when the sanity check and training start (a resumed fit runs no
sanity check: a signal while its data loaders start still reaches Lightning's handler). The handlers from
before the fit are put back when it ends, also when it ends with an exception (``Preempted`` included;
with a plain ``Trainer`` they are not then: Lightning calls no callback ``teardown`` after an exception).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

from lit_robust.callbacks.mid_epoch_checkpoint import resumes_exactly
from lit_robust.errors import ConfigError, Preempted

__all__ = ["Preemption", "PreemptionFirst", "slurm_job_id"]


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` for array jobs, else ``SLURM_JOB_ID``."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


class Preemption(Callback):
    """Save ``last.ckpt`` and requeue (under SLURM) when one of ``signals`` arrives; see the module doc.

    Args:
        signals: names of the signals that stop the fit (default SIGUSR1 and SIGTERM).
        requeue: run ``scontrol requeue`` when ``SLURM_JOB_ID`` is set.
    """

    def __init__(self, signals: list[str] = ("SIGUSR1", "SIGTERM"), requeue: bool = True) -> None:  # type: ignore[assignment]
        names = list(signals)
        unknown = [n for n in names if not isinstance(n, str) or not hasattr(signal, n)]
        if unknown:
            raise ConfigError(f"Preemption.signals must be signal names such as SIGUSR1, got {unknown}")
        self.signals = [getattr(signal, n) for n in names]
        self.requeue = bool(requeue)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum  # only a flag: the work happens at the end of the batch

    def install(self) -> None:
        """Handle ``signals`` from now on (the handlers found first are kept to be put back)."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for signum in self.signals:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)  # the one from before the fit, put back at teardown

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.install()

    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.install()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.install()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if not resumes_exactly(trainer):
            return  # the same decision on every rank: no collective call skipped by some
        signalled = trainer.strategy.reduce_boolean_decision(self.received is not None, all=False)
        if not signalled:
            return
        path = last_checkpoint(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # the whole state: an exact resume
        requeued = self._requeue() if trainer.is_global_zero else ""
        name = signal.Signals(self.received).name if self.received else "a signal on another rank"
        raise Preempted(
            f"stopped by {name} at global step {trainer.global_step} (epoch {trainer.current_epoch}) after "
            f"writing {path}{requeued}; resume with the same command and --ckpt_path auto",
            self.received or signal.SIGTERM,
        )

    def _requeue(self) -> str:
        job = slurm_job_id()
        if not self.requeue or job is None:
            return ""
        if shutil.which("scontrol") is None:
            return f"; SLURM job {job} NOT requeued: scontrol is not on PATH"
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=120)
        if done.returncode:
            return f"; `scontrol requeue {job}` failed: {done.stderr.strip() or done.returncode}"
        return f"; SLURM job {job} requeued"

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.restore()

    def restore(self) -> None:
        """Put back the handlers from before the fit."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class PreemptionFirst(_SignalConnector):
    """Lightning's signal connector, whose handlers, once installed during a fit's start, are replaced by
    those of the fit's :class:`Preemption` callbacks (see the module doc)."""

    def register_signal_handlers(self) -> None:
        super().register_signal_handlers()
        if self.trainer.state.fn == "fit":
            for callback in self._preemptions():
                callback.install()

    def teardown(self) -> None:
        super().teardown()  # puts back the handlers Lightning found: the callbacks'
        for callback in self._preemptions():
            callback.restore()  # (also when the fit raised: Lightning then calls no callback teardown)

    def _preemptions(self) -> list[Preemption]:
        return [c for c in self.trainer.callbacks if isinstance(c, Preemption)]


def last_checkpoint(trainer: Trainer) -> str:
    """Where the run's ``last.ckpt`` lives: the folder of its ``last`` ModelCheckpoint (else the first
    checkpoint callback's folder, else ``<default_root_dir>/checkpoints``)."""
    callbacks = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
    named = [cb for cb in callbacks if cb.filename == "last"] or callbacks
    folder = named[0].dirpath if named and named[0].dirpath else None
    return str(Path(folder or Path(trainer.default_root_dir) / "checkpoints") / "last.ckpt")
