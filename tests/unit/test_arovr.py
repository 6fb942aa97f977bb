"""The AROVR LightningModule: config checks, the loss it returns, BP pretraining, fits through Lightning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from test_methods import TinyData, trainer

from lit_robust.cli import main
from lit_robust.errors import ConfigError
from lit_robust.lifted_objectives import (
    contrastive_potentials,
    contrastive_states,
    contrastive_surrogate,
    objective_value,
    random_wrong_labels,
)
from lit_robust.methods import ERM
from lit_robust.methods.arovr import AROVR
from lit_robust.nets import MLP
from lit_robust.nets.lifted import LiftedMLP

REPO = Path(__file__).resolve().parents[2]


def tiny_net(seed: int = 0) -> LiftedMLP:
    torch.manual_seed(seed)
    return LiftedMLP(in_features=16, hidden=[8, 8], num_classes=3)


def quiet(model: AROVR) -> AROVR:
    model.log = model.log_dict = model.log_accuracy = lambda *a, **k: None  # no trainer attached
    return model


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variant": "dropout"}, "model.variant must be one of"),
        ({"alpha": 0.0}, r"model.alpha must be a finite number in \(0, 1\]"),
        ({"alpha": 1.5}, r"model.alpha must be a finite number in \(0, 1\]"),
        ({"beta": 0.0}, r"model.beta must be a finite number > 0"),
        ({"variant": "arovr", "beta": 1.0}, "need beta < 1"),
        ({"variant": "arovr_ab", "alpha": 0.9, "beta": 2.0}, r"need 1 \+ beta \(1 - 2 alpha\) > 0"),
        ({"g_std": -0.1}, "model.g_std"),
        ({"n_sweeps": 0}, "model.n_sweeps must be an integer >= 1"),
        ({"damping": -1.0}, "model.damping must be 'safe', 'auto', 'none' or a number >= 0"),
        ({"damping": "strong"}, "model.damping"),
        (
            {"init_from": "/nonexistent/bp.ckpt"},
            "model.init_from '/nonexistent/bp.ckpt' is not a file",
        ),
    ],
)
def test_bad_config_values_name_the_field(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AROVR(net=tiny_net(), **kwargs)


def test_net_must_be_lifted_and_alpha_above_half_warns():
    with pytest.raises(ConfigError, match="model.net must be a lit_robust.nets.lifted.LiftedMLP"):
        AROVR(net=MLP(in_features=16, hidden=[8], num_classes=3))
    with pytest.warns(UserWarning, match="alpha=0.7 >= 1/2"):
        AROVR(net=tiny_net(), variant="arovr_ab", alpha=0.7)
    assert AROVR.monitor == "val/clean_acc"


def test_random_wrong_labels_are_uniform_over_the_other_classes():
    y = torch.arange(10).repeat(2000)
    wrong = random_wrong_labels(y, 10, torch.Generator().manual_seed(0))
    assert (wrong != y).all()
    counts = torch.bincount(wrong[y == 3], minlength=10)
    assert (
        counts[3] == 0 and counts.min() == 0 and (counts[counts > 0] > 160).all() and (counts > 0).sum() == 9
    )


@pytest.mark.parametrize("variant", ["rovr", "arovr", "rovr_ab", "arovr_ab", "arovr_g"])
def test_training_loss_has_the_objective_value_and_the_surrogate_gradient(variant):
    """The returned loss = the true (1/alpha-scaled) objective; its gradient = that of the contrastive
    surrogate, recomputed here from the pure functions with the same labels and g."""
    model = quiet(AROVR(net=tiny_net(), variant=variant, alpha=0.4, beta=0.5, noise_seed=3))
    x, y = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    loss = model.training_loss((x, y))
    grads = torch.autograd.grad(loss, list(model.parameters()))
    gen = model._generator(x.device)  # the same draws as inside training_loss
    target = F.one_hot(y, 3).float()
    wrong = F.one_hot(random_wrong_labels(y, 3, gen), 3).float()
    net = model.net
    g = None
    if variant == "arovr_g":
        g = [torch.randn(z.shape, generator=gen) * 0.25 for z in net.forward_states(x)[1:]]
    states = contrastive_states(net, x, target, wrong, model.plus, model.minus, 0.5, g=g, power_iters=1)
    u_plus, u_minus = contrastive_potentials(net, states)
    surrogate = contrastive_surrogate(u_plus, u_minus, 1 / (model.alpha_eff * 0.5), x)
    value = objective_value(
        states, u_plus, u_minus, target, wrong, model.plus, model.minus, model.alpha_eff, 0.5, g
    )
    assert loss.item() == pytest.approx(value.mean().item(), rel=1e-5)
    expected = torch.autograd.grad(surrogate, list(model.parameters()))
    for a, b in zip(grads, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert max(gr.abs().max().item() for gr in grads) > 1e-4


def test_noise_depends_on_seed_and_step_only():
    model = quiet(AROVR(net=tiny_net(), noise_seed=1))
    a = torch.randn(5, generator=model._generator(torch.device("cpu")))
    b = torch.randn(5, generator=model._generator(torch.device("cpu")))
    assert torch.equal(a, b)
    other = quiet(AROVR(net=tiny_net(), noise_seed=2))
    assert not torch.equal(a, torch.randn(5, generator=other._generator(torch.device("cpu"))))


def test_bp_variant_is_backprop_of_the_euclidean_loss():
    model = quiet(AROVR(net=tiny_net(), variant="bp"))
    x, y = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    expected = 0.5 * (model.net(x) - F.one_hot(y, 3).float()).square().sum(1).mean()
    assert torch.allclose(model.training_loss((x, y)), expected)


def test_init_from_an_erm_checkpoint_of_the_same_mlp(tmp_path):
    torch.manual_seed(0)
    erm = ERM(net=MLP(in_features=16, hidden=[8, 8], num_classes=3))
    t = trainer(max_epochs=1, enable_checkpointing=True, default_root_dir=tmp_path, limit_val_batches=1)
    t.fit(erm, datamodule=TinyData())
    ckpt = t.checkpoint_callback.best_model_path
    model = AROVR(net=tiny_net(seed=5), init_from=ckpt)
    for key, value in erm.net.state_dict().items():
        assert torch.equal(model.net.state_dict()[key], value), key
    with pytest.raises(
        ConfigError,
        match=r"model.init_from: the checkpoint does not fit model.net \(LiftedMLP\): .*"
        r"net.layers.0.weight: \(8, 16\) vs \(9, 16\)",
    ):
        AROVR(net=LiftedMLP(in_features=16, hidden=[9, 8], num_classes=3), init_from=ckpt)
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="model.init_from: cannot read"):
        AROVR(net=tiny_net(), init_from=str(junk))


@pytest.mark.parametrize("variant", ["arovr_g", "arovr", "rovr_ab"])
def test_fit_through_lightning_checkpoints_on_validation_accuracy(tmp_path, variant):
    model = AROVR(net=tiny_net(), variant=variant, optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    before = [p.detach().clone() for p in model.parameters()]
    t = trainer(
        max_epochs=2,
        enable_checkpointing=True,
        default_root_dir=tmp_path,
        logger=CSVLogger(tmp_path),
        log_every_n_steps=1,
    )
    t.fit(model, datamodule=TinyData())
    assert t.checkpoint_callback.monitor == "val/clean_acc"
    assert Path(t.checkpoint_callback.best_model_path).is_file()
    metrics = t.callback_metrics
    assert {
        "train/loss_epoch",
        "train/inference_residual",
        "train/perturbation",
        "val/clean_acc",
    } <= metrics.keys()
    assert torch.isfinite(metrics["train/loss_epoch"]) and metrics["train/perturbation"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("variant, minimum", [("arovr_ab", 0.8), ("arovr_g", 0.3)])
def test_arovr_learns_real_mnist(mnist_root, variant, minimum):
    """A sign or scale error in the surrogate would stop learning: 4 epochs on 1000 real images (chance
    is 0.1; AROVR^g starts slowly: g ~ N(0, 1/16) is as large as the early pre-activations)."""
    from lit_robust.data import MNIST

    dm = MNIST(data_dir=mnist_root, batch_size=50, eval_batch_size=1000, train_subset=1000, val_size=1000)
    torch.manual_seed(0)
    model = AROVR(
        net=LiftedMLP(hidden=[64, 64]), variant=variant, optimizer=lambda p: torch.optim.Adam(p, lr=2e-3)
    )
    t = trainer(max_epochs=4, num_sanity_val_steps=0)
    t.fit(model, datamodule=dm)
    assert t.callback_metrics["val/clean_acc"] > minimum


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("name", ["arovr", "arovr_ab", "arovr_g", "bp_mlp"])
def test_configs_build_the_paper_setup(dataset, name, monkeypatch):
    monkeypatch.setattr("sys.argv", ["lit_robust"])  # no pytest arguments next to args=
    cli = main(["--config", str(REPO / "configs" / f"{dataset}_{name}.yaml")], run=False)
    model, data = cli.model, cli.datamodule
    assert isinstance(model, AROVR) and isinstance(model.net, LiftedMLP)
    assert [lin.weight.shape[0] for lin in model.net.linears] == [
        256,
        256,
        10,
    ] and model.net.in_features == 784
    assert (data.train_subset, data.val_size, data.batch_size) == (5000, 10000, 50)
    assert type(data).__name__ == ("MNIST" if dataset == "mnist" else "FashionMNIST")
    opt = model.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["lr"] == 2e-4
    expected = {"arovr": ("arovr", 0.25), "arovr_ab": ("arovr_ab", 0.25), "arovr_g": ("arovr_g", 0.25)}
    if name != "bp_mlp":
        assert (model.variant, model.beta, model.n_sweeps, model.damping) == (*expected[name], 20, "auto")
        assert name == "arovr" or model.alpha == 0.49
    else:
        assert model.variant == "bp"
