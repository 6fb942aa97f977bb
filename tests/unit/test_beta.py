"""BETA (Robey et al., ICLR 2024, Algorithm 1): the tests T1, T3-T7 and T10 of docs/methods/beta_at.md.

Classes are 0-indexed here (the paper's are 1-indexed)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from lit_robust.attacks import PGD
from lit_robust.attacks.beta import BETA, BETAResult, _target_margins, _wrong_classes
from lit_robust.errors import ConfigError

OPTIMIZERS = ["rmsprop", "adam", "sign"]


def linear(weight, bias) -> nn.Linear:
    weight = torch.as_tensor(weight, dtype=torch.float32)
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return layer.requires_grad_(False)


def accuracy(net, x, y) -> float:
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


@pytest.fixture(scope="module")
def at_run(mnist_mlp_at):
    """BETA-10 (RMSprop, the paper's attack) on the PGD-trained MNIST MLP at L_inf eps 0.15."""
    net, x, y = mnist_mlp_at
    return net, x, y, BETA(0.15, "inf", steps=10, seed=0).run(net, x, y)


# ---------------------------------------------------------------------------------------------- T1
def test_t1_misclassified_iff_positive_margin_on_random_logits():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(2000, 7, generator=g), torch.randint(0, 7, (2000,), generator=g)
    targets = _wrong_classes(y, 7)
    assert not (targets == y[:, None]).any()
    margins = torch.stack([_target_margins(logits, y, t) for t in targets.T], dim=1)
    assert torch.equal(margins, logits.gather(1, targets) - logits.gather(1, y[:, None]))
    assert torch.equal(logits.argmax(1) != y, margins.amax(1) > 0)


def test_t1_ties_follow_torch_argmax_first_index():
    """At an exact tie z_j = z_y the margin is 0 (Proposition 1's boundary): misclassification is defined
    by torch.argmax, whose first index wins, so the equivalence only holds away from ties."""
    logits = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    y = torch.tensor([0, 1])
    margins = logits.gather(1, _wrong_classes(y, 3)) - logits.gather(1, y[:, None])
    assert margins.amax(1).tolist() == [0.0, 0.0]
    assert (logits.argmax(1) != y).tolist() == [False, True]


def test_t1_positive_margin_iff_attack_succeeds_on_mnist(at_run):
    net, x, y, res = at_run
    with torch.no_grad():
        fooled = net(res.x_adv).argmax(1) != y
    assert torch.equal(fooled, res.margins.amax(1) > 0)
    assert fooled.any() and not fooled.all()


# ---------------------------------------------------------------------------------------------- T3
def appendix_d_toy(scale: float = 2.0) -> tuple[nn.Linear, torch.Tensor, torch.Tensor, float]:
    """Appendix D: f(p) = W p, W = [[0,-1],[-1,0],[1,0]], p0 = (0,-1), y = 0, L_2 eps 0.8, no box.

    lit_robust always clips to [0, 1], so the problem is moved into the box by an isotropic affine map
    inside the model: the input u lives around (0.5, 0.5) and the net computes f(p0 + scale (u - 0.5)).
    An L_2 ball of radius 0.8/scale in u is the paper's ball of radius 0.8 in p, the whole ball lies in
    [0.1, 0.9]^2 (the box is never active), and logits, margins and CE are the paper's at the mapped point.
    """
    w = torch.tensor([[0.0, -1.0], [-1.0, 0.0], [1.0, 0.0]])
    p0 = torch.tensor([0.0, -1.0])
    net = linear(scale * w, w @ (p0 - 0.5 * scale))
    return net, torch.full((1, 2), 0.5), torch.zeros(1, dtype=torch.long), 0.8 / scale


def test_t3_appendix_d_ce_maximiser_is_not_adversarial_but_beta_is():
    net, u, y, eps = appendix_d_toy()
    assert torch.allclose(net(u), torch.tensor([[1.0, 0.0, 0.0]]))
    # the CE maximiser over the ball (CE is convex here, so it is on the sphere): a dense angle grid
    theta = torch.linspace(-math.pi, math.pi, 20001)
    sphere = u + eps * torch.stack([theta.cos(), theta.sin()], dim=1)
    with torch.no_grad():
        z = net(sphere)
        ce = nn.functional.cross_entropy(z, y.expand(len(z)), reduction="none")
    best = ce.argmax()
    assert ce[best].item() == pytest.approx(0.969817, abs=1e-4)
    assert z[best].argmax().item() == 0  # the surrogate's optimum is correctly classified
    # L_2 PGD on CE from x (deterministic: the ascent stays on the symmetry axis) ends at p0 + (0, 0.8)
    x_pgd = PGD(eps, "2", steps=100, alpha=eps / 20, random_start=False)(net, u, y)
    assert torch.allclose((x_pgd - u) * 2.0, torch.tensor([[0.0, 0.8]]), atol=1e-4)
    assert accuracy(net, x_pgd, y) == 1.0
    # BETA: both targets reach the margin 0.8 sqrt(2) - 1 > 0 at p0 + (-+0.8, 0.8)/sqrt(2)
    # the paper's optimiser (RMSprop) on its Appendix D toy; the L_2 default is normalised steps
    res = BETA(eps, "2", steps=20, optimizer="rmsprop", seed=0).run(net, u, y)
    assert torch.equal(res.targets, torch.tensor([[1, 2]]))
    assert torch.allclose(res.margins, torch.full((1, 2), 0.8 * math.sqrt(2) - 1), atol=1e-3)
    assert res.j_star.item() in (1, 2)
    corners = torch.tensor([[-0.8, 0.8], [0.8, 0.8]]) / math.sqrt(2)
    assert torch.allclose((res.per_target_x[0] - u) * 2.0, corners, atol=2e-3)
    assert accuracy(net, res.x_adv, y) == 0.0
    assert ((res.x_adv - u).norm() <= eps + 1e-6).all()


# ---------------------------------------------------------------------------------------------- T4
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_t4_linf_analogue(optimizer):
    """W = [[1,0],[-2,-2],[2,-2]], b = [0,1,0], x = (0.5,0.5), y = 0, L_inf eps 0.25 (box inactive)."""
    net = linear([[1.0, 0.0], [-2.0, -2.0], [2.0, -2.0]], [0.0, 1.0, 0.0])
    x, y, eps = torch.full((1, 2), 0.5), torch.zeros(1, dtype=torch.long), 0.25
    # CE is convex for a linear model: its max over the box is at a vertex, and that vertex is class 0
    vertices = torch.tensor([[0.25, 0.25], [0.25, 0.75], [0.75, 0.25], [0.75, 0.75]])
    with torch.no_grad():
        z = net(vertices)
    ce = nn.functional.cross_entropy(z, torch.zeros(4, dtype=torch.long), reduction="none")
    assert ce.argmax().item() == 0 and z[0].argmax().item() == 0
    assert z.argmax(1).tolist() == [0, 0, 2, 0]  # the only adversarial vertex is (0.75, 0.25)
    x_pgd = PGD(eps, "inf", steps=10, alpha=0.1, random_start=False)(net, x, y)
    assert torch.allclose(x_pgd, vertices[:1]) and accuracy(net, x_pgd, y) == 1.0
    res = BETA(eps, "inf", steps=10, lr=0.1, optimizer=optimizer, seed=0).run(net, x, y)
    assert torch.allclose(res.per_target_x[0], vertices[[0, 2]], atol=1e-6)
    assert torch.allclose(res.margins, torch.tensor([[-0.25, 0.25]]), atol=1e-6)
    assert res.j_star.item() == 2 and accuracy(net, res.x_adv, y) == 0.0


# ---------------------------------------------------------------------------------------------- T5
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_t5_exact_on_random_linear_models_linf(optimizer):
    """A targeted margin of a linear model is linear, so its max over the box [x-eps, x+eps] cap [0,1]^d is
    the corner picked by the sign of w_j - w_y. With lr = eps/4 the first RMSprop step (10 lr) and 10 sign
    or Adam steps (about lr each) cover 2 eps, so BETA must land on that corner exactly."""
    g = torch.Generator().manual_seed(1)
    k, d, n, eps = 10, 50, 64, 0.03
    net = linear(torch.randn(k, d, generator=g), torch.randn(k, generator=g))
    x = torch.rand(n, d, generator=g)
    y = net(x).argmax(1)  # clean accuracy 1: the exact robust accuracy is about 0.4
    res = BETA(eps, "inf", steps=10, optimizer=optimizer, seed=0).run(net, x, y)
    w_diff = net.weight[res.targets] - net.weight[y][:, None]  # (n, K-1, d)
    corner = torch.where(w_diff > 0, (x + eps).clamp_max(1)[:, None], (x - eps).clamp_min(0)[:, None])
    exact = (w_diff * corner).sum(-1) + net.bias[res.targets] - net.bias[y][:, None]
    assert torch.allclose(res.per_target_x, corner, atol=1e-6)
    assert torch.allclose(res.margins, exact, atol=1e-4)
    assert torch.equal(res.j_star, res.targets.gather(1, exact.argmax(1, keepdim=True)).squeeze(1))
    exact_robust = (exact.amax(1) <= 0).float().mean().item()
    assert accuracy(net, res.x_adv, y) == exact_robust
    assert accuracy(net, PGD(eps, "inf", steps=10, seed=0)(net, x, y), y) >= exact_robust
    assert 0 < exact_robust < 1


def test_t5_exact_on_random_linear_models_l2_sign():
    """L_2 with the ball inside the box: the max of a targeted margin is m(x) + eps ||w_j - w_y||_2,
    which normalised-gradient steps approach geometrically."""
    g = torch.Generator().manual_seed(2)
    k, d, n, eps = 10, 50, 32, 0.2
    net = linear(torch.randn(k, d, generator=g), torch.randn(k, generator=g))
    x, y = 0.3 + 0.4 * torch.rand(n, d, generator=g), torch.randint(0, k, (n,), generator=g)
    res = BETA(eps, "2", steps=60, lr=eps / 2, optimizer="sign", seed=0).run(net, x, y)
    w_diff = net.weight[res.targets] - net.weight[y][:, None]
    with torch.no_grad():
        z = net(x)
    exact = z.gather(1, res.targets) - z.gather(1, y[:, None]) + eps * w_diff.norm(dim=-1)
    assert torch.allclose(res.margins, exact, atol=1e-3)
    assert accuracy(net, res.x_adv, y) == (exact.amax(1) <= 0).float().mean().item()


# ---------------------------------------------------------------------------------------------- T6
@pytest.mark.parametrize("norm, eps", [("inf", 0.15), ("2", 1.5)])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_t6_feasible_points_and_untouched_model(mnist_mlp, norm, eps, optimizer):
    net, x, y = mnist_mlp
    net, x, y = copy.deepcopy(net), x[:20], y[:20]
    for prm in net.parameters():
        prm.grad = None  # the fixture's training leaves gradients behind
    params = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    try:
        with torch.inference_mode():  # Lightning's validation loop
            res = BETA(eps, norm, steps=3, optimizer=optimizer, seed=0).run(net, x, y)
        assert net.training
    finally:
        net.eval()
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, params[k]) for k, v in net.state_dict().items())
    assert isinstance(res, BETAResult)
    b, p = x.shape[0], math.inf if norm == "inf" else 2.0
    assert res.per_target_x.shape == (b, 9, *x.shape[1:]) and res.x_adv.shape == x.shape
    assert res.targets.shape == res.margins.shape == (b, 9) and res.j_star.shape == (b,)
    assert res.targets.dtype == res.j_star.dtype == torch.long
    assert not (res.targets == y[:, None]).any() and (res.targets.diff(dim=1) > 0).all()
    delta = (res.per_target_x - x[:, None]).flatten(2).norm(p=p, dim=2)
    assert delta.max() <= eps + 1e-6
    assert res.per_target_x.min() >= 0 and res.per_target_x.max() <= 1
    for r in (res.x_adv, res.per_target_x, res.margins):
        assert not r.requires_grad and not r.is_inference()


