"""Tests of the data layer: readers, splits, label noise, loaders, augmentation, errors."""

import gzip
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_robust.data import CIFAR10, CIFAR100, MNIST, SVHN, FashionMNIST, RobustDataModule
from lit_robust.data.base import (
    EpochSeededDistributedSampler,
    EpochSeededSampler,
    apply_label_noise,
    random_crop_flip,
)
from lit_robust.data.io import read_cifar_batches, read_cifar_pickle, read_idx
from lit_robust.errors import ConfigError, DataNotFoundError


@pytest.fixture(scope="session")
def mnist_raw(mnist_root: str) -> SimpleNamespace:
    """The raw MNIST arrays, read once with the idx reader."""
    raw = Path(mnist_root) / "MNIST" / "raw"
    return SimpleNamespace(
        train_x=torch.from_numpy(read_idx(raw / "train-images-idx3-ubyte")),
        train_y=torch.from_numpy(read_idx(raw / "train-labels-idx1-ubyte")).long(),
        test_y=torch.from_numpy(read_idx(raw / "t10k-labels-idx1-ubyte")).long(),
    )


# ----- readers -----------------------------------------------------------------------------------------
def test_read_idx_real_mnist(mnist_raw: SimpleNamespace) -> None:
    assert mnist_raw.train_x.shape == (60000, 28, 28) and mnist_raw.train_x.dtype == torch.uint8
    assert mnist_raw.train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist_raw.test_y[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(mnist_raw.train_y).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]


def test_read_idx_gz_types_and_errors(tmp_path: Path) -> None:
    values = np.arange(-6, 6, dtype=">i4").reshape(3, 4)
    payload = bytes([0, 0, 0x0C, 2]) + np.array([3, 4], ">u4").tobytes() + values.tobytes()
    (tmp_path / "a-idx2-int").write_bytes(payload)
    with gzip.open(tmp_path / "b-idx2-int.gz", "wb") as f:
        f.write(payload)
    for name in ("a-idx2-int", "b-idx2-int.gz"):
        out = read_idx(tmp_path / name)
        assert out.dtype == np.int32 and out.dtype.isnative
        np.testing.assert_array_equal(out, values)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + payload[4:])
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(payload[:-1])
    with pytest.raises(ValueError, match="header says shape"):
        read_idx(tmp_path / "short")


