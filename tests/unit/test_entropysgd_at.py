"""EntropySGDAT / AWPAT (lit_robust.methods.entropysgd_at): variants, step accounting, AWP in a step and
bit-exact checkpoint resume. TinyData: 64 random 1x4x4 images, batch 16 = 4 batches per epoch."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from test_methods import TinyData, bn_net, trainer
from torch import nn

from lit_robust.attacks import PGD, TRADESKL
from lit_robust.callbacks import EpsWarmup
from lit_robust.errors import ConfigError
from lit_robust.methods.entropysgd_at import AWPAT, EntropySGDAT
from lit_robust.optim import AWP, EntropySGD

pytestmark = [  # Lightning flags every training_step(dataloader_iter) as experimental
    pytest.mark.filterwarnings("ignore:.*dataloader_iter.*"),
    pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`"),
]


def ensgd(**kw):
    return lambda params: EntropySGD(params, **{"L": 3, "lr": 0.1, "thermal_noise": 1e-3, **kw})


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.net.parameters()])


class CountingData(TinyData):
    """TinyData that counts the training batches handed out."""

    def __init__(self) -> None:
        super().__init__()
        self.served = 0

    def train_dataloader(self):
        data = self

        class Counted:
            def __init__(self, loader):
                self.loader = loader

            def __len__(self):
                return len(self.loader)

            def __iter__(self):
                for batch in self.loader:
                    data.served += 1
                    yield batch

        return Counted(super().train_dataloader())


@pytest.mark.parametrize(
    "kwargs, order",
    [
        ({"inner_loss": "pgd_ce"}, 1),
        ({"inner_loss": "pgd_ce", "awp_gamma": 0.01}, 1),
        ({"inner_loss": "trades"}, 1),
        ({"inner_loss": "trades", "awp_gamma": 0.005}, 1),
        ({"inner_loss": "pgd_ce", "awp_gamma": 0.005}, 2),
    ],
    ids=["AT", "AT+AWP", "TRADES", "TRADES+AWP", "AWP+2nd"],
)
def test_each_variant_fits_with_one_outer_step_per_L_batches(kwargs, order):
    model = EntropySGDAT(net=bn_net(), eps=0.1, optimizer=ensgd(order=order), **kwargs)
    start = flat(model)
    data = CountingData()
    t = trainer(max_epochs=2, limit_val_batches=1)
    t.fit(model, datamodule=data)
    assert data.served == 8  # every batch once per epoch
    assert t.global_step == 4  # per epoch: a chain of 3 batches and the closed partial chain of 1
    assert torch.isfinite(flat(model)).all() and not torch.equal(flat(model), start)
    metrics = t.callback_metrics
    assert {"train/loss", "train/robust_acc", "val/robust_acc", "ensgd/drift"} <= metrics.keys()
    assert metrics["ensgd/steps"] == 1  # the last chain of the epoch had one batch left
    if kwargs["inner_loss"] == "trades":
        assert isinstance(model.train_attack, TRADESKL) and "train/clean_acc" in metrics
    assert ("ensgd/h_max" in metrics) == (order == 2)
    assert (model.awp is not None) == ("awp_gamma" in kwargs)


def test_plain_optimiser_awp_and_warmup_and_tuned_phases_count_steps():
    awp = AWPAT(net=bn_net(), eps=0.1)
    t = trainer(max_epochs=1, limit_val_batches=0)
    t.fit(awp, datamodule=TinyData())
    assert t.global_step == 4 and awp.awp.gamma == 0.01  # SGD: one step per batch
    model = EntropySGDAT(net=bn_net(), eps=0.1, optimizer=ensgd(), warmup_epochs=1, ensgd_epochs=1)
    phases = []

    class Spy(EpsWarmup):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
            phases.append((pl_module.current_epoch, trainer.global_step, pl_module._phase()))

    t = trainer(max_epochs=3, limit_val_batches=0, callbacks=[Spy(warmup_steps=100)])
    t.fit(model, datamodule=TinyData())
    assert t.global_step == 4 + 2 + 4  # plain warm-up epoch, one EnSGD epoch, plain again ("tuned")
    assert [p for _, _, p in phases] == [(False, False)] * 4 + [(True, True)] * 2 + [(False, True)] * 4
    assert [s for _, s, _ in phases] == list(range(10))  # EpsWarmup counts optimiser steps


def test_awp_warmup_keeps_awp_off_while_the_chain_already_runs():
    """awp_warmup_epochs=1 after warmup_epochs=1: plain, then EnSGD without AWP, then EnSGD with AWP; the
    first AWP epoch is the first whose steps move theta through a perturbed gradient."""
    model = EntropySGDAT(
        net=bn_net(), eps=0.1, awp_gamma=0.01, optimizer=ensgd(), warmup_epochs=1, awp_warmup_epochs=1
    )
    phases, perturbed = [], []
    real = model.awp.perturbation

    def spy(net, loss):
        perturbed.append(model.current_epoch)
        return real(net, loss)

    model.awp.perturbation = spy

    class Spy(EpsWarmup):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
            phases.append(pl_module._phase())

    t = trainer(max_epochs=3, limit_val_batches=0, callbacks=[Spy(warmup_steps=100)])
    t.fit(model, datamodule=TinyData())
    assert phases == [(False, False)] * 4 + [(True, False)] * 2 + [(True, True)] * 2
    assert t.global_step == 4 + 2 + 2
    assert set(perturbed) == {2} and len(perturbed) == 4  # one perturbation per mini-batch of epoch 2


def test_max_steps_and_schedulers_count_outer_steps():
    model = EntropySGDAT(
        net=bn_net(),
        eps=0.1,
        optimizer=ensgd(L=2),
        lr_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5),
        scheduler_interval="step",
    )
    data = CountingData()
    t = trainer(max_epochs=10, max_steps=3, limit_val_batches=0)
    t.fit(model, datamodule=data)
    assert t.global_step == 3 and data.served == 6
    assert model.optimizers().optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)
    model = EntropySGDAT(
        net=bn_net(),
        eps=0.1,
        optimizer=ensgd(L=2),
        lr_scheduler=lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[1], gamma=0.1),
    )
    t = trainer(max_epochs=2, limit_val_batches=0)
    t.fit(model, datamodule=TinyData())
    assert t.global_step == 4
    assert model.optimizers().optimizer.param_groups[0]["lr"] == pytest.approx(0.01)  # epochs of data


def test_awp_gradient_is_taken_at_the_perturbed_weights_and_removed_after_the_step():
    """With plain SGD (lr 0.1) one AWPAT step gives theta - lr grad L(theta + v) exactly."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    attack = PGD(0.1, steps=2, seed=3, keep_best=False)
    model = AWPAT(net=net, eps=0.1, train_attack=attack, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    ref = copy.deepcopy(net)
    data = TinyData()
    x, y = data.x[:16], data.y[:16]
    x_adv = attack(ref, x, y)
    v = AWP(0.01).perturbation(ref, lambda: F.cross_entropy(ref(x_adv), y))
    with AWP.perturbed(v):
        F.cross_entropy(ref(x_adv), y).backward()
    expected = [torch.add(p.detach(), p.grad, alpha=-0.1) for p in ref.parameters()]  # SGD's own kernel
    trainer(max_steps=1, limit_val_batches=0).fit(model, datamodule=data)
    for p, e in zip(model.net.parameters(), expected, strict=True):
        assert torch.equal(p.detach(), e)


def _resumable(tmp_path, epochs: int, seed: int, ckpt: str | None = None) -> EntropySGDAT:
    model = EntropySGDAT(
        net=bn_net(),
        eps=0.1,
        awp_gamma=0.01,
        train_attack=PGD(steps=2, seed=7, keep_best=False),
        optimizer=lambda p: EntropySGD(p, L=2, order=2, thermal_noise=1e-2, scoping=1e-3),
        lr_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5),
    )
    torch.manual_seed(seed)  # EntropySGD(seed=None) draws its noise seed from the global RNG
    t = trainer(max_epochs=epochs, limit_val_batches=0, default_root_dir=tmp_path)
    t.fit(model, datamodule=TinyData(), ckpt_path=ckpt, weights_only=False)  # hparams hold a PGD object
    if ckpt is None and epochs == 1:
        t.save_checkpoint(tmp_path / "one.ckpt")
    return model


