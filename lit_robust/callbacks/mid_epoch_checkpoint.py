"""Where in an epoch a checkpoint resumes exactly, and the periodic ``last.ckpt`` writer that keeps to it.

A checkpoint written at the end of a training batch (``on_train_batch_end``) resumes with the next batch.
Lightning resumes one written at the last batch of an epoch, or at a batch that a validation follows, as if
that validation and the epoch's end (its hooks, its epoch-interval scheduler step, its logged metrics) had
already run, so a run resumed from it skips them and diverges from the uninterrupted run. At those batches
:func:`resumes_exactly` is False: the periodic writer skips them (the epoch-end ``last.ckpt``, written after
validation, follows at once) and :class:`~lit_robust.callbacks.Preemption` waits for the next batch.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["MidEpochCheckpoint", "resumes_exactly"]


def resumes_exactly(trainer: Trainer) -> bool:
    """Whether a checkpoint written now, in ``on_train_batch_end``, resumes exactly: False when this batch
    ends the epoch (its last batch, ``limit_train_batches`` or ``max_steps`` reached) or a validation runs
    after it."""
    loop = trainer.fit_loop.epoch_loop
    progress = loop.batch_progress
    if progress.is_last_batch or progress.current.ready >= trainer.num_training_batches:
        return False
    if 0 <= trainer.max_steps <= trainer.global_step:
        return False
    return not loop._should_check_val_fx(trainer.fit_loop._data_fetcher)


class MidEpochCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` for ``every_n_train_steps``/``train_time_interval`` writes inside an epoch: a due
    write is skipped at a batch where it would not resume exactly (:func:`resumes_exactly`)."""

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        if resumes_exactly(trainer):
            super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