def test_read_cifar_pickle_decodes_bytes_keys_and_refuses_code(tmp_path: Path) -> None:
    x = np.arange(2 * 3072).astype(np.uint8).reshape(2, 3072)
    with open(tmp_path / "batch", "wb") as f:
        pickle.dump({b"data": x, b"labels": [np.int64(3), 7]}, f)
    got_x, got_y = read_cifar_batches([tmp_path / "batch"], "labels")
    assert got_x.shape == (2, 3, 32, 32) and got_y.tolist() == [3, 7]
    np.testing.assert_array_equal(got_x[1, 2], x[1, 2048:].reshape(32, 32))  # planes are R, G, B

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "evil", "wb") as f:
        pickle.dump({"data": Evil()}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_cifar_pickle(tmp_path / "evil")


# ----- MNIST / Fashion-MNIST ---------------------------------------------------------------------------
def test_mnist_shapes_range_and_mean(mnist_root: str, mnist_raw: SimpleNamespace) -> None:
    dm = MNIST(data_dir=mnist_root)
    assert dm.input_shape == (1, 28, 28) and dm.num_classes == 10 and dm.augment is False
    dm.prepare_data()
    dm.setup()
    (xt, yt), (xv, yv), (xs, ys) = (d.tensors for d in (dm.train_dataset, dm.val_dataset, dm.test_dataset))
    assert xt.shape == (59000, 1, 28, 28) and xv.shape == (1000, 1, 28, 28) and xs.shape == (10000, 1, 28, 28)
    for x, y in ((xt, yt), (xv, yv), (xs, ys)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.min() == 0.0 and x.max() == 1.0
    full_mean = (xt.sum() + xv.sum()) / (60000 * 784)
    assert full_mean.item() == pytest.approx(0.1307, abs=5e-4)
    assert torch.equal(ys, mnist_raw.test_y)
    first = dm.train_indices[0]
    assert torch.equal(xt[0, 0], mnist_raw.train_x[first].float() / 255)
    # setup is cached: a second call keeps the same objects
    train_ds = dm.train_dataset
    dm.setup("fit")
    assert dm.train_dataset is train_ds


def test_split_disjoint_covering_and_mapped(mnist_root: str, mnist_raw: SimpleNamespace) -> None:
    dm = MNIST(data_dir=mnist_root, val_size=500, train_subset=2000, seed=3)
    dm.setup("fit")
    val, train = dm.val_indices, dm.train_indices
    assert len(val) == 500 and len(train) == 2000
    unused = torch.tensor(sorted(set(range(60000)) - set(val.tolist()) - set(train.tolist())))
    assert len(unused) == 60000 - 2500  # so val and train are disjoint and without repeats
    assert torch.equal(torch.cat([val, train, unused]).sort().values, torch.arange(60000))
    assert torch.equal(dm.val_dataset.tensors[1], mnist_raw.train_y[val])
    assert torch.equal(dm.train_dataset.tensors[1], mnist_raw.train_y[train])
    assert torch.equal(dm.val_dataset.tensors[0][:, 0], mnist_raw.train_x[val].float() / 255)
    assert dm.test_dataset is None  # stage "fit" does not load the test split

    whole = MNIST(data_dir=mnist_root, val_size=500, seed=3)
    whole.setup("fit")
    assert torch.equal(whole.val_indices, val)
    assert torch.equal(torch.cat([whole.val_indices, whole.train_indices]).sort().values, torch.arange(60000))
    assert torch.equal(whole.train_indices[:2000], train)  # the subset is a prefix of the seeded pool


def test_seed_determines_split(mnist_root: str) -> None:
    def split(seed: int) -> MNIST:
        dm = MNIST(data_dir=mnist_root, val_size=100, train_subset=300, seed=seed)
        dm.setup("fit")
        return dm

    a, b, c = split(1), split(1), split(2)
    assert torch.equal(a.val_indices, b.val_indices) and torch.equal(a.train_indices, b.train_indices)
    assert torch.equal(a.train_dataset.tensors[0], b.train_dataset.tensors[0])
    assert not torch.equal(a.val_indices, c.val_indices)
    assert not torch.equal(a.train_indices, c.train_indices)


def test_label_noise_train_only(mnist_root: str, mnist_raw: SimpleNamespace) -> None:
    dm = MNIST(
        data_dir=mnist_root, train_subset=5000, val_size=1000, test_subset=2000, label_noise=0.2, seed=7
    )
    dm.setup()
    noisy, clean, mask = dm.train_dataset.tensors[1], dm.clean_train_targets, dm.noisy_mask
    assert torch.equal(clean, mnist_raw.train_y[dm.train_indices])
    assert mask.dtype == torch.bool and mask.shape == (5000,)
    assert int(mask.sum()) == 1000 and int((noisy != clean).sum()) == 1000
    assert (noisy[mask] != clean[mask]).all() and torch.equal(noisy[~mask], clean[~mask])
    assert noisy.min() >= 0 and noisy.max() < 10
    assert torch.equal(dm.val_dataset.tensors[1], mnist_raw.train_y[dm.val_indices])
    assert torch.equal(dm.test_dataset.tensors[1], mnist_raw.test_y[:2000])
    assert dm.hparams["label_noise"] == 0.2
    no_noise = MNIST(data_dir=mnist_root, train_subset=5000, val_size=1000, seed=7)
    no_noise.setup("fit")
    assert torch.equal(no_noise.train_indices, dm.train_indices)  # noise does not move the split
    assert not no_noise.noisy_mask.any()


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 300), k=st.integers(2, 12), fraction=st.floats(0, 0.999), seed=st.integers(0, 2**31))
def test_apply_label_noise_property(n: int, k: int, fraction: float, seed: int) -> None:
    labels = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))
    noisy, mask = apply_label_noise(labels, k, fraction, torch.Generator().manual_seed(seed))
    assert int(mask.sum()) == round(fraction * n)
    assert (noisy[mask] != labels[mask]).all() and torch.equal(noisy[~mask], labels[~mask])
    assert noisy.min() >= 0 and noisy.max() < k


