"""Each number means what its name says (issue: robust accuracy, BETA under L2, EpsWarmup, MART's start).
Every test here fails on the code before the fix."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_robust.attacks import APGD, BETA, PGD, Attack
from lit_robust.callbacks import EpsWarmup
from lit_robust.methods import ERM, MART, PGDAT
from lit_robust.methods.base import robust_predictions


class FirstPixel(nn.Module):
    """Two classes: class 1 iff the first pixel is above 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.w * (x.flatten(1)[:, :1] - 0.5)
        return torch.cat([-s, s], dim=1)


class FixLabels(Attack):
    """An 'attack' that moves every input to the correct side: it fixes wrong clean predictions."""

    def perturb(self, model, x, y, generator=None, target=None):
        x = x.clone()
        x.flatten(1)[:, 0] = 0.5 + (y.float() - 0.5) * 0.2  # within eps 0.3 of any pixel in [0.3, 0.7]
        return x


def test_robust_accuracy_counts_only_clean_and_adversarially_correct():
    # 8 samples, first pixel 0.4 or 0.6; labels make 5 clean-correct, 3 clean-wrong
    pixel = torch.tensor([0.6, 0.6, 0.6, 0.4, 0.4, 0.6, 0.4, 0.4])
    y = torch.tensor([1, 1, 1, 0, 0, 0, 1, 1])  # clean-correct: samples 0-4
    x = torch.full((8, 1, 2, 2), 0.5)
    x[:, 0, 0, 0] = pixel
    fixed = FixLabels(0.3).perturb(None, x, y)
    assert robust_predictions(FirstPixel()(x), FirstPixel()(fixed), y).eq(y).sum() == 5
    model = ERM(net=FirstPixel(), eps=0.3, eval_attack=FixLabels())
    trainer = Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, inference_mode=False
    )
    (res,) = trainer.validate(model, DataLoader(TensorDataset(x, y), batch_size=4), verbose=False)
    assert res["val/clean_acc"] == pytest.approx(5 / 8)
    assert res["val/robust_acc"] == pytest.approx(5 / 8)  # the attack fixed 3 wrong points: not counted
    assert res["val/robust_acc"] <= res["val/clean_acc"]


def _trained_linear(seed: int = 0):
    """A softmax-linear model trained on 10 Gaussian classes in [0, 1]^50 (the BETA-L2 measurement)."""
    g = torch.Generator().manual_seed(seed)
    centres = 0.5 + 0.12 * torch.randn(10, 50, generator=g)
    y = torch.arange(10).repeat(60)
    x = (centres[y] + 0.08 * torch.randn(600, 50, generator=g)).clamp(0, 1)
    net = nn.Linear(50, 10)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    return net, x[:300], y[:300]


def _acc(net, x, y) -> float:
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def test_beta_l2_is_as_strong_as_pgd_l2_and_apgd_l2():
    net, x, y = _trained_linear()
    eps = 0.5  # measured: BETA-L2 sign 28.7%, RMSprop 69.7%, PGD-L2 46.3%, APGD-L2 31.3% (clean 100%)
    clean = _acc(net, x, y)
    beta_adv = BETA(eps, "2", steps=20, seed=0)(net, x, y)
    assert (beta_adv - x).flatten(1).norm(dim=1).max() <= eps + 1e-5
    assert 0 <= beta_adv.min() and beta_adv.max() <= 1
    beta = _acc(net, beta_adv, y)
    pgd = _acc(net, PGD(eps, "2", steps=20, seed=0)(net, x, y), y)
    apgd = _acc(net, APGD(eps, "2", steps=20, loss="ce", seed=0)(net, x, y), y)
    assert beta < clean - 0.1  # the attack does something
    assert beta <= min(pgd, apgd) + 0.01
    assert BETA(eps, "2").step_rule == "sign" and BETA(eps, "inf").step_rule == "rmsprop"


@pytest.mark.parametrize("attack", [PGD(steps=10, alpha=0.1), BETA(steps=3, lr=0.1), PGD(steps=10)])
def test_eps_warmup_scales_the_step_with_eps(attack):
    model = PGDAT(net=nn.Linear(4, 2), eps=0.3, train_attack=attack)
    ratio = attack.step_size / attack.eps
    cb = EpsWarmup(warmup_steps=100)
    cb.setup(None, model, "fit")
    for step in (0, 9, 50, 99, 200):
        cb._set(attack, cb.factor_at(step))
        assert attack.eps == pytest.approx(0.3 * min(1, (step + 1) / 100))
        assert attack.step_size / attack.eps == pytest.approx(ratio)
        assert attack.step_size <= attack.eps
    cb.teardown(None, model, "fit")
    assert attack.eps == pytest.approx(0.3) and attack.step_size == pytest.approx(ratio * 0.3)


def test_mart_starts_from_the_reference_small_gaussian():
    model = MART(net=nn.Linear(4, 2), eps=0.3)
    assert model.train_attack.init_std == 0.001
    x = torch.full((256, 4), 0.5)
    y = torch.zeros(256, dtype=torch.long)
    start = PGD(0.3, "inf", steps=1, alpha=0.0, init_std=0.001, keep_best=False, seed=0)(
        nn.Linear(4, 2), x, y
    )
    delta = start - x
    assert 0 < delta.abs().max() <= 0.005  # a small Gaussian, not a uniform point of the 0.3-ball
    assert delta.std().item() == pytest.approx(0.001, rel=0.2)
