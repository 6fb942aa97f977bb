"""The lifted network (FY potential, batched inference) and the maths of ROVR/AROVR and their variants.

Property tests of docs/methods/arovr_lifted.md section 4 (T1-T10, T16, T17) on a small float64 net
(20-16-12-5, ReLU, biases 0.1 N(0,1), batch 7), with converged inference where a property needs exact
minimisers.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lit_robust.errors import ConfigError
from lit_robust.lifted_objectives import (
    contrastive_potentials,
    contrastive_states,
    contrastive_surrogate,
    objective_value,
    random_wrong_labels,
    state_weights,
)
from lit_robust.nets import MLP
from lit_robust.nets.lifted import LiftedMLP, euclidean_loss, fy_relu_divergence

DT = torch.float64
K = 5


def small_net(scale: float = 1.0, seed: int = 0) -> LiftedMLP:
    torch.manual_seed(seed)
    net = LiftedMLP(in_features=20, hidden=[16, 12], num_classes=K).to(DT)
    with torch.no_grad():
        for lin in net.linears:
            lin.weight.mul_(scale)
            lin.bias.normal_(0.0, 0.1)
    return net


def batch(seed: int = 1, n: int = 7):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 20, generator=gen, dtype=DT)
    labels = torch.randint(0, K, (n,), generator=gen)
    wrong = random_wrong_labels(labels, K, gen)
    return x, F.one_hot(labels, K).to(DT), F.one_hot(wrong, K).to(DT)


def method_gradient(net, x, y, ym, variant, alpha, beta, g=None, n_sweeps=200):
    """Parameter gradient of the implemented loss (contrastive surrogate) and the per-sample value."""
    plus, minus, a_eff = state_weights(variant, alpha)
    states = contrastive_states(net, x, y, ym, plus, minus, beta, g=g, n_sweeps=n_sweeps)
    u_plus, u_minus = contrastive_potentials(net, states)
    surrogate = contrastive_surrogate(u_plus, u_minus, 1 / (a_eff * beta), x)
    params = list(net.parameters())
    grads = torch.autograd.grad(surrogate, params, allow_unused=True)
    grads = [torch.zeros_like(p) if gr is None else gr for p, gr in zip(params, grads, strict=True)]
    value = objective_value(states, u_plus, u_minus, y, ym, plus, minus, a_eff, beta, g)
    return grads, value, states


def bp_gradient(net, x, y):
    return torch.autograd.grad(euclidean_loss(net(x), y).mean(), list(net.parameters()))


def max_rel_err(grads, reference) -> float:
    return max(((a - b).norm() / b.norm()).item() for a, b in zip(grads, reference, strict=True))


# ----------------------------------------------------------------------------------------- the network
def test_parameters_and_forward_are_those_of_the_mlp():
    mlp = MLP(in_features=784, hidden=[256, 256], num_classes=10)
    lifted = LiftedMLP(in_features=784, hidden=[256, 256], num_classes=10)
    assert list(lifted.state_dict()) == list(mlp.state_dict())
    lifted.load_state_dict(mlp.state_dict())  # an ERM checkpoint of the MLP loads as is
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(lifted(x), mlp(x))
    assert torch.equal(lifted.forward_states(x)[-1], mlp(x))  # T17: predictions are the forward pass
    lifted.spectral_norms()  # power-iteration vectors are not saved
    assert list(lifted.state_dict()) == list(mlp.state_dict())


def test_normal_init_and_shape_errors():
    net = LiftedMLP(in_features=400, hidden=[300], num_classes=10)
    w = net.linears[0].weight
    assert abs(w.std().item() * 400**0.5 - 1) < 0.05 and torch.count_nonzero(net.linears[0].bias) == 0
    with pytest.raises(ConfigError, match="init"):
        LiftedMLP(init="xavier")
    with pytest.raises(ConfigError, match="784 input features"):
        LiftedMLP().infer(torch.rand(2, 10))


def test_power_iteration_matches_the_spectral_norm():
    net = small_net(2.0)
    for est, lin in zip(net.spectral_norms(), net.linears, strict=True):
        exact = torch.linalg.matrix_norm(lin.weight, 2).item()
        assert est.item() <= exact * (1 + 1e-12)  # a lower bound ...
        assert est.item() == pytest.approx(exact, rel=1e-3)  # ... well inside the 5% damping margin


def test_fy_relu_divergence():
    """T2: D >= 0 on z >= 0, = 0 iff z = relu(a), the two closed forms agree, dD/da = relu(a) - z."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(50, 9, generator=gen, dtype=DT, requires_grad=True)
    z = torch.rand(50, 9, generator=gen, dtype=DT) * (torch.rand(50, 9, generator=gen) < 0.7)
    d = fy_relu_divergence(z, a)
    assert (d >= 0).all() and (d > 1e-6).all()
    alt = 0.5 * (z - a).square().sum(1) - 0.5 * a.clamp(max=0).square().sum(1)
    assert torch.allclose(d, alt, atol=1e-12)
    (grad,) = torch.autograd.grad(d.sum(), a)
    assert torch.allclose(grad, F.relu(a) - z)
    assert torch.equal(fy_relu_divergence(F.relu(a), a), torch.zeros(50, dtype=DT))


