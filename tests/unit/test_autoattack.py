"""The official AutoAttack (pyautoattack) behind lit_robust's AutoAttack: in the ball and in [0, 1], model
untouched, at least as strong as PGD on an adversarially trained MNIST MLP, the sanity checks surfaced as
warnings, and an evaluation resumed from AutoAttack's state file keeps the points broken before."""

from __future__ import annotations

import json

import pytest
import torch

from lit_robust.attacks import PGD, AutoAttack


def accuracy(net, x, y) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def robust_mlp(mnist_mlp_at):
    net, x, y = mnist_mlp_at
    keep = torch.arange(len(y)) < 100  # 100 images: the full standard budget in seconds
    return net, x[keep], y[keep]


def test_standard_autoattack_is_in_the_ball_leaves_the_model_and_beats_pgd(robust_mlp):
    net, x, y = robust_mlp
    before = {k: v.clone() for k, v in net.state_dict().items()}
    attack = AutoAttack(eps=0.1, norm="inf")
    assert attack.standard and "official AutoAttack (pyautoattack 0.2.0" in attack.implementation
    x_adv = attack(net, x, y)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items()) and not net.training
    clean, aa, pgd = (
        accuracy(net, x, y),
        accuracy(net, x_adv, y),
        accuracy(net, PGD(0.1, steps=20)(net, x, y), y),
    )
    assert aa < clean - 0.05 and aa <= pgd + 1e-9, (clean, aa, pgd)
    assert sum(attack.last_breakdown.values()) == round((clean - aa) * len(y))


def test_l2_autoattack_stays_in_the_l2_ball(robust_mlp):
    net, x, y = robust_mlp
    x_adv = AutoAttack(eps=1.0, norm="2", steps=10, square_queries=50)(net, x[:40], y[:40])
    assert (x_adv - x[:40]).flatten(1).norm(dim=1).max() <= 1.0 + 1e-5
    assert accuracy(net, x_adv, y[:40]) < accuracy(net, x[:40], y[:40])


def test_a_resumed_evaluation_keeps_the_points_broken_before(robust_mlp, tmp_path):
    net, x, y = robust_mlp
    attack = AutoAttack(eps=0.1, steps=10, square_queries=50, state_dir=str(tmp_path))
    attack(net, x, y)
    first = attack.last_robust.clone()
    (state,) = tmp_path.glob("autoattack_*.json")
    record = json.loads(state.read_text())
    assert record["done"] == ["apgd-ce", "apgd-t", "fab-t", "square"][: len(record["done"])]
    assert record["robust"] == first.tolist()
    again = AutoAttack(eps=0.1, steps=10, square_queries=50, state_dir=str(tmp_path))
    x_again = again(net, x, y)  # nothing left to run: the official package returns the clean inputs
    assert torch.equal(x_again, x) or accuracy(net, x_again, y) >= accuracy(net, x, y) - 1e-9
    assert torch.equal(again.last_robust, first)  # the verdict comes from the state


def test_another_model_never_resumes_a_state_file(robust_mlp, tmp_path):
    """The state file is keyed by the model's weights too: evaluating a second model on the same images in
    the same folder (e.g. two runs whose best checkpoints share a name) starts afresh, and gives what an
    evaluation without state gives."""
    net, x, y = robust_mlp
    first = AutoAttack(eps=0.1, steps=10, square_queries=50, state_dir=str(tmp_path))
    first(net, x, y)
    assert first.last_robust.any()
    other = type(net)(hidden=[128])
    other.load_state_dict({k: v * 0.5 for k, v in net.state_dict().items()})  # a different, weaker model
    resumed = AutoAttack(eps=0.1, steps=10, square_queries=50, state_dir=str(tmp_path))
    resumed(other, x, y)
    fresh = AutoAttack(eps=0.1, steps=10, square_queries=50)
    fresh(other, x, y)
    assert torch.equal(resumed.last_robust, fresh.last_robust)
    assert not torch.equal(resumed.last_robust, first.last_robust)
    assert len(list(tmp_path.glob("autoattack_*.json"))) == 2


class _Quantised(torch.nn.Module):
    """Gradient masking: the input is rounded to 8 bits first, so every input gradient is zero while
    the function is almost the original one."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 255) / 255)


def test_square_beating_the_gradient_attacks_is_reported(robust_mlp):
    """The components run one call each, where AutoAttack's own Square check never fires; ours, from the
    breakdown, does: on a gradient-masked model Square breaks points the white-box attacks cannot, and
    the warning is raised, kept in ``last_warnings`` and written into the evaluation report."""
    from lit_robust.evaluation import run_attacks

    net, x, y = robust_mlp
    masked = _Quantised(net).eval()
    attack = AutoAttack(eps=0.1, steps=5, square_queries=300)
    with pytest.warns(UserWarning, match="Square \\(black-box\\) broke"):
        report = run_attacks(masked, [(x[:60], y[:60])], {"autoattack": attack})
    assert attack.last_breakdown["square"] > 0
    found = report.warnings["autoattack"]
    assert any(m.startswith("Square (black-box) broke") for m in found)
    assert any("zero gradient" in m for m in found)  # AutoAttack's own check, kept for the report too
    assert "Warnings of autoattack's sanity checks" in report.to_markdown()
    assert report.to_dict()["warnings"]["autoattack"] == report.warnings["autoattack"]


def test_the_sanity_checks_become_warnings(robust_mlp):
    net, x, y = robust_mlp

    class Softmaxed(torch.nn.Module):  # probabilities instead of logits: AutoAttack's check flags it
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x).softmax(1)

    with pytest.warns(UserWarning, match="AutoAttack's check"):
        AutoAttack(eps=0.1, steps=2, square_queries=10)(Softmaxed(net).eval(), x[:20], y[:20])


def test_square_alone_with_restarts_is_the_check_the_square_warning_asks_for(robust_mlp):
    """``components=["square"]`` runs only Square (in the ball, in [0, 1], reported as a custom AutoAttack);
    a second restart, with the same seed, keeps the first restart's points and can only add to them."""
    net, x, y = robust_mlp
    one = AutoAttack(eps=0.1, components=["square"], square_queries=100)
    two = AutoAttack(eps=0.1, components=["square"], square_queries=100, square_restarts=2)
    assert not two.standard and "components square" in two.implementation
    assert "Square 100 queries x 2 restarts" in two.implementation
    x_one, x_two = one(net, x, y), two(net, x, y)
    for x_adv in (x_one, x_two):
        assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert list(two.last_breakdown) == ["square"] and two.last_warnings == []
    assert not (two.last_robust & ~one.last_robust).any()  # what restart 1 broke stays broken
    assert int(two.last_breakdown["square"]) >= int(one.last_breakdown["square"]) > 0


def test_components_must_be_autoattack_components():
    with pytest.raises(Exception, match="AutoAttack.components must be a non-empty subset"):
        AutoAttack(components=["square", "apgd-dlr"])
    assert AutoAttack(components=["square", "apgd-ce"]).components == ("apgd-ce", "square")