def test_fashion_mnist_loads(mnist_root: str) -> None:
    dm = FashionMNIST(data_dir=mnist_root)
    dm.setup()
    n_train = len(dm.train_dataset) + len(dm.val_dataset)
    assert n_train == 60000 and len(dm.test_dataset) == 10000
    assert dm.test_dataset.tensors[0].shape == (10000, 1, 28, 28)
    x_all = torch.cat([dm.train_dataset.tensors[0], dm.val_dataset.tensors[0]])
    assert x_all.mean().item() == pytest.approx(0.2860, abs=5e-4)
    assert (
        torch.bincount(torch.cat([dm.train_dataset.tensors[1], dm.val_dataset.tensors[1]])).tolist()
        == [6000] * 10
    )
    assert dm.classes[0] == "T-shirt/top" and len(dm.classes) == 10


# ----- loaders -----------------------------------------------------------------------------------------
def _first_epoch_labels(dm: RobustDataModule) -> torch.Tensor:
    return torch.cat([y for _, y in dm.train_dataloader()])


def test_train_loader_shuffle_reproducible(cifar10_data: SimpleNamespace) -> None:
    a = CIFAR10(data_dir=cifar10_data.root, val_size=20, batch_size=32, eval_batch_size=7, seed=5)
    b = CIFAR10(data_dir=cifar10_data.root, val_size=20, batch_size=32, eval_batch_size=7, seed=5)
    loader = a.train_dataloader()  # works before setup: it runs setup("fit")
    epoch0 = torch.cat([y for _, y in loader])
    epoch1 = torch.cat([y for _, y in loader])
    assert torch.equal(epoch0, _first_epoch_labels(b))
    assert sorted(epoch0.tolist()) == sorted(a.train_dataset.tensors[1].tolist())
    assert not torch.equal(epoch0, epoch1)
    assert not torch.equal(epoch0, a.train_dataset.tensors[1])  # shuffled
    assert not torch.equal(
        epoch0, _first_epoch_labels(CIFAR10(data_dir=cifar10_data.root, val_size=20, seed=6))
    )
    val_batches = list(a.val_dataloader())
    assert [len(y) for _, y in val_batches] == [7, 7, 6]
    assert torch.equal(torch.cat([y for _, y in val_batches]), a.val_dataset.tensors[1])  # not shuffled
    assert len(next(iter(a.test_dataloader()))[1]) == 7


def test_epoch_seeded_sampler_resumes() -> None:
    data = torch.utils.data.TensorDataset(torch.arange(50))
    run = EpochSeededSampler(data, seed=1)
    orders = [list(run) for _ in range(4)]
    assert len({tuple(o) for o in orders}) == 4 and sorted(orders[0]) == list(range(50))
    resumed = EpochSeededSampler(data, seed=1)
    resumed.set_epoch(3)
    assert list(resumed) == orders[3]


def _batches(data, sampler, batch_size: int, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, sampler=sampler)
    return [b.tolist() for (b,) in loader]


@pytest.mark.parametrize("n", [50, 48])  # 50: a short last batch (2 = 1 per rank); 48: 6 full batches
def test_distributed_sampler_splits_the_one_process_batches(n: int) -> None:
    """World size 2, per-rank batch 4: the ranks' k-th batches interleaved are the 1-process k-th batch
    of size 8 (rank 0 positions 0, 2, 4, 6 of it), for every k and epoch, and they partition the data."""
    data = torch.utils.data.TensorDataset(torch.arange(n))
    for epoch in range(4):
        one = _batches(data, EpochSeededSampler(data, seed=3), 8, epoch)
        ranks = [
            _batches(data, EpochSeededDistributedSampler(data, 3, num_replicas=2, rank=r), 4, epoch)
            for r in (0, 1)
        ]
        assert len(ranks[0]) == len(ranks[1]) == len(one) == math.ceil(n / 8)
        for k, batch in enumerate(one):
            assert ranks[0][k] == batch[0::2] and ranks[1][k] == batch[1::2], (epoch, k)
        assert sorted(sum(ranks[0] + ranks[1], [])) == list(range(n))
    assert one != _batches(data, EpochSeededSampler(data, seed=3), 8, 0)  # epochs differ


def test_distributed_sampler_pads_by_wrapping_and_advances() -> None:
    """n = 11 over 3 ranks: perm + perm[:1] split 4/4/4, like DistributedSampler; iterating again without
    set_epoch gives the next epoch's order, as EpochSeededSampler does."""
    data = torch.utils.data.TensorDataset(torch.arange(11))
    perm = list(EpochSeededSampler(data, seed=5))
    samplers = [EpochSeededDistributedSampler(data, 5, num_replicas=3, rank=r) for r in range(3)]
    assert [list(s) for s in samplers] == [(perm + perm[:1])[r::3] for r in range(3)]
    assert all(len(s) == 4 for s in samplers)
    single = EpochSeededSampler(data, seed=5)
    single.set_epoch(1)
    assert list(samplers[0]) == list(single)[0::3][:4]


