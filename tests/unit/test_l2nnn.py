"""L2NNN nets and method: whole-network nonexpansiveness (random init and after training on real MNIST),
the gap certificate against attacks, the loss maths, the weight-scheme switch and the ablation switches."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from test_methods import trainer

from lit_robust.attacks import PGD, CarliniWagnerL2
from lit_robust.data import MNIST
from lit_robust.diagnostics.gaps import (
    certified_correct,
    certified_radius,
    confidence_gap,
    correct_gap,
    radius_factor,
)
from lit_robust.diagnostics.lipschitz import jacobian_norm, layer_operator_norm
from lit_robust.errors import ConfigError
from lit_robust.losses import gap_loss, l2nnn
from lit_robust.methods import L2NNN
from lit_robust.nets import L2NNNConvNet
from lit_robust.nets.l2nnn_layers import NEConv2d, NELinear

SMALL = dict(conv_channels=[8, 16], fc=[64, 16], kernel_size=3)


def small_net(**kw) -> L2NNNConvNet:
    torch.manual_seed(0)
    return L2NNNConvNet(**{**SMALL, **kw})


def _train(
    mnist_root: str, omega: float, steps: int = 150, **net_kw
) -> tuple[L2NNN, torch.Tensor, torch.Tensor]:
    """A small L2NNN trained with Adam 3e-3 on 3000 real MNIST images; returns (module, x_test, y_test)."""
    dm = MNIST(data_dir=mnist_root, train_subset=3000, val_size=0, test_subset=300, seed=0)
    dm.setup("fit")
    dm.setup("test")
    x, y = dm.train_dataset.tensors
    module = L2NNN(net=small_net(**net_kw), omega=omega, z=10.0)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    module.log = lambda *a, **k: None  # plain loop: no trainer to log to
    module.log_accuracy = lambda *a, **k: None
    for _ in range(steps):
        idx = torch.randint(0, len(y), (100,), generator=g)
        opt.zero_grad()
        module.training_loss((x[idx], y[idx])).backward()
        opt.step()
    module.eval()
    return module, *dm.test_dataset.tensors


@pytest.fixture(scope="module")
def trained(mnist_root):
    return _train(mnist_root, omega=1.0)


# --------------------------------------------------------------------------- nonexpansive network
def _logit_lipschitz_ratios(net, a, b) -> torch.Tensor:
    with torch.no_grad():
        return ((net(a) - net(b)).abs() / (a - b).flatten(1).norm(dim=1, keepdim=True)).amax(dim=1)


def _adversarial_pairs(net, n=64, steps=30, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs found by gradient ascent on max_k |y_k(a) - y_k(b)| / ||a - b|| (local Lipschitz search)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 1, 28, 28, generator=g).requires_grad_(True)
    b = (a.detach() + 0.05 * torch.randn(n, 1, 28, 28, generator=g)).requires_grad_(True)
    opt = torch.optim.Adam([a, b], lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        ratio = (net(a) - net(b)).abs().amax(dim=1) / (a - b).flatten(1).norm(dim=1)
        (-ratio.sum()).backward()
        opt.step()
    return a.detach(), b.detach()


def _check_network_nonexpansive(net: L2NNNConvNet) -> float:
    net.eval()
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2000, 1, 28, 28, generator=g)
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    worst = float(_logit_lipschitz_ratios(net, a, b).max())
    assert worst <= 1 + 1e-4
    adv = float(_logit_lipschitz_ratios(net, *_adversarial_pairs(net)).max())
    assert adv <= 1 + 1e-4
    # per-logit input gradients are bounded by 1 as well
    x = torch.rand(16, 1, 28, 28, generator=g).requires_grad_(True)
    for k in range(net.num_classes):
        (grad,) = torch.autograd.grad(net(x)[:, k].sum(), x)
        assert grad.flatten(1).norm(dim=1).max() <= 1 + 1e-5
    return max(worst, adv)


def _check_layers(net: L2NNNConvNet) -> None:
    """Every layer's operator norm by power iteration (conv at its training resolution) is <= 1."""
    shapes = {}

    def record(module, inputs, output) -> None:
        shapes[module] = tuple(inputs[0].shape[1:])

    hooks = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, (NEConv2d, NELinear))]
    with torch.no_grad():
        net(torch.rand(1, 1, 28, 28))
    for h in hooks:
        h.remove()
    assert len(shapes) == 4
    for layer, shape in shapes.items():
        assert layer_operator_norm(layer, shape, iters=100) <= 1 + 1e-4
    heads = net.heads.effective_weight()
    assert torch.allclose(heads.norm(dim=1), torch.ones(10), atol=1e-5)