def test_checkpoint_resume_equals_an_uninterrupted_run_bit_for_bit(tmp_path):
    """Spec T9: 2 outer steps, save, resume for 2 more: the same weights, BatchNorm statistics, momentum
    buffers and noise as 4 steps in one go (the noise generator is restored, not re-seeded)."""
    straight = _resumable(tmp_path, epochs=2, seed=1)
    _resumable(tmp_path, epochs=1, seed=1)
    resumed = _resumable(tmp_path, epochs=2, seed=3, ckpt=str(tmp_path / "one.ckpt"))  # seed 3: unused
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    a, b = straight.optimizers().optimizer, resumed.optimizers().optimizer
    assert a.param_groups[0]["outer_steps"] == b.param_groups[0]["outer_steps"] == 4
    for p, q in zip(straight.net.parameters(), resumed.net.parameters(), strict=True):
        assert torch.equal(a.state[p]["momentum_buffer"], b.state[q]["momentum_buffer"])
    assert torch.equal(a.state_dict()["entropy_sgd"]["rng_state"], b.state_dict()["entropy_sgd"]["rng_state"])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"inner_loss": "mart"}, "model.inner_loss"),
        ({"awp_gamma": -0.01}, "model.awp_gamma"),
        ({"warmup_epochs": -1}, "model.warmup_epochs"),
        ({"awp_warmup_epochs": True}, "model.awp_warmup_epochs"),
        ({"ensgd_epochs": 1.5}, "model.ensgd_epochs"),
        ({"beta": float("nan")}, "model.beta"),
        ({"nonfinite": "skip"}, "model.nonfinite=skip is not available for EntropySGDAT"),
    ],
)
def test_bad_config_values_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        EntropySGDAT(net=bn_net(), **kwargs)


def test_half_precision_with_a_grad_scaler_is_refused():
    model = EntropySGDAT(net=bn_net(), eps=0.1, optimizer=ensgd())
    t = trainer(max_epochs=1, limit_val_batches=0)
    t.strategy.precision_plugin.scaler = object()  # what 16-mixed installs (no CUDA needed for the check)
    with pytest.raises(ConfigError, match="16-mixed"):
        t.fit(model, datamodule=TinyData())
