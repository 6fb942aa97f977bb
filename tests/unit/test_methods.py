"""The base module and the methods: losses, gradients, metrics, checkpoint monitor, early shape checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_robust.attacks import PGD
from lit_robust.callbacks import EpsWarmup
from lit_robust.errors import ConfigError
from lit_robust.methods import ERM, PGDAT, RobustClassifier
from lit_robust.nets import MLP


class TinyData(LightningDataModule):
    """Random 1x4x4 images (mechanics only: nothing here judges learning)."""

    input_shape, num_classes = (1, 4, 4), 3

    def __init__(self, n: int = 64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=16)

    val_dataloader = test_dataloader = train_dataloader


def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def trainer(**kw) -> Trainer:
    defaults = dict(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        enable_checkpointing=False,
    )
    return Trainer(**{**defaults, **kw})


def test_pgd_at_loss_and_gradient_are_ce_at_the_attack_output():
    """Danskin: the parameter gradient is that of CE at x_adv; the attack adds nothing to .grad."""
    torch.manual_seed(0)  # no BatchNorm here: a train-mode forward would change the attacked (eval) model
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Dropout(0.0), nn.ReLU(), nn.Linear(8, 3))
    model = PGDAT(net=net, eps=0.2, train_attack=PGD(0.2, steps=3, seed=7, keep_best=False))
    model.train()
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    x_adv = model.train_attack(model.net, x, y)
    model.net.zero_grad()
    F.cross_entropy(model.net(x_adv), y).backward()
    expected = [p.grad.clone() for p in model.net.parameters()]
    model.net.zero_grad()
    model.log = lambda *a, **k: None  # no trainer attached
    loss = model.training_loss((x, y))
    loss.backward()
    for p, g in zip(model.net.parameters(), expected, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-6)
    assert model.net.training  # the attack restored train mode


def test_erm_loss_is_clean_cross_entropy():
    model = ERM(net=bn_net())
    model.log = lambda *a, **k: None
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    model.eval()
    assert torch.allclose(model.training_loss((x, y)), F.cross_entropy(model.net(x), y))


def test_default_attacks_follow_module_eps_and_norm():
    model = PGDAT(net=bn_net(), eps=0.5, norm="2")
    assert (model.eval_attack.eps, model.eval_attack.norm, model.eval_attack.steps) == (0.5, "2", 20)
    assert (model.train_attack.eps, model.train_attack.steps, model.train_attack.alpha) == (0.5, 10, 0.125)
    assert ERM.monitor == "val/clean_acc" and PGDAT.monitor == "val/robust_acc"


def test_validation_leaves_batchnorm_statistics_alone_and_logs_metrics():
    model = PGDAT(net=bn_net(), eps=0.3)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    metrics = trainer().validate(model, datamodule=TinyData(), verbose=False)[0]
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert {"val/clean_acc", "val/robust_acc", "val/loss", "val/robust_loss"} <= metrics.keys()
    assert metrics["val/robust_acc"] <= metrics["val/clean_acc"]


def test_fit_tracks_best_robust_accuracy_and_checkpoints_on_validation(tmp_path):
    model = PGDAT(
        net=MLP(in_features=16, hidden=[16], num_classes=3),
        eps=0.1,
        train_attack=PGD(0.1, steps=2, keep_best=False),
    )
    t = trainer(max_epochs=3, enable_checkpointing=True, default_root_dir=tmp_path, logger=True)
    t.fit(model, datamodule=TinyData())
    assert t.checkpoint_callback.monitor == "val/robust_acc"
    assert t.checkpoint_callback.best_model_path.endswith(".ckpt")
    assert "val/robust_acc_best" in t.callback_metrics
    assert t.callback_metrics["val/robust_acc_best"] >= t.callback_metrics["val/robust_acc"]
    # last.ckpt is the final epoch, whichever epoch was best
    last = torch.load(Path(t.checkpoint_callback.best_model_path).with_name("last.ckpt"), weights_only=False)
    assert last["epoch"] == 2 and last["global_step"] == t.global_step


def test_one_checkpoint_callback_with_save_last_is_not_enough(tmp_path):
    """Issue 13 Part 2.8: why configure_callbacks keeps a second ModelCheckpoint. In Lightning 2.6 a single
    ``ModelCheckpoint(monitor=..., save_last=True)`` writes last.ckpt only when it saves a new best, so
    when the best epoch is not the final one last.ckpt holds the best epoch (a resume would redo work)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    class Worse(PGDAT):
        monitor = "val/worse"

        def on_validation_epoch_end(self) -> None:  # a monitored value that only gets worse: best = epoch 0
            self.log("val/worse", -float(self.current_epoch))

    def fit(callbacks) -> tuple[Path, Trainer]:
        model = Worse(
            net=MLP(in_features=16, hidden=[8], num_classes=3), eps=0.1, train_attack=PGD(0.1, steps=1)
        )
        t = trainer(
            max_epochs=3,
            enable_checkpointing=True,
            default_root_dir=tmp_path,
            logger=False,
            callbacks=callbacks,
        )
        t.fit(model, datamodule=TinyData())
        return Path(t.checkpoint_callback.best_model_path).with_name("last.ckpt"), t

    single = ModelCheckpoint(dirpath=tmp_path / "single", monitor="val/worse", mode="max", save_last=True)
    last, _ = fit([single])
    assert torch.load(last, weights_only=False)["epoch"] == 0  # a copy of the best, not the last epoch
    last, t = fit([ModelCheckpoint(dirpath=tmp_path / "ours")])  # our configure_callbacks takes over
    assert (
        torch.load(last, weights_only=False)["epoch"] == 2
        and Path(t.checkpoint_callback.best_model_path).name == "best-epoch000.ckpt"
    )