def test_random_network_every_logit_is_nonexpansive():
    net = small_net()
    _check_layers(net.eval())
    _check_network_nonexpansive(net)


def test_trained_network_every_logit_is_nonexpansive(trained):
    module, x, y = trained
    assert (module.net(x).argmax(1) == y).float().mean() > 0.8  # it did learn
    _check_layers(module.net)
    _check_network_nonexpansive(module.net)
    # a multi-L2NNN's whole Jacobian may exceed 1, but never sqrt(K)
    jac = jacobian_norm(module.net, x[:20], iters=30)
    assert (jac <= math.sqrt(10) + 1e-4).all()


def test_jacobian_power_iteration_memory_does_not_grow_with_the_iterations():
    """Each vjp(jvp(v)) iterate of ``jacobian_norm`` is detached: chained, every iteration's graph (it stays
    differentiable in the net's parameters) was kept alive, and the L2NNN diagnostics of a 32/64-channel
    net ran out of 24 GB. Peak memory of 50 iterations over that of 2, in a fresh process: ~1 GB before."""
    code = (
        "import resource, torch\n"
        "from torch import nn\n"
        "from lit_robust.diagnostics.lipschitz import jacobian_norm\n"
        "torch.manual_seed(0)\n"
        "net, x = nn.Sequential(nn.Linear(784, 2048), nn.Tanh(), nn.Linear(2048, 10)), torch.rand(256, 784)\n"
        "jacobian_norm(net, x, iters=2)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "jacobian_norm(net, x, iters=50)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(done.stdout.split()[-1]) < 100, f"{done.stdout.split()[-1]} MB more for 48 more iterations"


def test_separate_nets_and_cifar_topology_are_nonexpansive():
    torch.manual_seed(0)
    net = L2NNNConvNet(
        in_channels=3,
        image_size=32,
        crop=28,
        conv_channels=[4, 4, 4],
        pool=[False, True, True],
        fc=[16],
        kernel_size=3,
        branch_point=0,
    ).eval()
    a = torch.rand(500, 3, 32, 32)
    b = (a + 0.05 * torch.randn(a.shape)).clamp(0, 1)
    assert _logit_lipschitz_ratios(net, a, b).max() <= 1 + 1e-4
    assert net.lipschitz_certificate()[0] == pytest.approx(1.0, abs=1e-5)


def test_joint_head_makes_the_whole_logit_vector_nonexpansive_and_certifies_gap_over_sqrt2():
    net = small_net(heads="joint", branch_point=4).eval()
    lip, per_logit = net.lipschitz_certificate()
    assert not per_logit and lip == pytest.approx(1.0, abs=1e-5)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1000, 1, 28, 28, generator=g)
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    with torch.no_grad():
        ratio = (net(a) - net(b)).norm(dim=1) / (a - b).flatten(1).norm(dim=1)
    assert ratio.max() <= 1 + 1e-4
    per_class = small_net().eval()  # the paper's heads: only each logit is nonexpansive
    assert per_class.lipschitz_certificate()[1] is True
    with pytest.raises(ConfigError, match="branch_point=4"):
        small_net(heads="joint")


# --------------------------------------------------------------------------- certificate
def test_certificate_tightness_per_logit_and_whole_vector():
    """Antipodal unit rows +-q: flips at 1.001 g/2 but not 0.999 g/2. Orthonormal rows (a single L2NNN,
    the whole vector 1-Lipschitz): flips at 1.001 g/sqrt(2), not 0.999 g/sqrt(2)."""
    q = F.normalize(torch.randn(5, dtype=torch.float64), dim=0)
    x = q * 0.7
    antipodal = torch.stack([q, -q])
    logits = (antipodal @ x)[None]
    r = certified_radius(logits, per_logit=True).item()
    for factor, flips in ((0.999, False), (1.001, True)):
        moved = antipodal @ (x - factor * r * q)
        assert (moved.argmax().item() != 0) == flips
    rows, _ = torch.linalg.qr(torch.randn(5, 2, dtype=torch.float64))
    rows = rows.T  # 2 orthonormal rows
    x = 1.3 * rows[0] + 0.2 * rows[1]
    logits = (rows @ x)[None]
    r = certified_radius(logits, per_logit=False).item()
    assert r == pytest.approx((1.3 - 0.2) / math.sqrt(2))
    direction = F.normalize(rows[1] - rows[0], dim=0)
    for factor, flips in ((0.999, False), (1.001, True)):
        assert ((rows @ (x + factor * r * direction)).argmax().item() != 0) == flips