def _on(device: str) -> SimpleNamespace:
    """A stand-in for a trainer's strategy on ``device``."""
    return SimpleNamespace(root_device=torch.device(device))


@pytest.mark.parametrize("device, pinned", [("cpu", False), ("cuda", True)])
def test_loaders_pin_memory_for_a_cuda_trainer(cifar10_data: SimpleNamespace, device, pinned) -> None:
    """Page-locked batches (asynchronous copies to the GPU) exactly when the trainer runs on CUDA."""
    dm = CIFAR10(data_dir=cifar10_data.root, val_size=20, batch_size=60, seed=2)
    dm.trainer = SimpleNamespace(world_size=1, global_rank=0, training=False, strategy=_on(device))
    loaders = (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader())
    assert [loader.pin_memory for loader in loaders] == [pinned] * 3


def test_train_loader_is_distributed_only_under_ddp(cifar10_data: SimpleNamespace) -> None:
    """``train_dataloader`` picks the distributed sampler from the attached trainer's world size."""
    dm = CIFAR10(data_dir=cifar10_data.root, val_size=20, batch_size=60, seed=2)
    assert type(dm.train_dataloader().sampler) is EpochSeededSampler  # no trainer
    dm.trainer = SimpleNamespace(world_size=1, global_rank=0, training=False, strategy=_on("cpu"))
    assert type(dm.train_dataloader().sampler) is EpochSeededSampler
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1, training=False, strategy=_on("cpu"))
    sampler = dm.train_dataloader().sampler
    assert isinstance(sampler, EpochSeededDistributedSampler)
    assert (sampler.num_replicas, sampler.rank, sampler.seed, len(sampler)) == (2, 1, 2, 90)