def test_fresh_and_loaded_modules_have_the_same_structure(tmp_path):
    """Issue 13 Part 2.3: metrics are made in __init__ (not on first use), so a fresh module, one after fit
    and one loaded by the one loader (lit_robust.checkpoint.load_module, strict) have the same modules and
    state_dict keys."""
    from lit_robust.checkpoint import load_module

    def make() -> PGDAT:
        torch.manual_seed(0)
        return PGDAT(
            net=MLP(in_features=16, hidden=[8], num_classes=3), eps=0.1, train_attack=PGD(0.1, steps=1)
        )

    fresh, fitted = make(), make()
    t = trainer(max_epochs=1, enable_checkpointing=True, default_root_dir=tmp_path, logger=False)
    t.fit(fitted, datamodule=TinyData())
    assert [n for n, _ in fresh.named_modules()] == [n for n, _ in fitted.named_modules()]
    assert {f"metrics.{s}_{k}" for s in ("train", "val", "test") for k in ("clean", "robust")} <= {
        n for n, _ in fresh.named_modules()
    }
    ckpt = torch.load(t.checkpoint_callback.best_model_path, weights_only=False)
    assert set(ckpt["state_dict"]) == set(fresh.state_dict())
    loaded = make()
    assert load_module(loaded, t.checkpoint_callback.best_model_path)["epoch"] == 0
    for key, value in fitted.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_scheduler_from_factory():
    model = PGDAT(
        net=bn_net(),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        lr_scheduler=lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[1], gamma=0.1),
    )
    config = model.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.SGD)
    assert config["lr_scheduler"]["interval"] == "epoch"


def test_net_that_does_not_fit_the_data_fails_in_setup():
    model = ERM(net=MLP(in_features=784))
    with pytest.raises(ConfigError, match=r"model.net \(MLP\).*\(1, 4, 4\).*784"):
        trainer().fit(model, datamodule=TinyData())


def test_wrong_number_of_classes_fails_in_setup():
    model = ERM(net=MLP(in_features=16, num_classes=10))
    with pytest.raises(ConfigError, match="has 3 classes"):
        trainer().fit(model, datamodule=TinyData())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eps": -1.0}, "model.eps must be a finite number >= 0"),
        ({"norm": "l7"}, "norm must be one of"),
        ({"scheduler_interval": "week"}, "model.scheduler_interval"),
    ],
)
def test_bad_module_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PGDAT(net=bn_net(), **kwargs)


def test_base_module_requires_a_training_loss():
    with pytest.raises(NotImplementedError, match="training_loss"):
        RobustClassifier(net=bn_net()).training_loss(
            (torch.rand(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))
        )


def test_eps_warmup_ramps_training_radius_only():
    model = PGDAT(net=MLP(in_features=16, hidden=[8], num_classes=3), eps=0.4)
    seen = []

    class Spy(EpsWarmup):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
            seen.append((pl_module.train_attack.eps, pl_module.eval_attack.eps))

    trainer(max_epochs=2, callbacks=[Spy(warmup_steps=4)], limit_val_batches=0).fit(
        model, datamodule=TinyData()
    )
    assert [round(e, 6) for e, _ in seen] == [0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4, 0.4]
    assert all(ev == 0.4 for _, ev in seen)
    assert model.train_attack.eps == 0.4


def test_eps_warmup_validates_its_argument_and_needs_a_train_attack():
    with pytest.raises(ConfigError, match="warmup_steps"):
        EpsWarmup(0)
    with pytest.raises(ConfigError, match="needs a method with a train_attack"):
        trainer(callbacks=[EpsWarmup(2)]).fit(
            ERM(net=MLP(in_features=16, num_classes=3)), datamodule=TinyData()
        )