def test_certified_accuracy_uses_a_strict_inequality_and_correctness():
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    y = torch.tensor([0, 1, 1])
    cert = certified_correct(logits, y, [0.5, 1.0, 1.5])
    assert cert.tolist() == [[True, False, False], [False, False, False], [True, True, False]]
    assert radius_factor(2.0, True) == 0.25 and radius_factor(1.0, False) == pytest.approx(1 / math.sqrt(2))
    with pytest.raises(ConfigError, match="lipschitz"):
        radius_factor(0.0)


def test_no_attack_inside_the_certified_radius_flips_a_prediction(trained):
    module, x, y = trained
    net = module.net
    x, y = x[:40], y[:40]
    with torch.no_grad():
        logits = net(x)
    radius = certified_radius(logits, *net.lipschitz_certificate())
    # CW is a minimum-norm attack: every adversarial example it finds lies outside the certified radius
    cw = CarliniWagnerL2(eps=100.0, norm="2", steps=100, binary_search_steps=5)
    x_adv = cw(net, x, logits.argmax(1))
    with torch.no_grad():
        flipped = net(x_adv).argmax(1) != logits.argmax(1)
    dist = (x_adv - x).flatten(1).norm(dim=1)
    assert flipped.sum() > 20  # unbounded CW does break most points
    assert (dist[flipped] >= radius[flipped] * (1 - 1e-4)).all()
    # L_2 PGD with eps = the smallest radius among well-certified points flips none of them
    strong = radius > 0.3
    assert strong.sum() >= 10
    eps = float(radius[strong].min()) * 0.999
    pgd = PGD(eps=eps, norm="2", steps=50, restarts=2, loss="margin", seed=0)
    x_pgd = pgd(net, x[strong], logits.argmax(1)[strong])
    with torch.no_grad():
        assert torch.equal(net(x_pgd).argmax(1), logits.argmax(1)[strong])


def test_lemma_2_gaps_bound_output_distances(trained):
    module, x, y = trained
    with torch.no_grad():
        logits = module.net(x)
    ok = logits.argmax(1) == y
    logits, y = logits[ok], y[ok]
    gap = confidence_gap(logits)
    diff = y[:, None] != y[None, :]
    lhs = (gap[:, None] + gap[None, :])[diff]
    rhs = math.sqrt(2) * torch.cdist(logits, logits)[diff]
    assert (lhs <= rhs + 1e-5).all()


def test_penalty_scheme_certificate_is_the_product_of_layer_bounds():
    net = small_net(weight_scheme="none")
    lip, per_logit = net.lipschitz_certificate()
    assert per_logit and lip > 10  # raw Kaiming weights expand
    a = torch.rand(200, 1, 28, 28)
    b = (a + 0.05 * torch.randn(a.shape)).clamp(0, 1)
    assert _logit_lipschitz_ratios(net.eval(), a, b).max() <= lip
    net.set_weight_scheme("strict")
    assert net.lipschitz_certificate()[0] == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------- losses