def test_forward_pass_is_the_free_minimiser():
    """T1: U(forward) = 0 exactly, U > 0 elsewhere, and a free sweep leaves the forward pass unchanged."""
    net = small_net()
    x, _, _ = batch()
    states = net.forward_states(x)
    assert torch.equal(net.potential(states), torch.zeros(7, dtype=DT))
    moved = [states[0]] + [(z + 0.1 * torch.rand_like(z)) for z in states[1:]]
    assert (net.potential(moved) > 0).all()
    out = net.infer(x, n_sweeps=1)
    for a, b in zip(out.states, states, strict=True):
        assert torch.allclose(a, b, atol=1e-12)


def test_output_update_is_the_exact_block_minimiser_and_needs_1_plus_c_positive():
    """T3 on a net without hidden layers (one block): dPhi/dz_L = 0 at the update; 1 + c <= 0 raises."""
    torch.manual_seed(0)
    net = LiftedMLP(in_features=6, hidden=[], num_classes=4).to(DT)
    x = torch.rand(5, 6, dtype=DT)
    c, r, g = 0.3, torch.rand(5, 4, dtype=DT), [torch.randn(5, 4, dtype=DT)]
    zs = net.infer(x, c=c, r=r, g=g, n_sweeps=1).states
    z_out = zs[1].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net.objective([zs[0], z_out], c, r, g).sum(), z_out)
    assert grad.abs().max() < 1e-12
    with pytest.raises(ConfigError, match="1 \\+ c > 0"):
        net.infer(x, c=-1.0)
    with pytest.raises(ConfigError, match="1 \\+ c > 0"):
        net.infer(x, c=torch.tensor([[0.1], [-1.5], [0.0], [0.0], [0.0]], dtype=DT))


@pytest.mark.parametrize("damping", ["auto", "safe"])
@pytest.mark.parametrize("scale", [1.0, 2.0, 3.0])
def test_damped_inference_never_increases_the_objective(scale, damping):
    """T4: with damping="auto"/"safe", Phi never increases after a block update (weights 1-3x, g on)."""
    net = small_net(scale)
    x, y, ym = batch()
    alpha, beta = 0.49, 0.25
    g = [0.25 * torch.randn(7, n, dtype=DT) for n in (16, 12, K)]
    trace: list[torch.Tensor] = []
    net.infer(
        x, c=beta * (1 - 2 * alpha), r=beta * ((1 - alpha) * ym - alpha * y), g=g, n_sweeps=50, trace=trace
    )
    phi = torch.stack(trace)  # (1 + 50 sweeps x 3 blocks, B)
    assert phi.shape == (151, 7)
    assert (phi[1:] - phi[:-1] <= 1e-12 * (1 + phi[:-1].abs())).all()
    assert (phi[-1] < phi[0]).all()


def test_undamped_lpom_step_can_increase_the_objective_and_damped_one_converges():
    """The monotonicity check above is not vacuous: kappa = 0 increases Phi here; damped inference
    converges (residual < 1e-8 after 100 sweeps at init scale)."""
    net = small_net(2.0)
    x, y, ym = batch()
    g = [0.25 * torch.randn(7, n, dtype=DT) for n in (16, 12, K)]
    trace: list[torch.Tensor] = []
    net.infer(x, c=0.0, r=None, g=g, n_sweeps=20, damping="none", trace=trace)
    phi = torch.stack(trace)
    assert (phi[1:] - phi[:-1] > 1e-6).any()
    out = small_net(1.0).infer(x, c=0.25, r=0.25 * y, g=g, n_sweeps=100)
    assert out.residual < 1e-8
    assert small_net(1.0).infer(x, c=0.25, r=0.25 * y, g=g, n_sweeps=5).residual > 1e-6


def reference_infer(net, x, c, r, g, n_sweeps, kappa):
    """The spec's pseudo-code (section 3.10), sample by sample: an independent check of the batched code."""
    lins = net.linears
    out = []
    for i in range(x.shape[0]):
        zs = [z[i : i + 1].clone() for z in net.forward_states(x)]
        for _ in range(n_sweeps):
            for k in range(len(lins), 0, -1):
                a = zs[k - 1] @ lins[k - 1].weight.T + lins[k - 1].bias
                if k == len(lins):
                    zs[k] = (a - g[k - 1][i] + r[i]) / (1 + c)
                else:
                    nxt = zs[k] @ lins[k].weight.T + lins[k].bias
                    e = zs[k + 1] - (nxt if k + 1 == len(lins) else F.relu(nxt))
                    zs[k] = F.relu(
                        (a - g[k - 1][i] + kappa[k - 1] * zs[k] + e @ lins[k].weight) / (1 + kappa[k - 1])
                    )
        out.append(zs)
    return [torch.cat([o[j] for o in out]) for j in range(len(lins) + 1)]


