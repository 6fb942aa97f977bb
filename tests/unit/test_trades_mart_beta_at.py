"""TRADES, MART, BETA-AT and SBETA-AT modules: each loss equals its pure formula at the attack's output."""

from __future__ import annotations

import pytest
import torch
from test_methods import TinyData, bn_net, trainer  # tests/unit is on sys.path (rootdir-relative imports)
from torch import nn

from lit_robust.attacks import BETA, PGD, TRADESKL
from lit_robust.errors import ConfigError
from lit_robust.losses import cross_entropy, mart, trades
from lit_robust.methods import BETAAT, MART, SBETAAT, TRADES

# the losses are called outside a Trainer here, where self.log() only warns
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def plain_net(classes: int = 4) -> nn.Module:
    """No BatchNorm/dropout: train-mode and eval-mode logits agree, so losses can be recomputed exactly."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, classes))


def batch(classes: int = 4, n: int = 8):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize(
    "cls, attack, formula",
    [
        (TRADES, TRADESKL(0.2, steps=3, seed=3), trades),
        (MART, PGD(0.2, steps=3, seed=3, keep_best=False), mart),
    ],
)
def test_trades_and_mart_losses_are_their_formulas_at_the_attack_output(cls, attack, formula):
    model = cls(net=plain_net(), eps=0.2, beta=6.0, train_attack=attack)
    model.train()
    x, y = batch()
    loss = model.training_loss((x, y))
    x_adv = attack(model.net, x, y)  # same seed: the same x'
    expected = formula(model.net(x), model.net(x_adv), y, 6.0).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    grads = torch.autograd.grad(loss, list(model.net.parameters()))
    assert all(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.net.parameters()), "the attack must not touch .grad"


def test_trades_with_zero_beta_is_clean_erm():
    model = TRADES(net=plain_net(), eps=0.2, beta=0.0, train_attack=TRADESKL(0.2, steps=2, seed=0))
    x, y = batch()
    assert model.training_loss((x, y)).item() == pytest.approx(cross_entropy(model.net(x), y).mean().item())


def test_beta_at_loss_is_cross_entropy_at_the_chosen_point():
    """T8: L = CE(f(x*), y) at BETA's x* (no clean or KL term; x* carries no graph)."""
    attack = BETA(0.2, steps=3, seed=5)
    model = BETAAT(net=plain_net(), eps=0.2, train_attack=attack)
    model.train()
    x, y = batch()
    loss = model.training_loss((x, y))
    x_star = attack.run(model.net, x, y).x_adv
    assert not x_star.requires_grad
    assert loss.item() == pytest.approx(cross_entropy(model.net(x_star), y).mean().item(), rel=1e-6)


def test_sbeta_at_limits():
    """T9: mu -> inf gives BETA-AT's loss (same logits), mu -> 0 the mean CE over the K-1 targets."""
    x, y = batch()
    sharp = SBETAAT(net=plain_net(), eps=0.2, mu=1e6, train_attack=BETA(0.2, steps=3, seed=5))
    hard = BETAAT(net=plain_net(), eps=0.2, train_attack=BETA(0.2, steps=3, seed=5))
    assert sharp.training_loss((x, y)).item() == pytest.approx(hard.training_loss((x, y)).item(), rel=1e-5)

    attack = BETA(0.2, steps=3, seed=5)
    flat = SBETAAT(net=plain_net(), eps=0.2, mu=1e-6, train_attack=attack)
    result = attack.run(flat.net, x, y)
    ce = cross_entropy(flat.net(result.per_target_x.flatten(0, 1)), y.repeat_interleave(3))
    assert flat.training_loss((x, y)).item() == pytest.approx(ce.mean().item(), rel=1e-5)


def test_beta_at_needs_a_beta_attack():
    with pytest.raises(ConfigError, match="train_attack.*BETA"):
        BETAAT(net=plain_net(), train_attack=PGD(steps=2))
    with pytest.raises(ConfigError, match="model.mu"):
        SBETAAT(net=plain_net(), mu=-1.0)
    with pytest.raises(ConfigError, match="model.beta"):
        TRADES(net=plain_net(), beta=float("nan"))


def test_default_attacks_follow_the_module_threat_model():
    for cls in (TRADES, MART, BETAAT, SBETAAT):
        model = cls(net=plain_net(), eps=0.1, norm="2")
        assert model.train_attack.eps == 0.1 and model.train_attack.norm == "2"


@pytest.mark.parametrize("cls", [TRADES, MART, BETAAT, SBETAAT])
def test_each_method_fits_and_validates_with_batchnorm(cls):
    data = TinyData()
    net = nn.Sequential(*list(bn_net()))
    model = cls(net=net, eps=0.1, eval_attack=PGD(steps=2))
    trainer(limit_train_batches=2, limit_val_batches=1).fit(model, datamodule=data)
    metrics = trainer_metrics = model.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and "val/robust_acc" in trainer_metrics
