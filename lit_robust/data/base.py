"""Shared datamodule logic: validation split, training subset, label noise, seeded loaders, augmentation.

A concrete dataset only says where its files are (``missing_files``) and how to read them (``load_split``);
everything else lives here so that every dataset splits, subsets and corrupts labels the same way.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset

from lit_robust.data.samplers import EpochSeededDistributedSampler, EpochSeededSampler, ResumableLoader
from lit_robust.errors import ConfigError, DataCorruptError, DataNotFoundError
from lit_robust.validate import flag, integer, number

__all__ = [
    "RobustDataModule",
    "EpochSeededSampler",
    "EpochSeededDistributedSampler",
    "apply_label_noise",
    "random_crop_flip",
]

_VISION_HINT = (
    "set `download: true` (CLI: --data.download=true) with torchvision installed: "
    "pip install 'lit_robust[vision]' (only next to CUDA torch; on CPU-only torch the torchvision wheel "
    "breaks `import lightning`)"
)


def apply_label_noise(
    labels: torch.Tensor, num_classes: int, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric label noise: exactly ``round(fraction * N)`` labels, at positions drawn from ``generator``,
    are each replaced by a uniformly random *different* class (``y + U{1, ..., K-1} mod K``).

    Returns ``(noisy_labels, noisy_mask)``; ``labels`` itself is not modified.
    """
    n = labels.numel()
    n_noisy = round(fraction * n)
    mask = torch.zeros(n, dtype=torch.bool)
    noisy = labels.clone()
    if n_noisy == 0:
        return noisy, mask
    positions = torch.randperm(n, generator=generator)[:n_noisy]
    shift = torch.randint(1, num_classes, (n_noisy,), generator=generator)
    noisy[positions] = (labels[positions] + shift) % num_classes
    mask[positions] = True
    return noisy, mask