def test_t6_random_start_is_uniform_in_the_feasible_box():
    """With lr = 0 the iterates stay at their starts: check bounds and uniformity of x'_j."""
    g = torch.Generator().manual_seed(0)
    n, eps = 400, 0.2
    x = torch.rand(n, 1, 4, 4, generator=g)
    x[:, :, 0] = 0.0  # pixels on the box boundary and near it
    x[:, :, 1] = 1.0
    x[:, :, 2, :2] = 0.05
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    res = BETA(eps, "inf", steps=1, lr=0.0, seed=0).run(net, x, torch.zeros(n, dtype=torch.long))
    lo, hi = (x - eps).clamp_min(0)[:, None], (x + eps).clamp_max(1)[:, None]
    start = res.per_target_x
    assert (start >= lo).all() and (start <= hi).all()
    u = (start - lo) / (hi - lo)
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005
    assert abs((u < 0.1).float().mean().item() - 0.1) < 0.01
    assert not torch.equal(start[:, 0], start[:, 1])  # every target has its own start
    y = torch.zeros(n, dtype=torch.long)
    fixed = BETA(eps, "inf", steps=1, lr=0.0, random_start=False).run(net, x, y)
    assert torch.equal(fixed.per_target_x, x[:, None].expand_as(fixed.per_target_x))


