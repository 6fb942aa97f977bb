"""Invariants every attack must keep, on random nets, inputs, radii and both norms (hypothesis):
||x_adv - x|| <= eps + 1e-6, x_adv in [0, 1], and the model's mode, parameters, buffers and .grad are
exactly as before."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lit_robust.attacks import APGD, BETA, FGSM, PGD, TRADESKL, Attack, CarliniWagnerL2
from lit_robust.errors import ConfigError


def make_net(kind: str, channels: int, classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(channels * 8 * 8, 32), nn.ReLU(), nn.Linear(32, classes))
    if kind == "bn_dropout":
        return nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Flatten(),
            nn.Linear(8 * 8 * 8, classes),
        )
    return nn.Sequential(nn.Conv2d(channels, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, classes))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


ATTACKS = st.sampled_from(
    [
        "pgd",
        "pgd_restarts",
        "pgd_targeted",
        "pgd_margin",
        "fgsm",
        "fgsm_rs",
        "pgd_train_bn",
        "beta",
        "beta_adam_chunk",
        "beta_sign",
        "beta_train_bn",
        "trades_kl",
        "trades_kl_train_bn",
        "apgd_ce",
        "apgd_dlr",
        "apgd_t",
        "apgd_train_bn",
        "cw",
    ]
)


def build(name: str, eps: float, norm: str, seed: int | None) -> Attack:
    if name == "pgd":
        return PGD(eps, norm, steps=3, seed=seed)
    if name == "pgd_restarts":
        return PGD(eps, norm, steps=2, restarts=2, seed=seed)
    if name == "pgd_targeted":
        return PGD(eps, norm, steps=3, targeted=True, seed=seed)
    if name == "pgd_margin":
        return PGD(eps, norm, steps=3, loss="margin", random_start=False, seed=seed)
    if name == "fgsm":
        return FGSM(eps, norm)
    if name == "fgsm_rs":
        return FGSM(eps, norm, random_start=True, seed=seed)
    if name == "apgd_ce":
        return APGD(eps, norm, steps=3, seed=seed)
    if name == "apgd_dlr":
        return APGD(eps, norm, steps=3, loss="dlr", restarts=2, seed=seed)
    if name == "apgd_t":
        return APGD(eps, norm, steps=3, loss="dlr", targeted=True, n_target_classes=2, seed=seed)
    if name == "apgd_train_bn":
        return APGD(eps, norm, steps=2, eval_mode=False, seed=seed)
    if name == "cw":  # L2 only: its L2 ball of radius eps lies inside the L_inf ball of radius eps
        return CarliniWagnerL2(eps, "2", steps=3, binary_search_steps=2, seed=seed)
    if name == "beta":
        return BETA(eps, norm, steps=3, seed=seed)
    if name == "beta_adam_chunk":
        return BETA(eps, norm, steps=3, optimizer="adam", target_chunk=2, seed=seed)
    if name == "beta_sign":
        return BETA(eps, norm, steps=3, optimizer="sign", random_start=False, seed=seed)
    if name == "beta_train_bn":
        return BETA(eps, norm, steps=2, eval_mode=False, seed=seed)
    if name == "trades_kl":
        return TRADESKL(eps, norm, steps=3, seed=seed)
    if name == "trades_kl_train_bn":
        return TRADESKL(eps, norm, steps=2, eval_mode=False, seed=seed)
    return PGD(eps, norm, steps=2, eval_mode=False, seed=seed)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["mlp", "bn_dropout", "tanh_cnn"]),
    attack=ATTACKS,
    norm=st.sampled_from(["inf", "2"]),
    eps_frac=st.floats(0.0, 1.0),
    batch=st.integers(1, 6),
    channels=st.sampled_from([1, 3]),
    train_mode=st.booleans(),
    inference=st.booleans(),
    seed=st.integers(0, 2**16),
    input_kind=st.sampled_from(["uniform", "binary", "constant"]),
)
def test_attack_invariants(
    kind, attack, norm, eps_frac, batch, channels, train_mode, inference, seed, input_kind
):
    g = torch.Generator().manual_seed(seed)
    eps = eps_frac * (0.5 if norm == "inf" else 4.0)
    model = make_net(kind, channels, 5, seed)
    model.train(train_mode)
    if input_kind == "uniform":
        x = torch.rand(batch, channels, 8, 8, generator=g)
    elif input_kind == "binary":  # pixels on the box boundary
        x = (torch.rand(batch, channels, 8, 8, generator=g) > 0.5).float()
    else:
        x = torch.full((batch, channels, 8, 8), 0.5)
    y = torch.randint(0, 5, (batch,), generator=g)
    before = snapshot(model)
    atk = build(attack, eps, norm, seed)
    if inference:  # what Lightning's default validation loop does
        with torch.inference_mode():
            x_adv = atk(model, x, y)
    else:
        x_adv = atk(model, x, y)

    delta = (x_adv - x).flatten(1)
    p = math.inf if norm == "inf" else 2.0
    assert delta.norm(p=p, dim=1).max().item() <= eps + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert model.training == train_mode
    after = snapshot(model)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), f"attack changed {k}"
    assert all(prm.grad is None for prm in model.parameters())


def test_zero_eps_returns_input():
    model = make_net("mlp", 1, 5, 0)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(PGD(0.0, "inf")(model, x, torch.zeros(4, dtype=torch.long)), x)


def test_linf_attack_uses_whole_budget_on_interior_points():
    """Sign steps with enough steps saturate the L_inf ball where the box allows it."""
    model = make_net("mlp", 1, 5, 0)
    x = torch.full((3, 1, 8, 8), 0.5)
    x_adv = PGD(0.1, "inf", steps=5, alpha=0.05, random_start=False)(
        model, x, torch.zeros(3, dtype=torch.long)
    )
    assert torch.allclose((x_adv - x).abs().amax(dim=(1, 2, 3)), torch.full((3,), 0.1), atol=1e-6)


def test_targeted_attack_reaches_given_target_on_linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(8, 1, 4, 4) * 0.2 + 0.4
    target = torch.full((8,), 2)
    x_adv = PGD(1.0, "inf", steps=20, targeted=True)(
        model, x, torch.zeros(8, dtype=torch.long), target=target
    )
    assert (model(x_adv).argmax(1) == 2).all()


def test_attack_follows_model_dtype_and_returns_input_dtype():
    model = make_net("mlp", 1, 5, 0).double()
    x = torch.rand(2, 1, 8, 8)
    x_adv = PGD(0.1, "inf", steps=2)(model, x, torch.zeros(2, dtype=torch.long))
    assert x_adv.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"eps": -0.1}, "eps must be a finite number >= 0, got -0.1"),
        ({"eps": float("nan")}, "eps must be a finite number >= 0"),
        ({"eps": 0.3, "steps": 0}, "steps must be an integer >= 1, got 0"),
        ({"eps": 0.3, "restarts": 0}, "restarts must be an integer >= 1, got 0"),
        ({"eps": 0.3, "norm": "l1"}, "norm must be one of 'inf' (L_inf) or '2' (L_2), got 'l1'"),
        ({"eps": 0.3, "loss": "hinge"}, "loss must be one of ['ce', 'margin'], got 'hinge'"),
        ({"eps": 0.3, "alpha": -1.0}, "alpha must be a finite number >= 0 or null, got -1.0"),
    ],
)
def test_bad_arguments_raise_one_readable_error(kwargs, message):
    with pytest.raises(ConfigError) as info:
        PGD(**kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize("norm", ["inf", "Linf", float("inf"), 2, "2", "L2"])
def test_norm_spellings(norm):
    assert PGD(0.1, norm).norm in ("inf", "2")


def test_inputs_outside_unit_box_are_rejected():
    model = make_net("mlp", 1, 5, 0)
    x = torch.rand(2, 1, 8, 8) * 2 - 1  # looks like normalised data
    with pytest.raises(ConfigError, match=r"must lie in \[0, 1\].*normalisation belongs inside the model"):
        PGD(0.1)(model, x, torch.zeros(2, dtype=torch.long))


def test_label_shape_mismatch_is_rejected():
    model = make_net("mlp", 1, 5, 0)
    with pytest.raises(ConfigError, match="labels of shape"):
        PGD(0.1)(model, torch.rand(3, 1, 8, 8), torch.zeros(2, dtype=torch.long))


def test_seeded_attack_is_repeatable():
    model = make_net("mlp", 1, 5, 0)
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    atk = PGD(0.2, "2", steps=2, seed=123)
    assert torch.equal(atk(model, x, y), atk(model, x, y))


def test_attack_without_eps_needs_binding():
    model = make_net("mlp", 1, 5, 0)
    x, y = torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    attack = PGD(steps=2)
    with pytest.raises(ConfigError, match="PGD has no eps"):
        attack(model, x, y)
    attack.bind(0.25, "2")
    assert (attack.eps, attack.norm, attack.step_size) == (0.25, "2", 2.5 * 0.25 / 2)
    assert (attack(model, x, y) - x).flatten(1).norm(dim=1).max() <= 0.25 + 1e-6


def test_bind_keeps_explicit_threat_model():
    attack = PGD(0.1, "inf").bind(0.3, "2")
    assert (attack.eps, attack.norm) == (0.1, "inf")
    assert FGSM(random_start=True).bind(0.2, "inf").step_size == pytest.approx(0.25)