def random_crop_flip(
    x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-sample random crop (after ``padding`` pixels of zero padding) and random horizontal flip.

    Works on a batch (N, C, H, W) on any device, in one gather; the output has the input's shape and
    value range (zero padding keeps [0, 1] images in [0, 1]).
    """
    n, _, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n, 1), device=dev, generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n, 1), device=dev, generator=generator)
    rows = top + torch.arange(h, device=dev)  # (N, H)
    cols = left + torch.arange(w, device=dev)  # (N, W)
    flip = torch.rand(n, 1, device=dev, generator=generator) < 0.5
    cols = torch.where(flip, cols.flip(1), cols)
    batch = torch.arange(n, device=dev).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows.unsqueeze(2), cols.unsqueeze(1)]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


class RobustDataModule(LightningDataModule, ABC):
    """In-memory image datamodule with a held-out validation split, training subsets and label noise.

    Images are float32 in [0, 1], shape (N, C, H, W); models normalise inside themselves. The full training
    file is permuted with ``torch.Generator().manual_seed(seed)``: the first ``val_size`` indices are the
    validation set (never trained on), the rest is the training pool, and ``train_subset`` keeps the pool's
    first samples. Label noise touches the training portion only, so validation and test stay clean.

    Attributes set by ``setup``: ``train_dataset``, ``val_dataset``, ``test_dataset`` (TensorDatasets),
    ``train_indices``/``val_indices`` (positions in the training file), ``clean_train_targets`` and
    ``noisy_mask`` (which training labels were corrupted).
    """

    num_classes: int
    input_shape: tuple[int, int, int]
    #: name of the matching ``torchvision.datasets`` class (used only for ``download=True``)
    torchvision_name: str

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        train_subset: int | None = None,
        val_size: int = 1000,
        test_subset: int | None = None,
        test_offset: int = 0,
        label_noise: float = 0.0,
        seed: int = 0,
        download: bool = False,
        augment: bool = False,
    ) -> None:
        """Configure the data; nothing is read until ``prepare_data``/``setup``.

        Args:
            data_dir: Root folder in torchvision's on-disk layout (e.g. ``data/MNIST/raw``,
                ``data/cifar-10-batches-py``).
            batch_size: Training batch size.
            eval_batch_size: Batch size for validation and test; None means ``batch_size``.
            num_workers: DataLoader worker processes (0 loads in the main process; data is in memory).
            train_subset: Train on this many samples of the training pool (a seeded random subset);
                None uses the whole pool.
            val_size: Samples held out from the training file for validation and checkpoint selection.
            test_subset: Keep only the first N test samples (file order, from ``test_offset``); None keeps
                all.
            test_offset: Skip the first this many test samples: ``test_offset=1000, test_subset=1000`` is
                the second thousand (evaluations in chunks, merged per sample afterwards).
            label_noise: Fraction in [0, 1) of training labels replaced by a random different class.
            seed: Seed of the validation split, the subset, the label noise and the training shuffle.
            download: If files are missing, download them with torchvision (needs ``lit_robust[vision]``).
            augment: Random crop (4-pixel zero padding) and horizontal flip of training batches,
                applied on the device after transfer.
        """
        super().__init__()
        if not isinstance(data_dir, str | Path) or not str(data_dir):
            raise ConfigError(f"data.data_dir must be a non-empty path, got {data_dir!r}")
        integer("data.batch_size", batch_size, 1)
        integer("data.eval_batch_size", eval_batch_size, 1, optional=True)
        integer("data.num_workers", num_workers, 0)
        integer("data.train_subset", train_subset, 1, optional=True)
        integer("data.val_size", val_size, 0)
        integer("data.test_subset", test_subset, 1, optional=True)
        integer("data.test_offset", test_offset, 0)
        integer("data.seed", seed, None)
        number("data.label_noise", label_noise, 0.0, 1.0, high_open=True)
        flag("data.download", download)
        flag("data.augment", augment)
        self.save_hyperparameters()
        self.data_dir = str(data_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.train_subset = train_subset
        self.val_size = val_size
        self.test_subset = test_subset
        self.test_offset = test_offset
        self.label_noise = float(label_noise)
        self.seed = seed
        self.download = download
        self.augment = augment

        self.train_dataset: TensorDataset | None = None
        self.val_dataset: TensorDataset | None = None
        self.test_dataset: TensorDataset | None = None
        self.train_indices: torch.Tensor | None = None
        self.val_indices: torch.Tensor | None = None
        self.clean_train_targets: torch.Tensor | None = None
        self.noisy_mask: torch.Tensor | None = None

    # ----- what a dataset provides -------------------------------------------------------------------
    @abstractmethod
    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Read the whole training or test split: images uint8 (N, C, H, W) and labels int64 (N,)."""

    @abstractmethod
    def missing_files(self) -> list[Path]:
        """Absolute paths of the raw files that are absent under ``data_dir`` (empty when all exist)."""

    @abstractmethod
    def offline_hint(self) -> str:
        """How to put the files in place without torchvision (one sentence for the error message)."""

    @property
    def dataset_dir(self) -> Path:
        """Absolute folder holding the raw files (override in subclasses)."""
        return self.root

    @property
    def classes(self) -> list[str]:
        """Class names, index = label (used for image grids and reports)."""
        return [str(i) for i in range(self.num_classes)]

    def download_with_torchvision(self) -> None:
        """Download both splits with ``torchvision.datasets.<torchvision_name>(root, download=True)``.

        torchvision writes exactly the raw layout read here. Raises ``ImportError`` when torchvision is
        missing or cannot be imported (e.g. the CUDA wheel on CPU-only torch).
        """
        try:
            import torchvision.datasets as tv_datasets
        except (ImportError, RuntimeError) as err:  # RuntimeError: CUDA-built torchvision on CPU torch
            raise ImportError(f"torchvision is not usable: {err}") from err
        dataset_cls = getattr(tv_datasets, self.torchvision_name)
        for train in (True, False):
            dataset_cls(str(self.root), download=True, **self.torchvision_split(train))

    def torchvision_split(self, train: bool) -> dict[str, Any]:
        """How the torchvision class names a split: ``train=True/False`` (SVHN: ``split=...``)."""
        return {"train": train}

    # ----- Lightning hooks ---------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        """``data_dir`` as an absolute path."""
        return Path(self.data_dir).expanduser().resolve()

    def prepare_data(self) -> None:
        """Check that the files exist, downloading them with torchvision if ``download`` is set."""
        missing = self.missing_files()
        note = ""
        if missing and self.download:
            try:
                self.download_with_torchvision()
            except ImportError as err:
                note = f" download=True was ignored: {err}."
            except Exception as err:  # network errors etc.: report them in the one clear message below
                note = f" The torchvision download failed: {type(err).__name__}: {err}."
            missing = self.missing_files()
        if missing:
            raise self._not_found(missing, note)

    def _not_found(self, missing: list[Path], note: str = "") -> DataNotFoundError:
        names = ", ".join(p.name for p in missing)
        return DataNotFoundError(
            f"{type(self).__name__} data not found in {self.dataset_dir} (missing: {names}).{note} "
            f"Get it in one of two ways: (1) {self.offline_hint()}; (2) {_VISION_HINT}."
        )

    def setup(self, stage: str | None = None) -> None:
        """Load the splits needed for ``stage`` once (later calls are free) and build the datasets."""
        need_train = stage in (None, "fit", "validate") and self.train_dataset is None
        need_test = stage in (None, "test", "predict") and self.test_dataset is None
        if not (need_train or need_test):
            return
        missing = self.missing_files()
        if missing:
            raise self._not_found(missing)
        if need_train:
            self._setup_train(*self._load_checked(train=True))
        if need_test:
            x, y = self._load_checked(train=False)
            start = self.test_offset
            if start >= len(y):
                raise ConfigError(f"data.test_offset must be < {len(y)} (the test set size), got {start}")
            if self.test_subset is not None:
                if start + self.test_subset > len(y):
                    raise ConfigError(
                        f"data.test_subset must be <= {len(y) - start} (the test set size"
                        f"{f' minus data.test_offset={start}' if start else ''}), got {self.test_subset}"
                    )
            stop = len(y) if self.test_subset is None else start + self.test_subset
            x, y = x[start:stop], y[start:stop]
            self.test_dataset = TensorDataset(_to_float(x), y)

    def _load_checked(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            x, y = self.load_split(train)
        except (ValueError, EOFError, OSError, pickle.UnpicklingError) as err:  # a damaged or foreign file
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataCorruptError(
                f"data.data_dir {self.data_dir!r}: cannot read the {'training' if train else 'test'} "
                f"split of {type(self).__name__}: {detail}. Delete the damaged file and put it in place "
                f"again: {self.offline_hint()}"
            ) from None
        if x.dtype != torch.uint8 or tuple(x.shape[1:]) != tuple(self.input_shape) or y.shape != x.shape[:1]:
            raise ValueError(
                f"{type(self).__name__}.load_split returned images {x.dtype} {tuple(x.shape)} and labels "
                f"{tuple(y.shape)}; expected uint8 (N, {', '.join(map(str, self.input_shape))}) and (N,)"
            )
        return x, y.long()

    def _setup_train(self, x: torch.Tensor, y: torch.Tensor) -> None:
        n = len(y)
        if self.val_size >= n:
            raise ConfigError(
                f"data.val_size must be < {n} (the training file size, leaving some to train on), "
                f"got {self.val_size}"
            )
        generator = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(n, generator=generator)
        val_idx, pool = perm[: self.val_size], perm[self.val_size :]
        if self.train_subset is not None:
            if self.train_subset > len(pool):
                raise ConfigError(
                    f"data.train_subset must be <= {len(pool)} (training file of {n} minus "
                    f"data.val_size={self.val_size}), got {self.train_subset}"
                )
            pool = pool[: self.train_subset]
        clean = y[pool]
        noisy, mask = apply_label_noise(clean, self.num_classes, self.label_noise, generator)
        self.train_indices, self.val_indices = pool, val_idx
        self.clean_train_targets, self.noisy_mask = clean, mask
        self.train_dataset = TensorDataset(_to_float(x[pool]), noisy)
        self.val_dataset = TensorDataset(_to_float(x[val_idx]), y[val_idx])

    def train_dataloader(self) -> DataLoader:
        """Batches of ``batch_size`` (per process) in the order of :class:`EpochSeededSampler`.

        Under DDP (``trainer.world_size > 1``) each rank takes its interleaved share of that same order
        (:class:`EpochSeededDistributedSampler`, which Lightning does not replace), so W processes with
        ``batch_size`` B/W see exactly the global batches of 1 process with ``batch_size`` B. The loader is
        a :class:`ResumableLoader`: checkpoints record its position, so a fit resumes mid-epoch exactly.
        """
        dataset = self._dataset("train")
        trainer = self.trainer
        world = trainer.world_size if trainer is not None else 1
        if self.batch_size * world > len(dataset):
            raise ConfigError(
                f"data.batch_size must be <= {len(dataset) // world} (the training set of {len(dataset)}: "
                f"data.train_subset, or the training file minus data.val_size, over {world} process(es)), "
                f"got {self.batch_size}: each epoch would be one short batch"
            )
        if world > 1:
            sampler: Any = EpochSeededDistributedSampler(
                dataset, self.seed, num_replicas=world, rank=trainer.global_rank
            )
        else:
            sampler = EpochSeededSampler(dataset, self.seed)
        return ResumableLoader(
            dataset,
            self.batch_size,
            sampler,
            seed=self.seed,
            world_size=world,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self._pin_memory(),
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("val"), self.eval_batch_size or self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("test"), self.eval_batch_size or self.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches on the device (crop + flip), when ``augment`` is set."""
        if self.augment and self.trainer is not None and self.trainer.training:
            x, y = batch
            return random_crop_flip(x), y
        return batch

    # ----- helpers -----------------------------------------------------------------------------------
    def _dataset(self, split: str) -> TensorDataset:
        """``<split>_dataset``, running ``setup`` first if the loader is asked for before it."""
        if getattr(self, f"{split}_dataset") is None:
            self.setup("test" if split == "test" else "fit")
        return getattr(self, f"{split}_dataset")

    def _loader(self, dataset: TensorDataset, batch_size: int) -> DataLoader:
        """An evaluation loader in file order; its own generator keeps it off the global random stream."""
        return DataLoader(
            dataset,
            batch_size=batch_size,
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self._pin_memory(),
        )

    def _pin_memory(self) -> bool:
        """Page-locked batches (asynchronous host-to-GPU copies) when the trainer runs on a CUDA device."""
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"


def _to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return x.to(torch.float32).div_(255)
