"""Attack strength on a small net trained on real MNIST inside the test (a few seconds on 2 cores)."""

from __future__ import annotations

import pytest
import torch

from lit_robust.attacks import FGSM, PGD


@pytest.fixture(scope="module")
def trained(mnist_mlp):
    return mnist_mlp


def correct(net, x, y) -> torch.Tensor:
    with torch.no_grad():
        return net(x).argmax(1) == y


def test_model_is_accurate(trained):
    net, x, y = trained
    assert correct(net, x, y).float().mean() > 0.9


def test_pgd_linf_eps_03_breaks_erm_model(trained):
    net, x, y = trained
    x_adv = PGD(0.3, "inf", steps=20)(net, x, y)
    assert correct(net, x_adv, y).float().mean() < 0.05
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6


def test_pgd_l2_lowers_accuracy(trained):
    net, x, y = trained
    clean = correct(net, x, y).float().mean()
    robust = correct(net, PGD(2.0, "2", steps=20)(net, x, y), y).float().mean()
    assert robust < 0.2 < clean


def test_fgsm_lowers_accuracy_but_pgd_is_stronger(trained):
    net, x, y = trained
    fgsm = correct(net, FGSM(0.1)(net, x, y), y).float().mean()
    pgd = correct(net, PGD(0.1, steps=20)(net, x, y), y).float().mean()
    assert fgsm < correct(net, x, y).float().mean() - 0.1
    assert pgd <= fgsm


@pytest.mark.parametrize("norm, eps", [("inf", 0.06), ("2", 0.8)])
def test_restarts_are_never_weaker(trained, norm, eps):
    """Same seed: the first restart is the single run, and the worst case per sample is kept."""
    net, x, y = trained
    single = correct(net, PGD(eps, norm, steps=5, seed=0)(net, x, y), y)
    multi = correct(net, PGD(eps, norm, steps=5, restarts=4, seed=0)(net, x, y), y)
    assert not (multi & ~single).any(), "a sample fooled without restarts survived with restarts"
    assert multi.sum() <= single.sum()


@pytest.mark.parametrize("norm, eps", [("inf", 0.06), ("2", 0.8)])
def test_more_steps_are_never_weaker(trained, norm, eps):
    """Same seed and step size: a longer run contains the shorter one, and the best iterate is kept."""
    net, x, y = trained
    alpha = eps / 8
    survivors = [
        correct(net, PGD(eps, norm, steps=k, alpha=alpha, seed=0)(net, x, y), y) for k in (1, 3, 10, 30)
    ]
    for fewer, more in zip(survivors, survivors[1:], strict=False):
        assert not (more & ~fewer).any()
    assert survivors[-1].sum() < survivors[0].sum()


def test_targeted_attack_hits_its_targets(trained):
    net, x, y = trained
    target = (y + 1) % 10
    x_adv = PGD(0.3, "inf", steps=40, targeted=True)(net, x, y, target=target)
    with torch.no_grad():
        hit = (net(x_adv).argmax(1) == target).float().mean()
    assert hit > 0.9