@pytest.mark.parametrize("damping", ["auto", "none", 0.7])
def test_batched_inference_equals_the_reference_loop(damping):
    net = small_net(2.0)
    x, y, ym = batch()
    g = [0.25 * torch.randn(7, n, dtype=DT) for n in (16, 12, K)]
    with torch.no_grad():
        out = net.infer(x, c=0.1, r=0.1 * ym, g=g, n_sweeps=7, damping=damping)
        kappa = [float(k) for k in out.kappa]
        ref = reference_infer(net, x, 0.1, 0.1 * ym, g, 7, kappa)
    for a, b in zip(out.states, ref, strict=True):
        assert torch.allclose(a, b, atol=1e-12)
    assert out.residual > 0


# ----------------------------------------------------------------------------------------- objectives
@pytest.mark.parametrize(
    "variant, alpha",
    [("rovr", 1.0), ("arovr", 1.0), ("rovr_ab", 0.49), ("arovr_ab", 0.49), ("arovr_ab", 0.2)],
)
def test_small_beta_limit_is_backprop_with_error_linear_in_beta(variant, alpha):
    """T6 (Prop. 4.4): the gradient of the (1/alpha-scaled) loss tends to the BP gradient of
    mean 1/2|f(x) - y|^2, with relative error O(beta)."""
    net = small_net()
    x, y, ym = batch()
    reference = bp_gradient(net, x, y)
    errs = [
        max_rel_err(method_gradient(net, x, y, ym, variant, alpha, b)[0], reference)
        for b in (1e-2, 1e-3, 1e-4)
    ]
    assert errs[2] < 5e-3
    for coarse, fine in zip(errs, errs[1:], strict=False):
        assert 7 < coarse / fine < 13  # ~10x per decade: linear in beta
    assert errs[0] > 1e-3  # finite beta really differs from BP


def test_g_variant_small_beta_limit_is_the_gradient_of_the_loss_at_the_g_perturbed_state():
    """T16 (Prop. 4.4 with g): the AROVR^g gradient tends to d/dtheta l(z*_g), z*_g = argmin U + g^T z
    (reference by central finite differences of converged inference)."""
    net = small_net()
    x, y, ym = batch()
    gen = torch.Generator().manual_seed(5)
    g = [0.25 * torch.randn(7, n, generator=gen, dtype=DT) for n in (16, 12, K)]

    def loss_at_g_state() -> float:
        with torch.no_grad():
            z_out = net.infer(x, g=g, n_sweeps=300).states[-1]
        return euclidean_loss(z_out, y).mean().item()

    entries = ((1, 3), (2, (5, 7)), (3, 2), (4, (2, 9)), (5, 1))
    params = list(net.parameters())
    fd = []
    for p_idx, entry in entries:
        with torch.no_grad():
            params[p_idx][entry] += 1e-6
        up = loss_at_g_state()
        with torch.no_grad():
            params[p_idx][entry] -= 2e-6
        down = loss_at_g_state()
        with torch.no_grad():
            params[p_idx][entry] += 1e-6
        fd.append((up - down) / 2e-6)
    fd = torch.tensor(fd, dtype=DT)
    assert fd.abs().max() > 0.1
    errors = []
    for beta in (1e-3, 1e-4):
        grads = method_gradient(net, x, y, ym, "arovr_g", 0.49, beta, g=g)[0]
        ours = torch.stack([grads[p_idx][entry] for p_idx, entry in entries])
        errors.append(((ours - fd).norm() / fd.norm()).item())
    assert errors[1] < 1e-3 and errors[0] / errors[1] > 5


