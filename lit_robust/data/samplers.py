"""Training order that depends only on ``(seed, epoch)``, and a loader that resumes in the middle of an epoch.

* :class:`EpochSeededSampler` / :class:`EpochSeededDistributedSampler`: the permutation of an epoch is a
  function of the data seed and the epoch number, so a resumed run sees the order an uninterrupted one sees.
* :class:`ResumableLoader`: the training ``DataLoader``. Lightning saves its ``state_dict`` (how many
  samples of the current epoch were consumed) in every checkpoint and hands it back on resume, so a fit
  killed after batch k of an epoch continues with batch k + 1 of the same order. It also never touches
  the global random stream (its own generator, reseeded per epoch), so creating an iterator draws nothing
  that a resumed run would have to replay.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, TensorDataset

from lit_robust.errors import ConfigError

__all__ = ["EpochSeededSampler", "EpochSeededDistributedSampler", "ResumableLoader", "epoch_seed"]


def epoch_seed(seed: int, epoch: int) -> int:
    """Generator seed of epoch ``epoch`` for data seed ``seed``: ``(seed * 1000003 + epoch) mod 2**63``."""
    return (seed * 1_000_003 + epoch) % 2**63


class EpochSeededSampler(RandomSampler):
    """Random permutation that depends only on ``(seed, epoch)``.

    Lightning calls ``set_epoch`` at the start of every training epoch, so a run resumed from a checkpoint
    sees the same order as an uninterrupted one. Iterating without ``set_epoch`` advances the epoch, so
    repeated iteration still gives fresh (reproducible) orders. ``skip`` (set by :class:`ResumableLoader`)
    drops that many leading indices from the next iteration only. Under DDP ``RobustDataModule`` uses
    :class:`EpochSeededDistributedSampler` instead, which splits this same order across the ranks.
    """

    def __init__(self, data_source: TensorDataset, seed: int) -> None:
        super().__init__(data_source, generator=torch.Generator())
        self.seed = seed
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        self.generator.manual_seed(epoch_seed(self.seed, self.epoch))
        self.epoch += 1
        skip, self.skip = self.skip, 0
        return itertools.islice(super().__iter__(), skip, None)


class EpochSeededDistributedSampler(DistributedSampler):
    """Rank ``rank``'s share of :class:`EpochSeededSampler`'s order: ``perm[rank::num_replicas]``.

    ``perm`` is exactly the permutation ``EpochSeededSampler(dataset, seed)`` yields for the epoch (drawn
    by one, so the two cannot drift apart). Interleaving it across ranks means that with a per-rank batch
    size ``b`` the ranks' k-th batches together are ``perm[k*W*b : (k+1)*W*b]`` (rank r takes positions
    ``k*W*b + r, k*W*b + r + W, ...``): the k-th batch of a 1-process run with batch size ``W*b``. Every
    rank averages its loss over ``b`` samples and DDP averages the gradients over the ``W`` ranks, so a
    W-process fit makes the same updates as the 1-process fit, up to float summation order (for a net
    without BatchNorm, whose statistics stay per rank, and training randomness that does not depend on
    the batch layout).

    When ``len(dataset)`` is not a multiple of ``num_replicas``, ``perm`` is padded by wrapping around
    (``perm + perm[:pad]``) as ``DistributedSampler`` does, so that every rank gets
    ``ceil(n / num_replicas)`` indices; the last global batch then repeats a few samples and differs
    from the 1-process one. If ``n`` is a multiple of ``num_replicas`` (but not of the global batch),
    the ranks' last batches are equally short and together are the 1-process last batch.

    Being a ``DistributedSampler``, Lightning leaves it in place (``_requires_distributed_sampler``
    checks ``isinstance(sampler, DistributedSampler)``) and calls ``set_epoch`` every epoch. Like
    ``EpochSeededSampler``, iterating without ``set_epoch`` advances the epoch; ``skip`` drops that many
    leading indices of this rank's share from the next iteration.
    """

    def __init__(self, dataset: TensorDataset, seed: int, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self._order = EpochSeededSampler(dataset, seed)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        self._order.set_epoch(self.epoch)
        indices = list(self._order)
        self.epoch += 1
        pad = self.total_size - len(indices)
        indices += (indices * math.ceil(pad / len(indices)))[:pad] if pad > 0 else []
        skip, self.skip = self.skip, 0
        return iter(indices[self.rank : self.total_size : self.num_replicas][skip:])


class ResumableLoader(DataLoader):
    """The training loader: an epoch-seeded ``DataLoader`` whose position Lightning checkpoints.

    ``state_dict()`` is ``{"samples": s, "complete": c}``: ``s = batches * batch_size * world_size`` global
    samples of the current epoch were consumed, ``c`` says the epoch was exhausted. ``load_state_dict`` makes
    the next iteration skip those ``s / world_size`` indices of this rank's order (nothing when ``c``), so a
    mid-epoch resume continues where the killed run stopped, also with another number of processes as long
    as the global batch ``batch_size * world_size`` is the same.

    ``iter()`` is lazy: the underlying iterator (and its workers) starts at the first ``next``, after
    Lightning has called ``set_epoch`` on the sampler and the module has restored the random streams.
    """

    def __init__(
        self, dataset: TensorDataset, batch_size: int, sampler: Any, seed: int, world_size: int = 1, **kwargs
    ) -> None:
        super().__init__(
            dataset, batch_size=batch_size, sampler=sampler, generator=torch.Generator(), **kwargs
        )
        self.seed = seed
        self.world_size = world_size
        self._batches = 0
        self._resume_batches = 0

    def __iter__(self) -> Iterator[Any]:
        return self._epoch()

    def _epoch(self) -> Iterator[Any]:
        skip, self._resume_batches = self._resume_batches, 0
        self.sampler.skip = skip * self.batch_size
        self.generator.manual_seed(epoch_seed(self.seed, self.sampler.epoch))  # worker seeds of this epoch
        self._batches = skip
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {
            "samples": self._batches * self.batch_size * self.world_size,
            "complete": self._batches >= len(self),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("complete", True):
            return
        samples = int(state["samples"])
        per_step = self.batch_size * self.world_size
        if samples % per_step:
            raise ConfigError(
                f"the checkpoint was written {samples} samples into an epoch, which is not a whole number of "
                f"this run's global batches (data.batch_size {self.batch_size} x {self.world_size} "
                "processes): resume with the global batch of the run that wrote it, or from an end-of-epoch "
                "checkpoint"
            )
        self._resume_batches = samples // per_step
