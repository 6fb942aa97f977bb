"""L2NNN building blocks: the bound b(W), the two weight schemes, conv input scaling, nonlinearities,
pooling and the split residual are each nonexpansive in L_2 (and the known wrong variants are not)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_robust.diagnostics.lipschitz import layer_operator_norm, operator_norm
from lit_robust.errors import ConfigError
from lit_robust.nets.l2nnn_layers import (
    ClassHeads,
    MaxPool,
    NEConv2d,
    NELinear,
    NormPool2d,
    SplitResidual,
    TwoSidedReLU,
    gram_bound,
    gram_penalty,
)

TOL = 1 + 1e-4


def _pairs_ratio(f, shape, n=1000, scale=1.0, seed=0) -> float:
    """max ||f(a) - f(b)|| / ||a - b|| over n random pairs (float64)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn((n, *shape), generator=g, dtype=torch.float64) * scale
    b = a + torch.randn((n, *shape), generator=g, dtype=torch.float64) * scale * torch.rand(
        (n,) + (1,) * len(shape), generator=g, dtype=torch.float64
    )
    with torch.no_grad():
        num = (f(a) - f(b)).flatten(1).norm(dim=1)
    return float((num / (a - b).flatten(1).norm(dim=1)).max())


def _dense(layer: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """The linear part of a layer as a dense matrix, by autograd (small shapes only)."""
    zero = torch.zeros((1, *shape), dtype=torch.float64)
    jac = torch.func.jacrev(lambda v: layer(v) - layer(zero))(zero)
    return jac.reshape(-1, math.prod(shape))


# --------------------------------------------------------------------------- the bound b(W)
def test_bound_dominates_squared_spectral_norm_on_random_matrices():
    g = torch.Generator().manual_seed(0)
    for i in range(300):
        m, n = torch.randint(1, 40, (2,), generator=g).tolist()
        w = torch.randn(1, m, n, generator=g, dtype=torch.float64)
        if i % 3 == 0:
            w = w.abs()  # all-positive matrices are the tight case of the row-sum bound
        sigma = torch.linalg.matrix_norm(w[0], 2)
        assert sigma**2 <= gram_bound(w)[0] * (1 + 1e-9)


def test_bound_is_exact_for_orthonormal_rows_and_single_rows():
    q, _ = torch.linalg.qr(torch.randn(20, 8, dtype=torch.float64))
    assert gram_bound(q.T[None])[0] == pytest.approx(1.0, abs=1e-12)
    row = torch.randn(1, 1, 15, dtype=torch.float64)
    assert gram_bound(row)[0] == pytest.approx(row.pow(2).sum().item(), rel=1e-12)


def test_bound_gradient_equals_the_full_gram_computation():
    """Only the maximising Gram row is recomputed with autograd, and the large Gram matrix only when a row
    of it does not already exceed the small one's r: same value and same subgradient as the full
    computation, on wide, tall and sparse matrices, both where the large Gram is skipped and where not."""

    def reference(w):
        r = lambda m: m.abs().sum(-1).amax(-1)  # noqa: E731
        return torch.minimum(r(w.mT @ w), r(w @ w.mT))

    g = torch.Generator().manual_seed(0)
    skipped = []
    for i in range(200):
        m, n = torch.randint(1, 14, (2,), generator=g).tolist()
        w = torch.randn(3, m, n, generator=g, dtype=torch.float64)
        if i % 2:
            w = w * (torch.rand(3, m, n, generator=g) < 0.3)  # sparse: often the large Gram's r is smaller
        w.requires_grad_()
        (g1,) = torch.autograd.grad(gram_bound(w).sum(), w)
        (g2,) = torch.autograd.grad(reference(w).sum(), w)
        assert torch.allclose(gram_bound(w), reference(w), rtol=1e-12, atol=0)
        assert torch.allclose(g1, g2)
        small, large = (w, w.mT) if m <= n else (w.mT, w)
        skipped.append(
            bool(
                ((large @ large.mT).abs().sum(-1).amax(-1) > (small @ small.mT).abs().sum(-1).amax(-1)).all()
            )
        )
    assert 20 < sum(skipped) < 180  # both paths were taken


def test_penalty_is_zero_within_the_bound_and_positive_outside():
    w = torch.randn(2, 16, 24, dtype=torch.float64)
    assert (gram_penalty(w) > 0).all()
    normalised = w / gram_bound(w).sqrt()[:, None, None]
    assert gram_bound(normalised) == pytest.approx([1.0, 1.0], abs=1e-9)
    assert gram_penalty(normalised * (1 - 1e-6)).max() == 0


@pytest.mark.parametrize("scheme_scale", [0.01, 1.0, 100.0])
def test_strict_forward_is_invariant_to_scaling_the_raw_weight(scheme_scale):
    torch.manual_seed(0)
    layer = NELinear(10, 6).double()
    x = torch.randn(5, 1, 10, dtype=torch.float64)
    before = layer(x)
    with torch.no_grad():
        layer.weight.mul_(scheme_scale)
    assert torch.allclose(layer(x), before)


def test_shrink_only_never_scales_weights_up():
    torch.manual_seed(0)
    layer = NELinear(10, 6).double()
    with torch.no_grad():
        layer.weight.mul_(1e-3)  # b(W) << 1
    layer.shrink_only = True
    assert torch.equal(layer.effective_weight(), layer.weight)
    layer.shrink_only = False
    assert gram_bound(layer.matrices(layer.effective_weight()))[0].item() == pytest.approx(1.0)


def test_penalty_and_none_schemes_use_the_raw_weight():
    layer = NELinear(4, 3)
    for scheme in ("penalty", "none"):
        layer.scheme = scheme
        assert torch.equal(layer.effective_weight(), layer.weight)


def test_eval_mode_caches_the_normalised_weight_until_the_weight_changes():
    layer = NELinear(8, 4).eval()
    first = layer.effective_weight()
    assert layer.effective_weight() is first
    with torch.no_grad():
        layer.weight.mul_(2)  # in-place update bumps the version: cache invalidated
        layer.weight.add_(torch.randn_like(layer.weight))
    assert not torch.equal(layer.effective_weight(), first)


# --------------------------------------------------------------------------- operator norms
@pytest.mark.parametrize("kernel", [1, 3, 4, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_strict_conv_operator_norm_is_at_most_one(kernel, stride, padding):
    torch.manual_seed(kernel * 10 + stride)
    conv = NEConv2d(3, 4, kernel, stride=stride, padding=padding).double()
    shape = (1, 3, 12, 12)  # (G, C, H, W): one group
    sigma = operator_norm(
        lambda v: conv(v) - conv(torch.zeros_like(v)), shape, iters=200, dtype=torch.float64
    )
    dense = torch.linalg.matrix_norm(_dense(conv, shape), 2).item()
    assert dense * 0.995 <= sigma <= dense * (1 + 1e-9)  # power iteration approaches from below
    assert dense <= TOL


def test_corner_kernel_needs_the_ceil_input_factor():
    """K=3, S=2, ones at the four corners: ceil(K/S) = 2 keeps the norm <= 1; the factor K/S = 1.5 of a
    third-party port does not (it gives about 1.33)."""
    weight = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    weight[0, 0, ::2, ::2] = 0.5  # ||w|| = 1 = sqrt(b(w)): W' = W
    shape = (1, 1, 41, 41)

    def conv_with(factor):
        return lambda v: F.conv2d(v.reshape(1, 1, 41, 41) / factor, weight, stride=2, padding=1)

    assert operator_norm(conv_with(2.0), shape, 300, dtype=torch.float64) <= TOL
    assert operator_norm(conv_with(1.5), shape, 300, dtype=torch.float64) > 1.3
    layer = NEConv2d(1, 1, 3, stride=2, padding=1).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
    assert layer_operator_norm(layer, shape, 300) <= TOL


def test_grouped_layers_bound_each_group_separately():
    torch.manual_seed(0)
    linear = NELinear(6, 5, groups=4).double()
    w = linear.effective_weight().view(4, 5, 6)
    assert all(torch.linalg.matrix_norm(w[g], 2) <= TOL for g in range(4))
    conv = NEConv2d(2, 3, 3, groups=4).double()
    for g in range(4):  # each group's kernel alone, as a conv operator
        kernel = conv.effective_weight()[3 * g : 3 * g + 3]
        sigma = operator_norm(
            lambda v, k=kernel: F.conv2d(v / 3, k, padding=1), (2, 8, 8), 200, dtype=torch.float64
        )
        assert sigma <= TOL


def test_class_heads_are_unit_norm_filters():
    torch.manual_seed(0)
    heads = ClassHeads(7, 10).double()
    w = heads.effective_weight()
    assert torch.allclose(w.norm(dim=1), torch.ones(10, dtype=torch.float64))
    h = torch.randn(3, 1, 7, dtype=torch.float64)
    assert torch.allclose(heads(h), h[:, 0] @ w.T + heads.bias)
    per_class = torch.randn(3, 10, 7, dtype=torch.float64)
    assert torch.allclose(heads(per_class)[:, 4], per_class[:, 4] @ w[4] + heads.bias[4])


# --------------------------------------------------------------------------- nonlinearities and pooling
def test_two_sided_relu_is_nonexpansive_and_keeps_same_sign_distances():
    f = TwoSidedReLU()
    assert _pairs_ratio(f, (1, 5)) <= 1 + 1e-12
    a, b = torch.tensor([[[1.0, -2.0]]]), torch.tensor([[[3.0, -0.5]]])
    assert (f(a) - f(b)).norm() == pytest.approx((a - b).norm().item())
    assert f(a).shape == (1, 1, 4)


@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 1), (3, 2)])
def test_norm_pool_is_nonexpansive_including_overlapping_windows(kernel, stride):
    pool = NormPool2d(kernel, stride)
    assert _pairs_ratio(pool, (1, 2, 6, 6)) <= 1 + 1e-9
    assert _pairs_ratio(pool, (1, 2, 6, 6), scale=1e-3) <= 1 + 1e-9