@pytest.mark.parametrize("chunk", [None, 2])
def test_t7_forward_calls(chunk):
    """One clean pass on B rows (to learn K), then T + 1 passes on the B (K-1) rows (chunked if asked)."""
    sizes = []
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    net.register_forward_hook(lambda mod, inp, out: sizes.append(inp[0].shape[0]))
    x, y = torch.rand(3, 1, 4, 4), torch.tensor([0, 2, 4])
    BETA(0.1, "inf", steps=4, target_chunk=chunk)(net, x, y)
    rows = [12] * 5 if chunk is None else [6] * 5 * 2
    assert sizes == [3, *rows]


# ---------------------------------------------------------------------------------------------- T7
def test_t7_selection_is_argmax_of_final_margins(at_run):
    net, x, y, res = at_run
    idx = res.margins.argmax(1)
    assert torch.equal(res.j_star, res.targets.gather(1, idx[:, None]).squeeze(1))
    assert torch.equal(res.x_adv, res.per_target_x[torch.arange(len(x)), idx])
    # margins recomputed one target at a time at each target's own final iterate
    with torch.no_grad():
        for i in range(res.targets.shape[1]):
            z = net(res.per_target_x[:, i])
            m = z.gather(1, res.targets[:, i : i + 1]) - z.gather(1, y[:, None])
            assert torch.allclose(m.squeeze(1), res.margins[:, i], atol=1e-5)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_t7_matches_a_per_target_loop_with_torch_optimizers(mnist_mlp_at, optimizer):
    """Reference: for each class j separately, torch.optim.RMSprop / Adam (grad = -g, i.e. ascent) or
    sign steps on x', then the exact L_inf projection min(max(x', x - eps), x + eps) clipped to [0, 1]."""
    net, x, y = mnist_mlp_at
    x, y, eps, steps = x[:24], y[:24], 0.15, 5
    attack = BETA(eps, "inf", steps=steps, optimizer=optimizer, random_start=False)
    res = attack.run(net, x, y)
    ref_x, ref_m = torch.empty(24, 10, *x.shape[1:]), torch.empty(24, 10)
    for j in range(10):
        xp = x.clone().requires_grad_(True)
        if optimizer == "rmsprop":
            opt = torch.optim.RMSprop([xp], lr=attack.step_size, alpha=0.99)
        elif optimizer == "adam":
            opt = torch.optim.Adam([xp], lr=attack.step_size)
        else:
            opt = torch.optim.SGD([xp], lr=attack.step_size)
        for _ in range(steps):
            z = net(xp)
            (grad,) = torch.autograd.grad((z[:, j] - z.gather(1, y[:, None])[:, 0]).sum(), xp)
            xp.grad = -grad.sign() if optimizer == "sign" else -grad
            opt.step()
            with torch.no_grad():
                xp.copy_(torch.min(torch.max(xp, x - eps), x + eps).clamp(0, 1))
        with torch.no_grad():
            z = net(xp)
            ref_m[:, j] = z[:, j] - z.gather(1, y[:, None])[:, 0]
        ref_x[:, j] = xp.detach()
    rows = torch.arange(24)[:, None]
    assert torch.allclose(res.per_target_x, ref_x[rows, res.targets], atol=1e-5)
    assert torch.allclose(res.margins, ref_m.gather(1, res.targets), atol=1e-4)
    masked = ref_m.scatter(1, y[:, None], float("-inf"))
    assert torch.equal(res.j_star, masked.argmax(1))