def test_alpha_one_recovers_rovr_and_arovr():
    """T7: alpha = 1 gives ROVR_beta / AROVR_beta exactly; AROVR_beta equals a hand-written Hebbian
    gradient -(1/beta) dU(z-)/dtheta with z- = argmin U - beta l, and g = 0 gives AROVR_{a,b}."""
    net = small_net()
    x, y, ym = batch()
    beta = 0.25
    for ab, plain in (("arovr_ab", "arovr"), ("rovr_ab", "rovr")):
        g1, v1, _ = method_gradient(net, x, y, ym, ab, 1.0, beta, n_sweeps=20)
        g2, v2, _ = method_gradient(net, x, y, ym, plain, 0.3, beta, n_sweeps=20)  # alpha unused
        assert all(torch.allclose(a, b, atol=1e-14) for a, b in zip(g1, g2, strict=True))
        assert torch.allclose(v1, v2, atol=1e-14)
    # hand-written: dU/dW_{k-1} = (f_k(a_k) - z_k) z_{k-1}^T, dU/db_{k-1} = f_k(a_k) - z_k
    zs = net.infer(x, c=-beta, r=-beta * y, n_sweeps=20).states
    manual = []
    for k, lin in enumerate(net.linears):
        a = zs[k] @ lin.weight.T + lin.bias
        delta = (a if k == len(net.linears) - 1 else F.relu(a)) - zs[k + 1]
        manual += [-(delta.T @ zs[k]) / (7 * beta), -delta.sum(0) / (7 * beta)]
    grads = method_gradient(net, x, y, ym, "arovr", 1.0, beta, n_sweeps=20)[0]
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(grads, manual, strict=True))
    zero_g = [torch.zeros(7, n, dtype=DT) for n in (16, 12, K)]
    g_ab = method_gradient(net, x, y, ym, "arovr_ab", 0.49, beta, n_sweeps=20)[0]
    g_g = method_gradient(net, x, y, ym, "arovr_g", 0.49, beta, g=zero_g, n_sweeps=20)[0]
    assert all(torch.allclose(a, b, atol=1e-13) for a, b in zip(g_ab, g_g, strict=True))


def test_envelope_theorem_value_and_gradient_agree():
    """T5: central finite differences of the AROVR_{a,b} value match the surrogate gradient."""
    net = small_net()
    x, y, ym = batch()
    alpha, beta = 0.49, 0.25
    grads = method_gradient(net, x, y, ym, "arovr_ab", alpha, beta, n_sweeps=400)[0]

    def value() -> float:
        return method_gradient(net, x, y, ym, "arovr_ab", alpha, beta, n_sweeps=400)[1].mean().item()

    for param, grad in zip(net.parameters(), grads, strict=True):  # the largest entry of each
        i = int(grad.abs().argmax())
        with torch.no_grad():
            param.view(-1)[i] += 1e-6
        up = value()
        with torch.no_grad():
            param.view(-1)[i] -= 2e-6
        down = value()
        with torch.no_grad():
            param.view(-1)[i] += 1e-6
        assert grad.view(-1)[i].item() == pytest.approx((up - down) / 2e-6, rel=1e-5)
        assert abs(grad.view(-1)[i].item()) > 1e-3


def test_targets_equal_to_the_output_stop_arovr_but_not_arovr_ab():
    """T8 (Prop. 3.3): with y := f(x), AROVR_beta's z- is the forward pass and its gradient is 0;
    AROVR_{a,b} keeps a non-zero gradient (l- pulls towards a wrong label)."""
    net = small_net()
    x, _, _ = batch()
    with torch.no_grad():
        y = net(x)
    ym = F.one_hot(random_wrong_labels(y.argmax(1), K, torch.Generator().manual_seed(3)), K).to(DT)
    grads, _, states = method_gradient(net, x, y, ym, "arovr", 1.0, 0.25, n_sweeps=20)
    for a, b in zip(states.minus, net.forward_states(x), strict=True):
        assert torch.allclose(a, b, atol=1e-13)
    assert max(gr.abs().max().item() for gr in grads) < 1e-12
    grads_ab = method_gradient(net, x, y, ym, "arovr_ab", 0.49, 0.25, n_sweeps=20)[0]
    assert max(gr.abs().max().item() for gr in grads_ab) > 1e-2


@pytest.mark.parametrize("alpha, beta", [(0.49, 0.25), (0.3, 1.0), (0.49, 4.0), (1.0, 0.25)])
def test_rovr_ab_is_below_arovr_ab(alpha, beta):
    """T9 (Prop. 4.1): ROVR_{a,b} <= AROVR_{a,b} per sample (converged inference)."""
    net = small_net()
    x, y, ym = batch()
    rovr = method_gradient(net, x, y, ym, "rovr_ab", alpha, beta, n_sweeps=300)[1]
    arovr = method_gradient(net, x, y, ym, "arovr_ab", alpha, beta, n_sweeps=300)[1]
    assert (rovr <= arovr + 1e-12).all()
    assert (arovr - rovr > 1e-4).all()


def test_rovr_and_arovr_bound_the_loss_at_the_forward_pass():
    """T10: ROVR_beta <= l(z*) <= AROVR_beta per sample."""
    net = small_net()
    x, y, ym = batch()
    loss = euclidean_loss(net(x), y).detach()
    rovr = method_gradient(net, x, y, ym, "rovr", 1.0, 0.25, n_sweeps=300)[1]
    arovr = method_gradient(net, x, y, ym, "arovr", 1.0, 0.25, n_sweeps=300)[1]
    assert (rovr < loss).all() and (loss < arovr).all()
