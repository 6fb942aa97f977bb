"""EntropySGD (lit_robust.optim.entropy_sgd) and AWP (lit_robust.optim.awp): closed forms and invariants."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_robust.errors import ConfigError
from lit_robust.optim import AWP, EntropySGD
from lit_robust.optim.entropy_sgd import chain_variance, outer_direction


def plain(**kw) -> dict:
    """Hyperparameters that switch every extra of the reference code off (momentum, wd, noise)."""
    return {"momentum": 0.0, "weight_decay": 0.0, "sgld_momentum": 0.0, "thermal_noise": 0.0, **kw}


# ---------------------------------------------------------------------------------------------- SGLD
@pytest.mark.parametrize("convention, factor", [("paper", 1.0), ("code", 2.0)])
def test_sgld_chain_matches_the_closed_form_on_a_quadratic(convention, factor):
    """Spec T6: for L(theta') = a/2 ||theta'||^2 the chain is AR(1) with mean gamma theta / (a + gamma) and
    stationary variance s^2 / (eta'(a + gamma)(2 - eta'(a + gamma))), s = the noise std per step; theta_bar
    converges to the mean (with lr 1 and no momentum the outer step lands exactly on theta_bar)."""
    a, gamma, lr_s, eps_e, d, steps, burn_in = 1.0, 0.03, 0.01, 1e-2, 2000, 6000, 1000
    theta0 = 2.0
    p = nn.Parameter(torch.full((d,), theta0))
    opt = EntropySGD(
        [p],
        **plain(lr=1.0, gamma=gamma, L=steps, sgld_lr=lr_s, alpha=0.01, thermal_noise=eps_e),
        noise_convention=convention,
        seed=3,
    )
    samples = []

    def closure():
        samples.append(p.detach().clone())
        opt.zero_grad()
        loss = 0.5 * a * p.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    chain = torch.stack(samples[burn_in:]).double()
    k = a + gamma
    mean = gamma * theta0 / k
    var = factor * lr_s * eps_e**2 / (lr_s * k * (2 - lr_s * k))  # = factor eps_E^2 / (k (2 - eta' k))
    assert len(samples) == steps
    assert chain.mean().item() == pytest.approx(mean, rel=0.01)
    assert chain.var(dim=0).mean().item() == pytest.approx(var, rel=0.05)
    assert p.detach().double().mean().item() == pytest.approx(mean, rel=0.02)  # theta_new = theta_bar


def test_chain_ends_early_when_the_closure_runs_out_of_data():
    p = nn.Parameter(torch.ones(3))
    opt = EntropySGD([p], **plain(L=5, lr=1.0, alpha=1.0, sgld_lr=0.1))
    calls = []

    def closure():
        calls.append(1)
        if len(calls) > 2:
            return None
        opt.zero_grad()
        loss = p.sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert len(calls) == 3 and opt.last_stats["steps"] == 2
    assert torch.allclose(p.detach(), torch.full((3,), 0.9 - 0.1 * (1 - 0.03 * 0.1)))  # two SGLD steps
    empty = EntropySGD([p], L=3)
    before = p.detach().clone()
    assert empty.step(lambda: None) is None
    assert torch.equal(p.detach(), before)


# ---------------------------------------------------------------------------------------------- outer step
def test_second_order_direction_reduces_to_first_order_when_the_variance_is_zero():
    """Spec T7 on the pure functions: h = 1/gamma where var = 0, larger steps by 1/(1 - gamma var) elsewhere,
    and the clamp fires exactly where var > kappa / gamma."""
    g = torch.Generator().manual_seed(0)
    theta, mean = torch.randn(50, generator=g), torch.randn(50, generator=g)
    gamma, kappa = 0.03, 0.5
    zero = torch.zeros(50)
    first = outer_direction(theta, mean, gamma, order=1, scale="one")
    assert torch.equal(outer_direction(theta, mean, gamma, order=2, var=zero), first)
    assert torch.allclose(outer_direction(theta, mean, gamma, order=1, scale="gamma"), gamma * first)
    var = torch.rand(50, generator=g) * 10
    second = outer_direction(theta, mean, gamma, order=2, var=var)
    assert torch.allclose(second, first / (1 - gamma * var))  # = gamma h (theta - theta_bar)
    h = 1 / (gamma - gamma**2 * var)
    assert torch.allclose(second, gamma * h * (theta - mean), rtol=1e-5)
    limit = kappa / gamma
    raw = torch.tensor([-1e-3, 0.0, 1.0, limit - 0.1, limit + 0.1, 100.0])
    clamped = chain_variance(torch.zeros(6), raw, gamma, kappa)  # xi_bar - theta_bar^2 = raw
    assert torch.equal(clamped == limit, raw > limit)
    assert clamped.min() == 0 and torch.equal(clamped[2:4], raw[2:4])


def linear_problem(seed: int = 0, away_from_zero: bool = False):
    torch.manual_seed(seed)
    net = nn.Linear(6, 3)
    if away_from_zero:
        with torch.no_grad():
            for q in net.parameters():
                q.uniform_(1.0, 2.0)
    x, y = torch.rand(16, 6), torch.randint(0, 3, (16,))
    return net, x, y


def closure_for(net, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        return loss

    return closure


def test_one_noiseless_langevin_step_is_a_plain_sgd_step():
    """L = 1, no noise, no momentum/wd: theta' = theta - eta' g, theta_bar = alpha theta' + (1 - alpha) theta,
    so the outer step is SGD with lr eta alpha eta'. With eta = alpha = 1 the tensors are identical (weights
    in [1, 2] and tiny steps make theta - (theta - theta') exact in floating point)."""
    for order in (1, 2):
        net, x, y = linear_problem(away_from_zero=True)
        ref = copy.deepcopy(net)
        ens = EntropySGD(net.parameters(), **plain(lr=1.0, L=1, sgld_lr=1e-3, alpha=1.0, order=order))
        sgd = torch.optim.SGD(ref.parameters(), lr=1e-3)
        ens.step(closure_for(net, ens, x, y))
        sgd.step(closure_for(ref, sgd, x, y))
        for p, q in zip(net.parameters(), ref.parameters(), strict=True):
            assert torch.equal(p, q)
    for scale, factor in (("one", 1.0), ("gamma", 0.03)):
        net, x, y = linear_problem(seed=1)
        ref = copy.deepcopy(net)
        ens = EntropySGD(
            net.parameters(), **plain(lr=0.1, L=1, sgld_lr=0.5, alpha=0.75), outer_grad_scale=scale
        )
        sgd = torch.optim.SGD(ref.parameters(), lr=0.1 * factor * 0.75 * 0.5)
        ens.step(closure_for(net, ens, x, y))
        sgd.step(closure_for(ref, sgd, x, y))
        for p, q in zip(net.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_outer_momentum_and_weight_decay_are_torch_sgds():
    """L = 1, alpha = 1, no noise: G = eta' g, so the outer SGD(momentum 0.9, Nesterov, wd) on G is torch's
    SGD with lr eta eta', the same momentum and weight decay wd / eta' on g."""
    for nesterov in (True, False):
        net, x, y = linear_problem(seed=2)
        ref = copy.deepcopy(net)
        ens = EntropySGD(
            net.parameters(),
            **plain(lr=0.1, L=1, sgld_lr=0.5, alpha=1.0, momentum=0.9, weight_decay=1e-2),
            nesterov=nesterov,
            sgld_weight_decay=0.0,
        )
        sgd = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=2e-2)
        for _ in range(4):
            ens.step(closure_for(net, ens, x, y))
            sgd.step(closure_for(ref, sgd, x, y))
        for p, q in zip(net.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_second_order_equals_first_order_when_the_chain_variance_vanishes():
    """alpha = 1 makes theta_bar = theta'_L and xi_bar = theta'_L^2, so var = 0 exactly: the two orders take
    identical steps, noise and momentum included; with alpha < 1 they differ."""
    results = {}
    for order, alpha in ((1, 1.0), (2, 1.0), (1, 0.5), (2, 0.5)):
        net, x, y = linear_problem()
        opt = EntropySGD(net.parameters(), L=4, order=order, alpha=alpha, thermal_noise=1e-2, seed=5)
        for _ in range(2):
            opt.step(closure_for(net, opt, x, y))
        results[order, alpha] = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert torch.equal(results[1, 1.0], results[2, 1.0])
    assert not torch.equal(results[1, 0.5], results[2, 0.5])


def test_plain_mode_is_heavy_ball_sgd_and_modes_reset_their_buffers():
    net, x, y = linear_problem()
    ref = copy.deepcopy(net)
    opt = EntropySGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    sgd = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    for _ in range(3):
        opt.step(closure_for(net, opt, x, y), plain=True)
        sgd.step(closure_for(ref, sgd, x, y))
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    opt.step(closure_for(net, opt, x, y))  # a chain: the plain buffer survives until plain is re-entered
    assert all("plain_momentum_buffer" in opt.state[p] for p in net.parameters())
    opt.step(closure_for(net, opt, x, y), plain=True)
    buf_after_reset = [opt.state[p]["plain_momentum_buffer"] for p in net.parameters()]
    grads = [p.grad for p in net.parameters()]
    for buf, g, p in zip(buf_after_reset, grads, net.parameters(), strict=True):
        torch.testing.assert_close(buf, g + 1e-3 * (p.detach() + 0.05 * buf))  # fresh: buf = g + wd theta


# ---------------------------------------------------------------------------------------------- state
def test_state_dict_round_trip_is_bit_exact_including_the_noise_generator():
    def run(opt_state=None, net_state=None, steps=1):
        net, x, y = linear_problem()
        if net_state is not None:
            net.load_state_dict(net_state)
        opt = EntropySGD(net.parameters(), L=3, order=2, thermal_noise=1e-2, scoping=1e-3)
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        for _ in range(steps):
            opt.step(closure_for(net, opt, x, y))
        return net, opt

    net, opt = run(steps=2)
    opt_state, net_state = copy.deepcopy(opt.state_dict()), copy.deepcopy(net.state_dict())
    assert opt_state["entropy_sgd"]["rng_state"] is not None
    assert opt_state["param_groups"][0]["outer_steps"] == 2
    opt.step(closure_for(net, opt, *linear_problem()[1:]))
    resumed, _ = run(opt_state, net_state)
    for p, q in zip(net.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    no_rng = copy.deepcopy(opt_state)
    no_rng["entropy_sgd"]["rng_state"] = None  # the generator restarts from the seed: different noise
    other, _ = run(no_rng, net_state)
    assert not all(torch.equal(p, q) for p, q in zip(net.parameters(), other.parameters(), strict=True))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"L": 0}, "EntropySGD.L"),
        ({"order": 3}, "EntropySGD.order"),
        ({"gamma": 0.0}, "EntropySGD.gamma"),
        ({"alpha": 1.5}, "EntropySGD.alpha"),
        ({"var_clamp": 1.0}, "EntropySGD.var_clamp"),
        ({"outer_grad_scale": "two"}, "EntropySGD.outer_grad_scale"),
        ({"noise_convention": "x"}, "EntropySGD.noise_convention"),
        ({"thermal_noise": -1.0}, "EntropySGD.thermal_noise"),
    ],
)
def test_bad_hyperparameters_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        EntropySGD([nn.Parameter(torch.ones(1))], **kwargs)