def test_gap_loss_values_and_stability():
    y_logits = torch.tensor([[3.0, 1.0, 0.5, -1.0]], dtype=torch.float64)
    label = torch.tensor([0])
    expected = {1: -1.657, 5: -1.984, 20: -2.000, 100: -2.000}
    for z, value in expected.items():
        assert gap_loss(y_logits, label, z).item() == pytest.approx(value, abs=1e-3)
    naive = torch.log(1 - torch.softmax(100 * y_logits.float(), 1)[0, 0]) / 100
    assert naive.item() == -math.inf  # why the log-sum-exp form is needed
    assert torch.isfinite(gap_loss(y_logits.float(), label, 100.0)).all()
    for wrong in ([1], [3]):  # wrong predictions: log(1 - p_label)/z, -> 0 as z grows
        label = torch.tensor(wrong)
        direct = torch.log(1 - torch.softmax(y_logits, 1)[0, wrong[0]])
        assert gap_loss(y_logits, label, 1).item() == pytest.approx(direct.item(), rel=1e-9)
        assert -1e-6 < gap_loss(y_logits, label, 20).item() <= 0
    logits = torch.randn(6, 4, requires_grad=True)
    (grad,) = torch.autograd.grad(gap_loss(logits, torch.arange(6) % 4, 10.0).sum(), logits)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_l2nnn_loss_is_the_sum_of_three_terms():
    g = torch.Generator().manual_seed(0)
    za, zb, zc = (torch.randn(5, 3, generator=g) for _ in range(3))
    y = torch.tensor([0, 1, 2, 0, 1])
    u, v = torch.tensor([2.0, 3.0, 4.0]), torch.tensor(5.0)
    total = l2nnn(za, zb, zc, y, u, v, gamma=0.5, omega=2.0, z=10.0)
    expected = (
        F.cross_entropy(za * u, y, reduction="none")
        + 0.5 * F.cross_entropy(zb * v, y, reduction="none")
        + 2.0 * gap_loss(zc, y, 10.0)
    )
    assert torch.allclose(total, expected)


def test_correct_gap_is_zero_on_wrong_points():
    logits = torch.tensor([[3.0, 1.0], [3.0, 1.0]])
    assert correct_gap(logits, torch.tensor([0, 1])).tolist() == [2.0, 0.0]


def test_omega_raises_gaps_and_large_radius_certificates(trained, mnist_root):
    """Spec property 12: with L_c the mean gap and the certified accuracy at larger radii go up."""
    with_lc, x, y = trained
    without, _, _ = _train(mnist_root, omega=0.0)

    def stats(module):
        with torch.no_grad():
            logits = module.net(x)
        return correct_gap(logits, y).mean().item(), certified_correct(logits, y, [0.3])[:, 0].float().mean()

    gap1, cert1 = stats(with_lc)
    gap0, cert0 = stats(without)
    assert gap1 > gap0 and cert1 > cert0


# --------------------------------------------------------------------------- method mechanics
def test_scales_u_and_v_are_loss_parameters_not_part_of_the_classifier():
    module = L2NNN(net=small_net())
    x = torch.rand(4, 1, 28, 28)
    before = module(x)
    with torch.no_grad():
        module.u.mul_(3)
        module.v.mul_(3)
    assert torch.equal(module(x), before)
    assert not any("u" == k or "v" == k for k in module.net.state_dict())
    assert {"u", "v"} <= set(module.state_dict())
    fixed = L2NNN(net=small_net(), v_trainable=False)
    assert "v" not in dict(fixed.named_parameters()) and "v" in fixed.state_dict()


def test_training_loss_equals_the_formula_and_model_4_attacks_scaled_logits():
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    module = L2NNN(net=small_net(), gamma=0.7, omega=1.5, z=5.0)
    module.log = module.log_accuracy = lambda *a, **k: None
    expected = l2nnn(*(module(x),) * 3, y, module.u, module.v, 0.7, 1.5, 5.0).mean()
    assert torch.allclose(module.training_loss((x, y)), expected)

    seen = {}

    class Spy(PGD):
        def perturb(self, model, x, y, generator=None, target=None):
            seen["scaled"] = model(x)
            return super().perturb(model, x, y, generator, target)

    adv = L2NNN(net=small_net(), train_attack=Spy(eps=0.3, norm="inf", steps=2, seed=0))
    adv.log = adv.log_accuracy = lambda *a, **k: None
    with torch.no_grad():
        adv.u.copy_(torch.arange(1.0, 11.0))
    loss = adv.training_loss((x, y))
    adv.net.eval()
    assert torch.allclose(seen["scaled"], adv.net(x) * adv.u.detach(), atol=1e-6)
    assert adv.train_attack.eps == 0.3 and adv.train_attack.norm == "inf"  # not the module's L_2 eps 3
    loss.backward()
    assert adv.u.grad is not None and adv.u.grad.abs().sum() > 0


