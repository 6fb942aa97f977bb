"""APGD (Croce & Hein, 2020): strength on a PGD-trained MNIST MLP, the step-size schedule, the DLR loss, and
the invariants of the Attack base (ball, box, model state)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lit_robust.attacks.apgd import APGD, apgd_checkpoints, dlr_loss, targeted_dlr_loss
from lit_robust.attacks.pgd import PGD
from lit_robust.errors import ConfigError


def accuracy(net, x, y) -> float:
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


# ---------------------------------------------------------------------- strength (real MNIST)
def test_apgd_ce_is_not_weaker_than_pgd_with_the_same_budget(mnist_mlp_at):
    """Same 20 gradient steps. The tolerance of 0.5 point (2 of 500 images) absorbs the random starts,
    which decide a few images near the boundary; measured: APGD 38.4-38.8% vs PGD 39.0-39.8% (4 seeds)."""
    net, x, y = mnist_mlp_at
    pgd = accuracy(net, PGD(0.15, "inf", steps=20, seed=0)(net, x, y), y)
    apgd = accuracy(net, APGD(0.15, "inf", steps=20, seed=0)(net, x, y), y)
    assert apgd <= pgd + 0.005
    assert apgd < accuracy(net, x, y) - 0.3


@pytest.mark.parametrize("targeted", [False, True], ids=["apgd_dlr", "apgd_t"])
def test_apgd_dlr_and_targeted_dlr_lower_accuracy(mnist_mlp_at, targeted):
    """Measured at eps 0.15: clean 85.4%, APGD-DLR 37-38%, APGD-T (9 targets) 33.8%."""
    net, x, y = mnist_mlp_at
    x_adv = APGD(0.15, "inf", steps=20, loss="dlr", targeted=targeted, seed=0)(net, x, y)
    assert (x_adv - x).abs().max() <= 0.15 + 1e-6
    assert accuracy(net, x_adv, y) < accuracy(net, x, y) - 0.35


def test_apgd_l2_lowers_accuracy(mnist_mlp_at):
    """Measured at L2 eps 1.5: clean 85.4%, PGD-20 46.4-46.6%, APGD-20 44.6-45.0%."""
    net, x, y = mnist_mlp_at
    x_adv = APGD(1.5, "2", steps=20, seed=0)(net, x, y)
    assert (x_adv - x).flatten(1).norm(dim=1).max() <= 1.5 + 1e-5
    apgd = accuracy(net, x_adv, y)
    assert apgd < accuracy(net, x, y) - 0.3
    assert apgd <= accuracy(net, PGD(1.5, "2", steps=20, seed=0)(net, x, y), y) + 0.005


def test_restarts_are_never_weaker(mnist_mlp_at):
    """Same seed: the first restart is the single run, and the per-sample worst case is kept."""
    net, x, y = mnist_mlp_at
    x, y = x[:200], y[:200]
    with torch.no_grad():
        single = net(APGD(0.1, "inf", steps=5, seed=0)(net, x, y)).argmax(1) == y
        multi = net(APGD(0.1, "inf", steps=5, restarts=3, seed=0)(net, x, y)).argmax(1) == y
    assert not (multi & ~single).any()


# ---------------------------------------------------------------------- schedule and loss
def test_checkpoints_follow_the_paper():
    # p_j: 0, .22, .41 (+.19), .57 (+.16), .70 (+.13), .80 (+.10), .87 (+.07), .93 (+.06), .99, 1.05
    assert apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    # ceil(p_j * 20): 4.4 -> 5, 8.2 -> 9, 11.4 -> 12, 14, 16, 17.4 -> 18, 18.6 -> 19, 19.8 -> 20
    assert apgd_checkpoints(20) == [0, 5, 9, 12, 14, 16, 18, 19, 20]
    # ceil(p_j * 3): .66 -> 1, 1.23 -> 2, 1.71 -> 2, 2.1 -> 3, ...: coinciding checkpoints merged
    assert apgd_checkpoints(3) == [0, 1, 2, 3]
    assert APGD(0.1, steps=100).checkpoints == apgd_checkpoints(100)


def test_dlr_hand_computed_values():
    z = torch.tensor([[1.0, 4.0, 2.0, 3.0], [1.0, 4.0, 2.0, 3.0]])
    # y = 1 (correct): -(4 - 3) / (4 - 2) = -0.5;  y = 0 (wrong): -(1 - 4) / (4 - 2) = 1.5
    assert torch.allclose(dlr_loss(z, torch.tensor([1, 0])), torch.tensor([-0.5, 1.5]))
    # targeted, y = 1, t = 0: -(4 - 1) / (4 - (2 + 1) / 2) = -1.2;  y = 3, t = 1: -(3 - 4) / 2.5 = 0.4
    got = targeted_dlr_loss(z, torch.tensor([1, 3]), torch.tensor([0, 1]))
    assert torch.allclose(got, torch.tensor([-1.2, 0.4]))


def test_dlr_is_scale_and_shift_invariant():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 10, generator=g)
    y, t = torch.randint(0, 10, (16,), generator=g), torch.randint(0, 10, (16,), generator=g)
    for a, b in [(3.0, 0.0), (0.25, 0.0), (1.0, 7.0), (5.0, -2.0)]:
        assert torch.allclose(dlr_loss(a * z + b, y), dlr_loss(z, y), atol=1e-5)
        assert torch.allclose(targeted_dlr_loss(a * z + b, y, t), targeted_dlr_loss(z, y, t), atol=1e-5)


def test_dlr_needs_enough_classes():
    with pytest.raises(ConfigError, match="at least 3 classes"):
        dlr_loss(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(2, 1, 4, 4), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ConfigError, match="targeted=True needs a model with at least 4 classes, got 3"):
        APGD(0.1, loss="dlr", targeted=True, steps=2)(model, x, y)


def test_explicit_target_is_reached_on_linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    x = torch.rand(8, 1, 4, 4) * 0.2 + 0.4
    target = torch.full((8,), 3)
    for loss in ("ce", "dlr"):
        x_adv = APGD(1.0, "inf", steps=20, loss=loss, targeted=True, seed=0)(
            model, x, torch.zeros(8, dtype=torch.long), target=target
        )
        with torch.no_grad():
            assert (model(x_adv).argmax(1) == 3).all()


# ---------------------------------------------------------------------- Attack invariants
def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    )


@pytest.mark.parametrize("norm, eps", [("inf", 0.2), ("2", 1.5)])
@pytest.mark.parametrize("eval_mode", [True, False])
@pytest.mark.parametrize("kwargs", [{}, {"loss": "dlr", "targeted": True, "n_target_classes": 3}])
def test_ball_box_and_model_state(norm, eps, eval_mode, kwargs):
    model = bn_net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = (torch.rand(6, 1, 8, 8) > 0.5).float()  # pixels on the box boundary
    x[:3] = torch.rand(3, 1, 8, 8)
    y = torch.arange(6)
    with torch.inference_mode():
        x_adv = APGD(eps, norm, steps=6, restarts=2, eval_mode=eval_mode, seed=1, **kwargs)(model, x, y)
    p = math.inf if norm == "inf" else 2.0
    assert (x_adv - x).flatten(1).norm(p=p, dim=1).max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(prm.grad is None for prm in model.parameters())


def test_seeded_and_bound_later():
    model = bn_net().eval()
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    attack = APGD(steps=3, seed=5)
    with pytest.raises(ConfigError, match="APGD has no eps"):
        attack(model, x, y)
    attack.bind(0.5, "2")
    first = attack(model, x, y)
    assert torch.equal(first, attack(model, x, y))
    assert (first - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-6
    assert torch.equal(APGD(0.0, "inf", steps=2)(model, x, y), x)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "steps must be an integer >= 1, got 0"),
        ({"restarts": 0}, "restarts must be an integer >= 1, got 0"),
        ({"rho": 1.0}, "APGD.rho must be a finite number in (0, 1), got 1.0"),
        ({"rho": 0}, "APGD.rho must be a finite number in (0, 1), got 0"),
        ({"rho": float("nan")}, "APGD.rho must be a finite number in (0, 1)"),
        ({"loss": "margin"}, "loss must be one of ['ce', 'dlr'], got 'margin'"),
        ({"n_target_classes": 0}, "n_target_classes must be an integer >= 1, got 0"),
        ({"eps": -1.0}, "eps must be a finite number >= 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError) as info:
        APGD(**{"eps": 0.1, **kwargs})
    assert message in str(info.value)
