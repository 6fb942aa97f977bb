"""Issue 14, bit-exact resume: a fit stopped (a) between epochs and (b) in the middle of an epoch, then
resumed from its ``last.ckpt`` by a fresh module and trainer (with the global random streams scrambled),
ends with weights ``torch.equal`` to the uninterrupted fit and the same validation metrics, for every
method. The stop is an exception raised at the start of a training batch, after the checkpoint of the
previous step was written: nothing of the stopped process survives but the file. (A real SIGKILL of a CLI
fit is in ``tests/integration/test_resume_cli.py``.)

MNIST subset of 96 training images (with the on-device crop-and-flip augmentation), batch 16: 6 batches
per epoch (2 outer steps for EntropySGD-AT, which consumes L = 3 batches per step). ``last.ckpt`` is also
written every 4 steps (3 for EntropySGD-AT), so (b) resumes 2 batches (one outer step) into epoch 1.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback
from test_long_runs import trainer as make_trainer

from lit_robust.attacks import BETA, PGD, TRADESKL
from lit_robust.data import MNIST
from lit_robust.methods import AROVR, BETAAT, L2NNN, MART, PGDAT, TRADES, EntropySGDAT
from lit_robust.nets import MLP, L2NNNConvNet
from lit_robust.nets.lifted import LiftedMLP
from lit_robust.optim import EntropySGD

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*dataloader_iter.*"),
    pytest.mark.filterwarnings("ignore:.*Checkpoint directory.*exists and is not empty"),
]

EPOCHS = 2


def _adam(params):
    return torch.optim.Adam(params, lr=1e-2)


def _ensgd(params):
    return EntropySGD(params, L=3, lr=0.1, thermal_noise=1e-3)


def _mlp():
    return MLP(hidden=[16])


#: method name -> (factory of a fresh module, steps per epoch); every training attack has a random start.
#: The mid-epoch checkpoint comes every 4 steps (3 for EntropySGD-AT): step 8 (3) is inside epoch 1.
METHODS = {
    "PGDAT": (lambda **kw: PGDAT(net=_mlp(), eps=0.1, train_attack=PGD(steps=2, random_start=True), **kw), 6),
    "TRADES": (lambda **kw: TRADES(net=_mlp(), eps=0.1, train_attack=TRADESKL(steps=2), **kw), 6),
    "MART": (lambda **kw: MART(net=_mlp(), eps=0.1, train_attack=PGD(steps=2, random_start=True), **kw), 6),
    "BETAAT": (lambda **kw: BETAAT(net=_mlp(), eps=0.1, train_attack=BETA(steps=2), **kw), 6),
    "EntropySGDAT+AWP": (
        lambda **kw: EntropySGDAT(
            net=_mlp(), eps=0.1, awp_gamma=0.01, optimizer=_ensgd, train_attack=PGD(steps=2), **kw
        ),
        2,
    ),
    "L2NNN": (
        lambda **kw: L2NNN(
            net=L2NNNConvNet(conv_channels=[4, 8], fc=[16], kernel_size=3),
            train_attack=PGD(steps=2, random_start=True),
            optimizer=_adam,
            **kw,
        ),
        6,
    ),
    "AROVR_g": (
        lambda **kw: AROVR(net=LiftedMLP(hidden=[16, 16]), variant="arovr_g", n_sweeps=3, **kw),
        6,
    ),
}


class Stopped(Exception):
    """The simulated kill."""


class StopAt(Callback):
    """Raise at the start of the batch of global step ``step`` (after ``last.ckpt`` of step - 1)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Stopped(f"stopped at step {self.step}")


def data(root: str) -> MNIST:
    return MNIST(
        data_dir=root, train_subset=96, val_size=32, batch_size=16, eval_batch_size=32, seed=0, augment=True
    )


def fit(name: str, root: str, out: Path, stop: int | None = None, resume: bool = False):
    make, steps = METHODS[name]
    torch.manual_seed(999 if resume else 0)  # a resumed run starts from other streams: the file must fix them
    random.seed(999 if resume else 0)
    np.random.seed(999 if resume else 0)
    model = make(eval_attack=PGD(steps=3, random_start=True), checkpoint_every_n_steps=4 if steps > 2 else 3)
    callbacks = [StopAt(stop)] if stop is not None else []
    trainer = make_trainer(out, EPOCHS, num_sanity_val_steps=1, callbacks=callbacks)
    ckpt = str(out / "checkpoints" / "last.ckpt") if resume else None
    if stop is not None:
        with pytest.raises(Stopped):
            trainer.fit(model, datamodule=data(root), ckpt_path=ckpt)
        return None
    trainer.fit(model, datamodule=data(root), ckpt_path=ckpt)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    return model, metrics


def _same(a, b) -> bool:
    """Bit-equal tensors; other state_dict entries (a module's extra state) compare with ``==``."""
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


@pytest.mark.parametrize("name", list(METHODS))
def test_resume_between_epochs_and_mid_epoch_is_bit_exact(name, mnist_root, tmp_path):
    steps = METHODS[name][1]
    reference, ref_metrics = fit(name, mnist_root, tmp_path / "ref")
    assert reference.trainer.global_step == EPOCHS * steps
    for kind, stop in (("between epochs", steps), ("mid-epoch", 8 if steps > 2 else 3)):
        out = tmp_path / kind.replace(" ", "_")
        fit(name, mnist_root, out, stop=stop)
        saved = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
        assert saved["global_step"] == stop  # the checkpoint the resume starts from
        resumed, metrics = fit(name, mnist_root, out, resume=True)
        assert resumed.trainer.global_step == EPOCHS * steps, kind
        ref_state, state = reference.state_dict(), resumed.state_dict()
        assert ref_state.keys() == state.keys()
        unequal = [k for k in ref_state if not _same(ref_state[k], state[k])]
        assert not unequal, f"{name} resumed {kind}: {unequal} differ"
        assert metrics == ref_metrics, f"{name} resumed {kind}"