def test_target_chunks_give_identical_results(mnist_mlp_at):
    net, x, y = mnist_mlp_at
    x, y = x[:40], y[:40]
    full = BETA(0.15, "inf", steps=4, seed=3).run(net, x, y)
    for chunk in (1, 4, 9, 50):
        part = BETA(0.15, "inf", steps=4, seed=3, target_chunk=chunk).run(net, x, y)
        assert torch.equal(part.per_target_x, full.per_target_x)
        assert torch.allclose(part.margins, full.margins, atol=1e-6)
        assert torch.equal(part.j_star, full.j_star) and torch.equal(part.x_adv, full.x_adv)


def test_default_chunks_keep_cpu_passes_small_and_change_nothing(mnist_mlp_at):
    """target_chunk=None: on a CPU passes of at most CPU_ROWS rows (all targets on a GPU), with the result
    of one pass over every target."""
    from lit_robust.attacks.beta import CPU_ROWS

    assert BETA.auto_chunk(128, 9, torch.device("cpu")) == CPU_ROWS // 128 == 2
    assert BETA.auto_chunk(512, 9, torch.device("cpu")) == 1
    assert BETA.auto_chunk(128, 9, torch.device("cuda")) == 9
    net, x, y = mnist_mlp_at
    x, y = x[:128], y[:128]
    auto = BETA(0.15, "inf", steps=2, seed=3).run(net, x, y)
    whole = BETA(0.15, "inf", steps=2, seed=3, target_chunk=9).run(net, x, y)
    assert torch.equal(auto.per_target_x, whole.per_target_x) and torch.equal(auto.x_adv, whole.x_adv)