# ---------------------------------------------------------------------------------------------- AWP
def bn_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))


def test_awp_has_the_relative_norm_ascends_and_is_removed_exactly():
    net = bn_cnn()
    x, y = torch.rand(8, 1, 6, 6), torch.randint(0, 3, (8,))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    awp = AWP(gamma=0.01)
    v = awp.perturbation(net, lambda: F.cross_entropy(net(x), y))
    assert {id(p) for p, _ in v} == {id(net[0].weight), id(net[4].weight)}  # >= 2-D weights only
    for p, d in v:
        assert d.norm().item() == pytest.approx(0.01 * p.norm().item(), rel=1e-5)
    assert all(p.grad is None for p in net.parameters())
    for k, t in net.state_dict().items():  # BatchNorm statistics restored, weights untouched
        assert torch.equal(t, before[k]), k
    net.eval()
    clean = F.cross_entropy(net(x), y).item()
    with AWP.perturbed(v):
        for p, d in v:
            assert torch.allclose(p, before[_name(net, p)] + d)
        assert torch.equal(net[1].weight, before["1.weight"])  # 1-D parameters are not perturbed
        assert F.cross_entropy(net(x), y).item() > clean  # an ascent direction
    for k, t in net.state_dict().items():
        assert torch.equal(t, before[k]), k


def _name(net: nn.Module, p: torch.Tensor) -> str:
    return next(n for n, q in net.named_parameters() if q is p)


def test_awp_rejects_a_bad_gamma():
    with pytest.raises(ConfigError, match="AWP.gamma must be a finite number > 0"):
        AWP(gamma=-0.1)
