"""Shared test fixtures: the real offline MNIST data and tiny CIFAR-format datasets."""

import os

os.environ.setdefault("WANDB_MODE", "offline")

import pickle  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _finish_wandb_runs():
    """End any W&B run a test leaves open, and W&B's service process: Lightning's WandbLogger attaches to
    a run already in progress, and the service resolves relative paths (a logger's relative ``save_dir``)
    from the working directory it started in, so a later test's run would be written into an earlier
    test's folder."""
    yield
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None:
        if getattr(wandb, "run", None) is not None:
            wandb.finish()
        wandb.teardown()


_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.fixture(scope="session")
def mnist_root() -> str:
    """Absolute path of ``<repo>/data`` holding real MNIST and Fashion-MNIST; fails if they are missing."""
    root = REPO_ROOT / "data"
    missing = [
        f"{name}/raw/{f}"
        for name in ("MNIST", "FashionMNIST")
        for f in _IDX_FILES
        if not (root / name / "raw" / f).is_file()
    ]
    if missing:
        pytest.fail(
            f"real MNIST/Fashion-MNIST missing under {root} ({', '.join(missing)}): "
            f"run scripts/fetch_offline_data.sh {root}",
            pytrace=False,
        )
    return str(root)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the official files are protocol-2 pickles


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


@pytest.fixture(scope="session")
def cifar10_data(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Tiny CIFAR-10 in the official layout: 5 batches x 40 train images, 40 test images.

    Returns ``root`` (the data_dir), ``train_x``/``test_x`` uint8 (N, 3, 32, 32), ``train_y``/``test_y``
    int64 and ``classes``.
    """
    from lit_robust.data.synthetic import CIFAR10_CLASSES, write_synthetic_cifar10

    root = tmp_path_factory.mktemp("cifar10", numbered=False)
    arrays = write_synthetic_cifar10(root, n_train=200, n_test=40, seed=10)
    return SimpleNamespace(root=str(root), classes=CIFAR10_CLASSES, **arrays)


@pytest.fixture(scope="session")
def cifar100_data(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Tiny CIFAR-100 in the official layout (``train``, ``test``, ``meta``; fine and coarse labels):
    300 train and 50 test images, same return fields as ``cifar10_data`` (labels are the fine ones)."""
    rng = np.random.default_rng(100)
    root = tmp_path_factory.mktemp("cifar100", numbered=False)
    folder = root / "cifar-100-python"
    folder.mkdir()
    classes = [f"fine_{i:02d}" for i in range(100)]
    train_x, test_x = _images(rng, 300), _images(rng, 50)
    train_y, test_y = rng.integers(0, 100, 300), rng.integers(0, 100, 50)
    for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        _dump(
            folder / name,
            {
                "data": x.reshape(len(x), 3072),
                "fine_labels": [int(v) for v in y],
                "coarse_labels": [int(v) // 5 for v in y],
            },
        )
    _dump(
        folder / "meta",
        {"fine_label_names": classes, "coarse_label_names": [f"coarse_{i}" for i in range(20)]},
    )
    return SimpleNamespace(
        root=str(root), train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, classes=classes
    )


def _train_mlp(mnist_root: str, adversarial_eps: float = 0.0):
    """MLP 784-128-10 trained for 2 epochs on 10k real MNIST images (PGD-5 AT when adversarial_eps > 0),
    returned in eval mode with 500 real test images."""
    import torch
    import torch.nn.functional as F

    from lit_robust.attacks import PGD
    from lit_robust.data import MNIST
    from lit_robust.nets import MLP

    dm = MNIST(data_dir=mnist_root, train_subset=10_000, val_size=0, test_subset=500, seed=0)
    dm.setup("fit")
    dm.setup("test")
    x, y = dm.train_dataset.tensors
    torch.manual_seed(0)
    net = MLP(hidden=[128])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    attack = PGD(adversarial_eps, "inf", steps=5, alpha=adversarial_eps / 2, keep_best=False, seed=0)
    for _ in range(2):
        for idx in torch.randperm(len(x)).split(100):
            xb = attack(net, x[idx], y[idx]) if adversarial_eps > 0 else x[idx]
            opt.zero_grad()
            F.cross_entropy(net(xb), y[idx]).backward()
            opt.step()
    net.zero_grad(set_to_none=True)
    net.eval()
    xt, yt = dm.test_dataset.tensors
    return net, xt, yt


@pytest.fixture(scope="session")
def mnist_mlp(mnist_root):
    """``(net, x_test, y_test)``: an ERM MLP (784-128-10, 2 epochs on 10k real MNIST images; 90% clean on
    these images) in eval mode, and the first 500 real test images."""
    return _train_mlp(mnist_root)


@pytest.fixture(scope="session")
def mnist_mlp_at(mnist_root):
    """``(net, x_test, y_test)`` like ``mnist_mlp`` but PGD-5 adversarially trained at L_inf eps 0.1:
    a model on which attacks of different strength give different, non-zero robust accuracies."""
    return _train_mlp(mnist_root, adversarial_eps=0.1)
