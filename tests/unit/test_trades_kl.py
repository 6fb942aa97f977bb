"""The TRADES KL attack (Zhang et al., 2019; docs/methods/beta_at.md section 4.3)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_robust.attacks.trades_kl import TRADESKL
from lit_robust.errors import ConfigError


def kl_from_clean(net, x, x_adv) -> torch.Tensor:
    """Per-sample KL(softmax(f(x)) || softmax(f(x_adv))), written independently of the attack."""
    with torch.no_grad():
        p, log_q = F.softmax(net(x), 1), F.log_softmax(net(x_adv), 1)
    return (p * (p.clamp_min(1e-30).log() - log_q)).sum(1)


def accuracy(net, x, y) -> float:
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("norm, eps", [("inf", 0.3), ("inf", 0.1), ("2", 2.0)])
def test_kl_grows_beyond_start_and_random_points(mnist_mlp, norm, eps):
    net, x, y = mnist_mlp
    x, y = x[:200], y[:200]
    attack = TRADESKL(eps, norm, steps=10, seed=0)
    x_adv = attack(net, x, y)
    p = math.inf if norm == "inf" else 2.0
    assert (x_adv - x).flatten(1).norm(p=p, dim=1).max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    g = torch.Generator().manual_seed(1)
    start = attack.clip(x, x + 0.001 * torch.randn(x.shape, generator=g))
    rand = attack.clip(x, x + attack.ball.random_init(x, g))
    kl_adv, kl_start, kl_rand = (kl_from_clean(net, x, z) for z in (x_adv, start, rand))
    assert (kl_adv > kl_start).float().mean() >= 0.98
    assert (kl_adv > kl_rand).float().mean() >= 0.95
    assert kl_adv.mean() > 10 * kl_rand.mean()


def test_labels_are_unused(mnist_mlp):
    net, x, y = mnist_mlp
    x, y = x[:64], y[:64]
    attack = TRADESKL(0.2, "inf", steps=3, seed=7)
    other = torch.randint(0, 10, y.shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(attack(net, x, y), attack(net, x, other))
    assert torch.equal(attack(net, x, y), attack(net, x, torch.zeros_like(y)))


def test_lowers_accuracy_of_erm_mnist_model_at_eps_03(mnist_mlp):
    net, x, y = mnist_mlp
    clean = accuracy(net, x, y)
    robust = accuracy(net, TRADESKL(0.3, "inf", steps=10, seed=0)(net, x, y), y)
    assert clean > 0.85 and robust < 0.5 and robust < clean - 0.3


def test_matches_the_official_loop(mnist_mlp):
    """Reference: TRADES's ``trades.py`` inner loop (summed KLDivLoss, sign step, min/max projection, clamp)
    from the same Gaussian start (same seed, so the same noise)."""
    net, x, y = mnist_mlp
    x, y, eps, alpha, steps = x[:32], y[:32], 0.1, 0.02, 5
    x_att = TRADESKL(eps, "inf", steps=steps, alpha=alpha, seed=11)(net, x, y)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(11))
    x_adv = x + 0.001 * noise
    x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    with torch.no_grad():
        p_nat = F.softmax(net(x), dim=1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = nn.KLDivLoss(reduction="sum")(F.log_softmax(net(x_adv), dim=1), p_nat)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    assert torch.allclose(x_att, x_adv, atol=1e-6)


@pytest.mark.parametrize("norm, eps", [("inf", 0.1), ("2", 1.0)])
def test_model_mode_and_grads_untouched_inside_inference_mode(mnist_mlp, norm, eps):
    net, x, y = mnist_mlp
    net, x, y = copy.deepcopy(net), x[:8], y[:8]
    for prm in net.parameters():
        prm.grad = None
    state = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    with torch.inference_mode():
        x_adv = TRADESKL(eps, norm, steps=2, seed=0)(net, x, y)
    assert net.training and not x_adv.requires_grad
    assert all(prm.grad is None for prm in net.parameters())
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_lazy_step_size_and_bad_arguments():
    attack = TRADESKL(steps=2)
    attack.bind(8 / 255, "inf")
    assert attack.step_size == pytest.approx(2 / 255)
    assert TRADESKL(0.3, alpha=0.01).step_size == 0.01
    for kwargs, message in [
        ({"steps": 0}, "steps must be an integer >= 1, got 0"),
        ({"alpha": -0.1}, "TRADESKL.alpha must be a finite number >= 0 or null, got -0.1"),
        ({"init_std": float("inf")}, "init_std must be a finite number >= 0"),
    ]:
        with pytest.raises(ConfigError) as info:
            TRADESKL(0.1, **kwargs)
        assert message in str(info.value)
