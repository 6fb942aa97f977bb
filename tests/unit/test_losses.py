"""Loss maths on fixed tensors against values computed by hand (beta_at.md T1, T9, T11)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lit_robust.losses import kl_divergence, mart, negative_margins, sbeta_weights, trades

LN2 = math.log(2.0)
# p = softmax(Z) = (1/4, 1/2, 1/4) and p' = softmax(Z_ADV) = (1/2, 1/4, 1/4); label 0
Z = torch.tensor([[0.0, LN2, 0.0]], dtype=torch.float64)
Z_ADV = torch.tensor([[LN2, 0.0, 0.0]], dtype=torch.float64)
Y = torch.tensor([0])


def test_kl_by_hand():
    # KL(p || p') = 1/4 log(1/2) + 1/2 log 2 + 1/4 log 1 = log(2) / 4
    assert kl_divergence(Z, Z_ADV).item() == pytest.approx(LN2 / 4, abs=1e-12)
    assert kl_divergence(Z_ADV, Z).item() == pytest.approx(LN2 / 4, abs=1e-12)  # symmetric by chance here


def test_kl_is_zero_at_the_clean_point_and_matches_torch():
    z = torch.randn(16, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z2 = z + torch.randn(16, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(kl_divergence(z, z), torch.zeros(16, dtype=torch.float64), atol=1e-12)
    official = F.kl_div(F.log_softmax(z2, 1), F.softmax(z, 1), reduction="batchmean")
    assert kl_divergence(z, z2).mean().item() == pytest.approx(official.item(), rel=1e-10)


def test_trades_by_hand():
    # CE(z, 0) = -log(1/4) = 2 log 2; plus beta * log(2)/4
    assert trades(Z, Z_ADV, Y, beta=6.0).item() == pytest.approx(2 * LN2 + 6.0 * LN2 / 4, abs=1e-12)
    assert trades(Z, Z, Y, beta=6.0).item() == pytest.approx(2 * LN2, abs=1e-12)  # KL term 0 at x' = x


def test_mart_by_hand():
    # BCE = -log p'_0 - log(1.0001 - p'_1 + 1e-12) with the runner-up p'_1 = 1/4 (ties: lowest index)
    bce = LN2 - math.log(1.0001 - 0.25 + 1e-12)
    kl = 0.25 * math.log(0.25 / (0.5 + 1e-12)) + 0.5 * math.log(0.5 / (0.25 + 1e-12))
    kl += 0.25 * math.log(0.25 / (0.25 + 1e-12))
    expected = bce + 6.0 * kl * (1.0000001 - 0.25)
    assert mart(Z, Z_ADV, Y, beta=6.0).item() == pytest.approx(expected, abs=1e-10)


def test_mart_kl_term_vanishes_at_the_clean_point_and_its_weight_is_not_detached():
    z = torch.randn(
        8, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True
    )
    y = torch.arange(8) % 10
    z_adv = z.detach() + 0.5
    assert torch.allclose(
        mart(z.detach(), z.detach(), y, 6.0), mart(z.detach(), z.detach(), y, 0.0), atol=1e-9
    )
    # gradient wrt the clean logits flows through the weight (1 - p_y) as well as through the KL term
    z_adv2 = z_adv + torch.randn(8, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (grad,) = torch.autograd.grad(mart(z, z_adv2, y, 6.0).sum(), z)
    p = z.detach().softmax(1)
    kl = kl_divergence(z.detach(), z_adv2, eps=1e-12)
    p_y = p.gather(1, y[:, None]).squeeze(1)
    zf = z.detach().clone().requires_grad_(True)
    frozen = 6.0 * kl_divergence(zf, z_adv2, eps=1e-12) * (1.0000001 - p_y)
    (grad_frozen,) = torch.autograd.grad(frozen.sum(), zf)
    assert not torch.allclose(grad, grad_frozen), "the (1 - p_y) weight must not be detached"
    assert kl.min() > 0


def test_trades_and_mart_need_gradients_through_both_inputs():
    z = torch.randn(4, 10, requires_grad=True)
    z_adv = torch.randn(4, 10, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    for loss in (trades, mart):
        gz, gz_adv = torch.autograd.grad(loss(z, z_adv, y, 6.0).mean(), (z, z_adv))
        assert gz.abs().sum() > 0 and gz_adv.abs().sum() > 0


def test_negative_margin_sign_is_misclassification():
    """T1 / Proposition 1: argmax z != y  <=>  max_{j != y} (z_j - z_y) > 0 (random logits, no ties)."""
    z = torch.randn(1000, 10, generator=torch.Generator().manual_seed(4))
    y = torch.randint(0, 10, (1000,), generator=torch.Generator().manual_seed(5))
    m = negative_margins(z, y)
    assert torch.all(m.gather(1, y[:, None]) == 0)
    wrong = m.scatter(1, y[:, None], float("-inf")).amax(1) > 0
    assert torch.equal(wrong, z.argmax(1) != y)


def test_sbeta_weights_and_their_limits():
    """T9: weights on the simplex; mu -> inf is BETA-AT's one-hot choice, mu -> 0 the mean; and
    max <= LSE/mu <= max + log(K-1)/mu (the smoothing is an UPPER bound: the paper's erratum)."""
    m = torch.randn(32, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    for mu in (1e-6, 0.5, 1.0, 20.0, 1e6):
        w = sbeta_weights(m, mu)
        assert torch.all(w >= 0) and torch.allclose(w.sum(1), torch.ones(32, dtype=torch.float64))
        lse = torch.logsumexp(mu * m, dim=1) / mu
        assert torch.all(lse >= m.amax(1) - 1e-9) and torch.all(lse <= m.amax(1) + math.log(9) / mu + 1e-9)
    assert torch.equal(sbeta_weights(m, 1e6).argmax(1), m.argmax(1))
    assert torch.allclose(sbeta_weights(m, 1e6).amax(1), torch.ones(32, dtype=torch.float64))
    assert torch.allclose(sbeta_weights(m, 1e-6), torch.full_like(m, 1 / 9), atol=1e-6)