def test_trainer_integration_epochs_and_augment(cifar10_data: SimpleNamespace) -> None:
    """Under a real Trainer: epoch orders follow (seed, epoch) and only training batches are augmented."""
    from lightning.pytorch import LightningModule, Trainer

    dm = CIFAR10(data_dir=cifar10_data.root, val_size=20, batch_size=60, seed=2)
    dm.setup("fit")
    train_x = dm.train_dataset.tensors[0]

    class Recorder(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.labels: dict[int, list[int]] = {}
            self.augmented = self.val_unchanged = 0

        def training_step(self, batch, batch_idx):
            x, y = batch
            self.labels.setdefault(self.current_epoch, []).extend(y.tolist())
            matches = (x.flatten(1)[:, None, :] == train_x.flatten(1)[None]).all(-1).any(1)
            self.augmented += int((~matches).sum())
            return (self.w * x.mean()).sum()

        def validation_step(self, batch, batch_idx):
            self.val_unchanged += int(torch.equal(batch[0], dm.val_dataset.tensors[0][: len(batch[0])]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Recorder()
    Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    ).fit(model, datamodule=dm)
    labels = dm.train_dataset.tensors[1]
    for epoch in (0, 1):
        sampler = EpochSeededSampler(dm.train_dataset, seed=2)
        sampler.set_epoch(epoch)
        assert model.labels[epoch] == labels[list(sampler)].tolist()
    assert model.augmented > 100  # most of the 2 x 180 training images were cropped or flipped
    assert model.val_unchanged == 2


# ----- CIFAR ---------------------------------------------------------------------------------------------
def test_test_offset_takes_a_chunk_and_chunks_tile_the_test_set(cifar10_data) -> None:
    """test_offset + test_subset select test indices [offset, offset + subset): evaluations in chunks whose
    per-sample results, concatenated, are those of the whole test set."""
    chunks = []
    for offset in (0, 15, 30):
        dm = CIFAR10(
            data_dir=cifar10_data.root,
            val_size=20,
            test_offset=offset,
            test_subset=None if offset == 30 else 15,
        )
        dm.setup("test")
        chunks.append(dm.test_dataset.tensors[1])
    np.testing.assert_array_equal(torch.cat(chunks).numpy(), cifar10_data.test_y)
    with pytest.raises(
        ConfigError, match="data.test_subset must be <= 10 \\(the test set size minus data.test_offset=30\\)"
    ):
        CIFAR10(data_dir=cifar10_data.root, test_offset=30, test_subset=11).setup("test")
    with pytest.raises(ConfigError, match="data.test_offset must be < 40"):
        CIFAR10(data_dir=cifar10_data.root, test_offset=40).setup("test")


@pytest.mark.parametrize(
    ("cls", "fixture", "n_classes"), [(CIFAR10, "cifar10_data", 10), (CIFAR100, "cifar100_data", 100)]
)
def test_cifar_round_trip(cls: type, fixture: str, n_classes: int, request: pytest.FixtureRequest) -> None:
    data = request.getfixturevalue(fixture)
    dm = cls(data_dir=data.root, val_size=25, test_subset=30)
    assert dm.num_classes == n_classes and dm.input_shape == (3, 32, 32) and dm.augment is True
    dm.prepare_data()
    dm.setup()
    n = len(data.train_y)
    assert len(dm.train_dataset) == n - 25 and len(dm.val_dataset) == 25 and len(dm.test_dataset) == 30
    x, y = dm.train_dataset.tensors
    assert x.shape == (n - 25, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    idx = dm.train_indices.numpy()
    np.testing.assert_array_equal((x * 255).round().to(torch.uint8).numpy(), data.train_x[idx])
    np.testing.assert_array_equal(y.numpy(), data.train_y[idx])
    np.testing.assert_array_equal(dm.val_dataset.tensors[1].numpy(), data.train_y[dm.val_indices.numpy()])
    np.testing.assert_array_equal(dm.test_dataset.tensors[1].numpy(), data.test_y[:30])
    np.testing.assert_array_equal((dm.test_dataset.tensors[0] * 255).round().byte().numpy(), data.test_x[:30])
    assert dm.classes == data.classes


# ----- SVHN ----------------------------------------------------------------------------------------------
def test_svhn_reads_the_matlab_layout(tmp_path: Path) -> None:
    """torchvision's files: X (32, 32, 3, N) as (row, column, channel, image), y (N, 1) in 1..10 with 10
    for the digit 0. Images come back (N, 3, 32, 32) pixel for pixel, and label 10 becomes 0."""
    from scipy.io import savemat

    rng = np.random.default_rng(7)
    splits = {}
    for name, n in (("train", 60), ("test", 12)):
        x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, n)
        y[:3] = [0, 9, 1]
        savemat(
            tmp_path / f"{name}_32x32.mat",
            {"X": x.transpose(2, 3, 1, 0), "y": np.where(y == 0, 10, y)[:, None]},
        )
        splits[name] = (x, y)
    dm = SVHN(data_dir=str(tmp_path), val_size=10, test_subset=12)
    assert dm.augment is False and dm.missing_files() == []
    dm.prepare_data()
    dm.setup()
    x, y = dm.train_dataset.tensors
    idx = dm.train_indices.numpy()
    np.testing.assert_array_equal((x * 255).round().byte().numpy(), splits["train"][0][idx])
    np.testing.assert_array_equal(y.numpy(), splits["train"][1][idx])
    np.testing.assert_array_equal(dm.test_dataset.tensors[1].numpy(), splits["test"][1])
    assert dm.test_dataset.tensors[1][:3].tolist() == [0, 9, 1]
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(DataNotFoundError, match="test_32x32.mat"):
        SVHN(data_dir=str(tmp_path)).setup("test")


def _is_crop_of(out: torch.Tensor, img: torch.Tensor, pad: int) -> bool:
    """Whether ``out`` is some (possibly flipped) crop of ``img`` zero-padded by ``pad``."""
    padded = torch.nn.functional.pad(img, (pad,) * 4)
    h, w = img.shape[-2:]
    crops = (padded[:, i : i + h, j : j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1))
    return any(torch.equal(out, c) or torch.equal(out, c.flip(-1)) for c in crops)


def test_random_crop_flip() -> None:
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = random_crop_flip(x, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype and out.min() >= 0 and out.max() <= 1
    assert sum(not torch.equal(a, b) for a, b in zip(out, x, strict=True)) >= 12
    assert all(_is_crop_of(o, i, 4) for o, i in zip(out[:6], x[:6], strict=True))
    flips = random_crop_flip(x, padding=0, generator=torch.Generator().manual_seed(2))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(flips, x, strict=True)]
    assert (
        all(f or torch.equal(o, i) for f, o, i in zip(flipped, flips, x, strict=True))
        and 0 < sum(flipped) < 16
    )
    again = random_crop_flip(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_on_after_batch_transfer_only_when_training(cifar10_data: SimpleNamespace) -> None:
    dm = CIFAR10(data_dir=cifar10_data.root, val_size=20)
    x, y = dm.train_dataloader().dataset.tensors
    batch = (x[:32], y[:32])
    assert dm.on_after_batch_transfer(batch, 0) is batch  # no trainer attached
    dm.trainer = SimpleNamespace(training=False)
    assert dm.on_after_batch_transfer(batch, 0) is batch
    dm.trainer = SimpleNamespace(training=True)
    ax, ay = dm.on_after_batch_transfer(batch, 0)
    assert ax.shape == batch[0].shape and ay is batch[1] and 0 <= ax.min() and ax.max() <= 1
    assert not torch.equal(ax, batch[0])
    plain = CIFAR10(data_dir=cifar10_data.root, val_size=20, augment=False)
    plain.trainer = SimpleNamespace(training=True)
    assert plain.on_after_batch_transfer(batch, 0) is batch


# ----- errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [MNIST, FashionMNIST, CIFAR10, CIFAR100])
def test_missing_data_message(cls: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    dm = cls(data_dir="nowhere")
    expected_dir = tmp_path.resolve() / "nowhere"
    assert dm.missing_files() and all(
        p.is_absolute() and expected_dir in p.parents for p in dm.missing_files()
    )
    for call in (dm.prepare_data, dm.setup):
        with pytest.raises(DataNotFoundError) as info:
            call()
        msg = str(info.value)
        assert isinstance(info.value, FileNotFoundError)
        assert str(expected_dir) in msg and "download" in msg and "lit_robust[vision]" in msg
        assert all(p.name in msg for p in dm.missing_files())
        if cls in (MNIST, FashionMNIST):
            assert "fetch_offline_data.sh" in msg
        else:
            assert dm.dataset_dir.name in msg and "tarball" in msg


def test_missing_one_file_and_download_without_torchvision(
    cifar10_data: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails as when it is not installed
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for f in Path(cifar10_data.root, "cifar-10-batches-py").iterdir():
        if f.name != "data_batch_3":
            (folder / f.name).write_bytes(f.read_bytes())
    dm = CIFAR10(data_dir=str(tmp_path), download=True)
    assert [p.name for p in dm.missing_files()] == ["data_batch_3"]
    with pytest.raises(DataNotFoundError, match="torchvision") as info:
        dm.prepare_data()
    assert "missing: data_batch_3)" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"num_workers": -1}, "num_workers"),
        ({"train_subset": 0}, "train_subset"),
        ({"val_size": -1}, "val_size"),
        ({"test_subset": 0}, "test_subset"),
        ({"label_noise": 1.0}, "label_noise"),
        ({"label_noise": -0.1}, "label_noise"),
        ({"label_noise": math.nan}, "label_noise"),
        ({"seed": 1.5}, "seed"),
        ({"download": "yes"}, "download"),
        ({"augment": 1}, "augment"),
        ({"data_dir": ""}, "data_dir"),
    ],
)
def test_invalid_args_name_the_field(kwargs: dict, field: str) -> None:
    for cls in (MNIST, CIFAR10):
        with pytest.raises(ConfigError, match=rf"data\.{field}\b"):
            cls(**kwargs)


def test_invalid_arg_message_and_sizes(cifar10_data: SimpleNamespace) -> None:
    with pytest.raises(ValueError) as info:
        MNIST(label_noise=1.5)
    assert str(info.value) == "data.label_noise must be a finite number in [0, 1), got 1.5"
    with pytest.raises(ConfigError, match=r"data\.batch_size must be an integer >= 1, got 0"):
        MNIST(batch_size=0)
    root = cifar10_data.root
    for kwargs, field in (
        ({"val_size": 200}, "val_size"),
        ({"val_size": 20, "train_subset": 181}, "train_subset"),
        ({"val_size": 20, "test_subset": 41}, "test_subset"),
    ):
        with pytest.raises(ConfigError, match=rf"data\.{field}"):
            CIFAR10(data_dir=root, **kwargs).setup()
    ok = CIFAR10(data_dir=root, val_size=20, train_subset=180, test_subset=40)
    ok.setup()
    assert len(ok.train_dataset) == 180 and len(ok.test_dataset) == 40


def test_import_does_not_load_torchvision() -> None:
    code = "import sys, lit_robust.data; assert 'torchvision' not in sys.modules, 'torchvision imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