def test_penalty_then_strict_switches_and_checkpoints_keep_the_scheme(tmp_path):
    x, y = torch.rand(64, 1, 28, 28), torch.arange(64) % 10
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    module = L2NNN(
        net=small_net(),
        weight_scheme="penalty_then_strict",
        switch_epoch=1,
        eval_attack=PGD(steps=1),
    )
    assert module.net.weight_scheme == "penalty"
    seen = []

    class Watch(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            seen.append(pl_module.net.weight_scheme)

    t = trainer(max_epochs=2, callbacks=[Watch()], default_root_dir=tmp_path)
    t.fit(module, loader, loader)
    assert seen == ["penalty", "strict"]
    path = tmp_path / "m.ckpt"
    t.save_checkpoint(path)
    fresh = L2NNN(net=small_net(), weight_scheme="penalty_then_strict", switch_epoch=1)
    assert fresh.net.weight_scheme == "penalty"
    fresh.load_state_dict(torch.load(path, weights_only=False)["state_dict"])
    assert fresh.net.weight_scheme == "strict"
    assert torch.allclose(fresh.eval()(x), module.eval()(x))


def test_penalty_scheme_adds_the_weight_penalty():
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8)
    module = L2NNN(net=small_net(), weight_scheme="penalty", lambda_w=0.5)
    module.log = module.log_accuracy = lambda *a, **k: None
    logits = module(x)
    expected = l2nnn(logits, logits, logits, y, module.u, module.v, 1.0, 1.0, 10.0).mean()
    expected = expected + 0.5 * module.net.weight_penalty()
    assert module.net.weight_penalty() > 0
    assert torch.allclose(module.training_loss((x, y)), expected)


@pytest.mark.parametrize(
    "net_kw,module_kw",
    [
        ({}, {"weight_scheme": "none"}),
        ({}, {"omega": 0.0}),
        ({"pooling": "max"}, {}),
        ({"activation": "relu"}, {}),
    ],
    ids=["no-weight-constraint", "no-L_c", "max-pool", "one-sided-relu"],
)
def test_ablations_train_and_keep_a_valid_certificate(net_kw, module_kw, tmp_path):
    x, y = torch.rand(64, 1, 28, 28), torch.arange(64) % 10
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    module = L2NNN(net=small_net(**net_kw), eval_attack=PGD(steps=1), **module_kw)
    t = trainer(max_epochs=1, default_root_dir=tmp_path)
    t.fit(module, loader, loader)
    metrics = t.callback_metrics
    assert {"val/certified_acc@2.0", "val/mean_correct_gap", "val/lipschitz_bound"} <= metrics.keys()
    lip = float(metrics["val/lipschitz_bound"])
    a = torch.rand(200, 1, 28, 28)
    b = (a + 0.05 * torch.randn(a.shape)).clamp(0, 1)
    assert _logit_lipschitz_ratios(module.net.eval(), a, b).max() <= lip * (1 + 1e-4)
    if module_kw.get("weight_scheme") == "none":
        assert lip > 1
    else:
        assert lip == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"omega": -1.0}, "model.omega"),
        ({"z": 0.0}, "model.z"),
        ({"weight_scheme": "loose"}, "model.weight_scheme"),
        ({"adv_on": "c"}, "model.adv_on"),
        ({"u_init": -1.0}, "model.u_init"),
        ({"switch_epoch": -2}, "model.switch_epoch"),
    ],
)
def test_bad_method_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        L2NNN(net=small_net(), **kwargs)


def test_method_needs_an_l2nnn_net():
    from lit_robust.nets import MLP

    with pytest.raises(ConfigError, match="L2NNN net"):
        L2NNN(net=MLP())


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"pool": [True]}, "pool needs one entry"),
        ({"branch_point": 9}, "branch_point"),
        ({"activation": "tanh"}, "activation"),
        ({"pooling": "avg"}, "pooling"),
        ({"weight_scheme": "loose"}, "weight_scheme"),
        ({"crop": 40}, "crop"),
        ({"image_size": 27}, "even feature-map side"),
        ({"mean": [0.1, 0.2]}, "mean needs 1"),
        ({"heads": "shared"}, "heads"),
    ],
)
def test_bad_net_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        L2NNNConvNet(**{**SMALL, **kwargs})


def test_wrong_input_shape_names_the_field():
    net = small_net()
    with pytest.raises(ConfigError, match="in_channels"):
        net(torch.rand(2, 3, 28, 28))
    with pytest.raises(ConfigError, match="image_size"):
        net(torch.rand(2, 1, 32, 32))