def test_norm_pool_matches_lppool_and_has_finite_gradient_at_zero_windows():
    x = torch.rand(2, 1, 3, 8, 8, dtype=torch.float64)
    lp = nn.LPPool2d(2, 2)(x[:, 0])
    assert torch.allclose(NormPool2d(2, eps=0)(x)[:, 0], lp)
    zero = torch.zeros(1, 1, 1, 4, 4, requires_grad=True)
    NormPool2d(2)(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()
    plain = torch.zeros(1, 1, 4, 4, requires_grad=True)
    F.avg_pool2d(plain * plain, 2).sqrt().sum().backward()  # why eps is needed
    assert torch.isnan(plain.grad).any()


def test_max_pool_ablation_is_nonexpansive():
    assert _pairs_ratio(MaxPool(2), (1, 2, 6, 6)) <= 1 + 1e-12


def test_split_residual_is_nonexpansive_and_the_unsplit_mix_is_not():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))  # isometric f
    iso = lambda v: v @ q.T  # noqa: E731
    block = SplitResidual(iso, channels=6, init_t=0.5).double()
    assert _pairs_ratio(block, (1, 6)) <= 1 + 1e-9
    t = 1 / math.sqrt(2)
    unsplit = lambda v: t * v + math.sqrt(1 - t * t) * iso(v)  # noqa: E731
    assert _pairs_ratio(unsplit, (1, 6), n=4000) > 1.2  # up to sqrt(2) when f(v) aligns with v


def test_layer_argument_errors():
    with pytest.raises(ConfigError, match="stride 1"):
        NEConv2d(1, 2, 3, stride=2, padding="same")
    with pytest.raises(ConfigError, match="init_t"):
        SplitResidual(nn.Identity(), 3, init_t=1.0)