def test_call_equals_run_and_seed_repeats(mnist_mlp_at):
    net, x, y = mnist_mlp_at
    x, y = x[:16], y[:16]
    attack = BETA(0.3, "2", steps=3, seed=5)
    res = attack.run(net, x, y)
    assert torch.allclose(attack(net, x, y), res.x_adv, atol=1e-6)
    assert torch.equal(attack.run(net, x, y).per_target_x, res.per_target_x)


# --------------------------------------------------------------------------------------------- T10
def test_t10_beta_at_least_as_strong_as_pgd_on_trained_mnist(at_run):
    """Same budget (10 steps, eps 0.15) on the PGD-trained MLP: BETA <= PGD-CE + 1 point."""
    net, x, y, res = at_run
    acc_pgd = accuracy(net, PGD(0.15, "inf", steps=10, seed=0)(net, x, y), y)
    acc_beta = accuracy(net, res.x_adv, y)
    assert acc_beta <= acc_pgd + 0.01
    assert acc_beta < accuracy(net, x, y) - 0.2


# --------------------------------------------------------------------------------------- config/API
def test_lazy_defaults_follow_eps():
    attack = BETA(steps=2)
    with pytest.raises(ConfigError, match="BETA has no eps"):
        attack.run(nn.Linear(4, 3), torch.rand(2, 4), torch.zeros(2, dtype=torch.long))
    attack.bind(8 / 255, "inf")
    assert attack.step_size == pytest.approx(2 / 255)
    attack.eps = 0.4
    assert attack.step_size == pytest.approx(0.1)
    assert BETA(0.4, lr=0.05).step_size == 0.05


def test_zero_eps_returns_input():
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    x = torch.rand(3, 1, 4, 4)
    res = BETA(0.0, "inf", steps=2).run(net, x, torch.zeros(3, dtype=torch.long))
    assert torch.equal(res.x_adv, x)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "steps must be an integer >= 1, got 0"),
        ({"lr": -1.0}, "BETA.lr must be a finite number >= 0 or null, got -1.0"),
        ({"optimizer": "sgd"}, "optimizer must be one of ['rmsprop', 'adam', 'sign'], got 'sgd'"),
        ({"rms_alpha": 1.0}, "BETA.rms_alpha must be a finite number in [0, 1), got 1.0"),
        ({"target_chunk": 0}, "BETA.target_chunk must be an integer >= 1 or null, got 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError) as info:
        BETA(0.1, **kwargs)
    assert message in str(info.value)


def test_targets_and_one_class_models_are_rejected():
    x, y = torch.rand(2, 4), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ConfigError, match="takes no target"):
        BETA(0.1)(nn.Linear(4, 3), x, y, target=y)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        BETA(0.1)(nn.Linear(4, 1), x, y)
