"""The monitoring callbacks on a tiny real-MNIST fit, each value checked against a direct computation.

One 2-epoch PGD-AT fit (256 training images, 200 validation images, a 4-8 channel SmallCNN) with every
callback is shared by the tests. Its evaluation attack is seeded (``PGD(seed=0)`` draws the same random
start for the same batch), so the tests can recompute the adversarial examples the callbacks saw.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.func import jacrev

from lit_robust.attacks import PGD
from lit_robust.callbacks import (
    AdversarialExamples,
    ConfidenceGap,
    GradientMaskingCheck,
    LipschitzEstimate,
    RobustOverfitting,
    WandbRun,
)
from lit_robust.data import MNIST
from lit_robust.diagnostics.gaps import certified_correct, confidence_gap, correct_gap
from lit_robust.diagnostics.lipschitz import layer_input_shapes, layer_product, spectral_norms
from lit_robust.errors import ConfigError
from lit_robust.methods import PGDAT
from lit_robust.nets import SmallCNN

EPS = 0.3


def make_data(root: str, train: int = 256) -> MNIST:
    return MNIST(data_dir=root, train_subset=train, val_size=200, batch_size=64, eval_batch_size=100, seed=0)


def make_model(lr: float = 1e-3, seed: int | None = 0) -> PGDAT:
    """PGD-AT on a 4-8 channel SmallCNN; the evaluation attack PGD-3 is seeded unless ``seed`` is None."""
    torch.manual_seed(0)
    return PGDAT(
        net=SmallCNN(channels=[4, 8], hidden=16),
        eps=EPS,
        train_attack=PGD(steps=2, alpha=0.15, keep_best=False),
        eval_attack=PGD(steps=3, seed=seed),
        optimizer=lambda p: torch.optim.Adam(p, lr=lr),
    )


def fit(root, tmp_path, callbacks, epochs: int = 2, model=None, train: int = 256):
    model = model if model is not None else make_model()
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(str(tmp_path), name="run"),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        num_sanity_val_steps=0,
    )
    dm = make_data(root, train)
    trainer.fit(model, datamodule=dm)
    return trainer, model, dm


def validator(callbacks, root, inference_mode: bool = False) -> Trainer:
    return Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=callbacks if isinstance(callbacks, list) else [callbacks],
        enable_progress_bar=False,
        inference_mode=inference_mode,
        default_root_dir=str(root),
    )


@pytest.fixture(scope="module")
def fitted(mnist_root, tmp_path_factory):
    """The shared fit: all five callbacks, 2 epochs."""
    cbs = {
        "overfit": RobustOverfitting(),
        "gap": ConfidenceGap(radii=[0.1, 0.5], bins=10),
        "lip": LipschitzEstimate(num_samples=20, iters=300, jacobian_iters=50),
        "mask": GradientMaskingCheck(
            num_samples=50, base_steps=3, steps_factor=2, restarts=1, random_restarts=5
        ),
        "adv": AdversarialExamples(num_images=6),
    }
    trainer, model, dm = fit(mnist_root, tmp_path_factory.mktemp("fit"), list(cbs.values()))
    model.eval()
    x, y = dm.val_dataset.tensors
    return trainer, model, dm, cbs, x, y


def metrics_rows(trainer) -> list[dict[str, str]]:
    with open(f"{trainer.log_dir}/metrics.csv") as f:
        return list(csv.DictReader(f))


def column(rows, key) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


def attack_in_batches(model, x, y, size: int = 100) -> torch.Tensor:
    """The evaluation attack as the validation loop runs it (same batches, so same seeded starts)."""
    return torch.cat(
        [model.eval_attack(model.net, xb, yb) for xb, yb in zip(x.split(size), y.split(size), strict=True)]
    )


# ------------------------------------------------------------------------------------- LipschitzEstimate
def dense_operator(layer: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix of v -> layer(v) - layer(0) at input shape ``shape`` (torch.func.jacrev at 0)."""
    zero = torch.zeros(1, *shape)

    def flat(v: torch.Tensor) -> torch.Tensor:
        return (layer(v.view(1, *shape)) - layer(zero)).flatten()

    return jacrev(flat)(torch.zeros(math.prod(shape)))


def test_layer_norms_match_the_dense_operator(fitted):
    """Power iteration on each conv (as an operator with borders, not a reshaped kernel) and linear layer
    equals sigma_max of its dense matrix; the upper bound is their product."""
    _, model, _, cbs, x, _ = fitted
    last = cbs["lip"].last
    shapes = layer_input_shapes(model.net, x[:1])
    assert set(shapes) == {"features.0", "features.3", "classifier.1", "classifier.3"}
    assert shapes["features.3"] == (4, 14, 14)
    modules = dict(model.net.named_modules())
    product = 1.0
    with torch.no_grad():
        for name, shape in shapes.items():
            exact = float(torch.linalg.matrix_norm(dense_operator(modules[name], shape), ord=2))
            got = last[f"lipschitz/layer/{name}"]
            assert got == pytest.approx(exact, rel=2e-3), name
            assert got <= exact * (1 + 1e-5), name  # power iteration approaches from below
            product *= got
        # a reshaped kernel is a different (wrong) number for the first conv
        kernel = modules["features.0"].weight.flatten(1)
        assert float(torch.linalg.matrix_norm(kernel, ord=2)) != pytest.approx(
            last["lipschitz/layer/features.0"]
        )
    assert last["lipschitz/layer_product_estimate"] == pytest.approx(product, rel=1e-6)


def test_lower_bounds_match_direct_computation(fitted):
    _, model, _, cbs, x, y = fitted
    last, net = cbs["lip"].last, model.net
    xs, ys = x[:20], y[:20]
    with torch.no_grad():
        exact = torch.stack(
            [
                torch.linalg.matrix_norm(jacrev(lambda v: net(v[None])[0])(xi).reshape(10, -1), ord=2)
                for xi in xs
            ]
        )
    assert last["lipschitz/jacobian_max"] == pytest.approx(float(exact.max()), rel=1e-3)
    assert last["lipschitz/jacobian_mean"] == pytest.approx(float(exact.mean()), rel=1e-3)
    x_adv = model.eval_attack(net, xs, ys)
    with torch.no_grad():
        ratio = (net(x_adv) - net(xs)).norm(dim=1) / (x_adv - xs).flatten(1).norm(dim=1)
    assert last["lipschitz/attack_pair_max"] == pytest.approx(float(ratio.max()), rel=1e-5)
    assert last["lipschitz/lower_bound"] == max(
        last["lipschitz/jacobian_max"], last["lipschitz/attack_pair_max"]
    )
    assert 0 < last["lipschitz/lower_bound"] <= last["lipschitz/layer_product_estimate"]


# ------------------------------------------------------------------------------------- ConfidenceGap
def test_confidence_gap_values(fitted):
    trainer, model, _, cbs, x, y = fitted
    last = cbs["gap"].last
    with torch.no_grad():
        logits = model.net(x)
        adv_logits = model.net(attack_in_batches(model, x, y))
    assert last["val/mean_gap"] == pytest.approx(float(confidence_gap(logits).mean()), rel=1e-5)
    assert last["val/mean_correct_gap"] == pytest.approx(float(correct_gap(logits, y).mean()), rel=1e-5)
    assert last["val/mean_gap_adv"] == pytest.approx(float(confidence_gap(adv_logits).mean()), rel=1e-5)
    assert last["val/mean_correct_gap_adv"] == pytest.approx(
        float(correct_gap(adv_logits, y).mean()), rel=1e-5
    )
    assert last["val/mean_correct_gap_adv"] < last["val/mean_correct_gap"]  # the attack shrinks correct gaps
    # SmallCNN declares no proven certificate: nothing is called certified (the layer product is no proof)
    assert not [k for k in last if "certified" in k]
    # histogram: all 200 validation images, counts as torch.histogram of the direct gaps
    hist, edges = cbs["gap"].last_histogram["clean"]
    assert int(hist.sum()) == 200
    direct = torch.histogram(confidence_gap(logits).float(), bins=edges).hist
    assert torch.equal(hist, direct)
    with open(f"{trainer.log_dir}/confidence_gap.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["epoch"] for r in rows} == {"0", "1"} and {r["kind"] for r in rows} == {"clean", "adv"}
    assert sum(int(r["count"]) for r in rows if r["epoch"] == "1" and r["kind"] == "adv") == 200
    assert column(metrics_rows(trainer), "val/mean_gap")[-1] == pytest.approx(last["val/mean_gap"], rel=1e-6)


class Certified(nn.Module):
    """A net that declares a certificate (as an L2NNN does): the callback must use it, not the layers."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def lipschitz_certificate(self) -> tuple[float, bool]:
        return 0.25, True


def test_confidence_gap_uses_the_net_certificate(fitted, mnist_root, tmp_path):
    _, model, dm, _, x, y = fitted
    net = Certified(model.net)
    module = PGDAT(net=net, eps=EPS, eval_attack=PGD(steps=1, seed=0))
    cb = ConfidenceGap(radii=[0.2, 1.0], adversarial=False)
    trainer = validator(cb, tmp_path)
    trainer.validate(module, datamodule=dm, verbose=False)
    with torch.no_grad():
        logits = net(x)
    expected = certified_correct(logits, y, [0.2, 1.0], 0.25, per_logit=True).float().mean(0)  # Lemma 6
    assert cb.last["val/certified_lipschitz"] == 0.25
    assert cb.last["val/certified_acc@0.2"] == pytest.approx(float(expected[0]))
    assert cb.last["val/certified_acc@1.0"] == pytest.approx(float(expected[1]))
    assert "val/mean_gap_adv" not in cb.last


def test_layer_norm_product_is_not_certified():
    """Issue 13 Part 1.3: the product of power-iteration layer norms is no proof, so it never gives a
    certified radius. For a residual map f(x) = x + W x the product ||W|| is far below L(f) = ||I + W||."""
    with pytest.raises(ConfigError, match="use_upper_bound.*lipschitz_certificate"):
        ConfidenceGap(use_upper_bound=True)

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.branch = nn.Linear(4, 4, bias=False)
            with torch.no_grad():
                self.branch.weight.copy_(0.5 * torch.eye(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1) + self.branch(x.flatten(1))

    net = Residual()
    product = layer_product(spectral_norms(net, torch.zeros(1, 4), iters=50))
    assert product == pytest.approx(0.5, rel=1e-5)
    exact = float(torch.linalg.matrix_norm(torch.eye(4) + net.branch.weight.detach(), ord=2))
    assert exact == pytest.approx(1.5) and product < exact


# ------------------------------------------------------------------------------------- RobustOverfitting
def test_robust_overfitting_tracks_best_and_last(fitted):
    trainer, _, _, cbs, _, _ = fitted
    cb = cbs["overfit"]
    val = column(metrics_rows(trainer), "val/robust_acc")
    train = column(metrics_rows(trainer), "train/robust_acc_epoch")
    assert [r["val_robust_acc"] for r in cb.history] == pytest.approx(val) and len(val) == 2
    best_epoch = max(range(2), key=lambda e: (val[e], -e))
    s = cb.summary()
    assert s["best_epoch"] == best_epoch and s["best_robust_acc"] == pytest.approx(max(val))
    assert s["best_minus_last"] == pytest.approx(max(val) - val[-1])
    assert s["train_minus_val"] == pytest.approx(train[-1] - val[-1])
    assert float(trainer.callback_metrics["overfit/best_robust_acc"]) == pytest.approx(max(val))
    saved = json.loads(open(f"{trainer.log_dir}/robust_overfitting.json").read())
    assert saved["summary"]["best_epoch"] == best_epoch and len(saved["history"]) == 2
    assert "| val_robust_acc |" in open(f"{trainer.log_dir}/robust_overfitting.md").read()


def test_robust_overfitting_early_stop(mnist_root, tmp_path):
    """lr = 0 and a seeded evaluation attack: val robust accuracy never improves, so patience 1 stops
    training after the second validated epoch."""
    cb = RobustOverfitting(patience=1)
    trainer, _, _ = fit(mnist_root, tmp_path, [cb], epochs=5, model=make_model(lr=0.0), train=64)
    assert len(cb.history) == 2 and trainer.current_epoch == 2
    assert cb.history[0]["val_robust_acc"] == cb.history[1]["val_robust_acc"]


def test_monitoring_does_not_change_the_run(mnist_root, tmp_path):
    """With an unseeded evaluation attack (global RNG), the callbacks' extra attacks run under their own
    RNG state: the same fit without them logs the same training losses and validation accuracies."""
    cbs = [ConfidenceGap(radii=[]), AdversarialExamples(num_images=2)]
    watched, _, _ = fit(mnist_root, tmp_path / "a", cbs, model=make_model(seed=None), train=128)
    plain, _, _ = fit(mnist_root, tmp_path / "b", [], model=make_model(seed=None), train=128)
    for key in ("train/loss_epoch", "val/clean_acc", "val/robust_acc", "val/robust_loss"):
        assert column(metrics_rows(plain), key) == column(metrics_rows(watched), key), key


def test_callbacks_work_under_inference_mode(fitted, tmp_path):
    """`--trainer.inference_mode=true` must not break the callbacks' gradients: same values as without."""
    _, model, dm, _, _, _ = fitted
    results = []
    for inference in (False, True):
        cbs = [
            ConfidenceGap(radii=[0.1]),
            LipschitzEstimate(num_samples=10, iters=20, jacobian_iters=10),
            GradientMaskingCheck(num_samples=20, base_steps=2, steps_factor=2, restarts=1, random_restarts=2),
            AdversarialExamples(num_images=2),
        ]
        trainer = validator(cbs, tmp_path / str(inference), inference_mode=inference)
        trainer.validate(model, datamodule=dm, verbose=False)
        results.append({**cbs[0].last, **cbs[1].last, **cbs[2].last})
    assert results[0].keys() == results[1].keys()
    for key, value in results[0].items():
        assert results[1][key] == pytest.approx(value, rel=1e-6), key


class CountingPGD(PGD):
    """PGD that counts its calls."""

    calls = 0

    def __call__(self, model, x, y):
        type(self).calls += 1
        return super().__call__(model, x, y)


def test_validation_attacks_each_batch_once(fitted, tmp_path):
    """Issue 13 Part 2.1: the four monitors reuse the validation step's adversarial batch: the evaluation
    attack runs once per validation batch (2 batches of 100), not once more per callback."""
    _, model, dm, _, _, _ = fitted
    counting = CountingPGD(steps=3, seed=0).bind(model.eps, model.norm)
    module = PGDAT(net=model.net, eps=EPS, eval_attack=counting)
    cbs = [
        ConfidenceGap(radii=[0.1]),
        LipschitzEstimate(num_samples=10, iters=5, jacobian_iters=5),
        GradientMaskingCheck(num_samples=20, base_steps=2, steps_factor=2, restarts=1, random_restarts=2),
        AdversarialExamples(num_images=2),
    ]
    CountingPGD.calls = 0
    validator(cbs, tmp_path).validate(module, datamodule=dm, verbose=False)
    assert CountingPGD.calls == 2
    # and what they report is what a re-run of the same (seeded) attack gives
    x, y = dm.val_dataset.tensors
    with torch.no_grad():
        adv = model.net(attack_in_batches(module, x, y))
    assert cbs[0].last["val/mean_gap_adv"] == pytest.approx(float(confidence_gap(adv).mean()), rel=1e-5)


# ------------------------------------------------------------------------------------- GradientMaskingCheck
def test_gradient_masking_values_on_a_plain_net(fitted):
    _, model, _, cbs, x, y = fitted
    v, net = cbs["mask"].last, model.net
    xs, ys = x[:50], y[:50]
    with torch.no_grad():
        clean = net(xs).argmax(1) == ys
        white = net(model.eval_attack(net, xs, ys)).argmax(1) == ys
        strong = PGD(eps=EPS, steps=6, restarts=1, seed=0)
        more = (net(strong(net, xs, ys)).argmax(1) == ys) & white
        sweep = [net(PGD(eps=f * EPS, steps=3, seed=0)(net, xs, ys)).argmax(1) == ys for f in (0.5, 1.0, 1.5)]
    assert v["acc_clean"] == pytest.approx(float(clean.float().mean()))
    assert v["acc_whitebox"] == pytest.approx(float(white.float().mean()))
    assert v["acc_more_steps"] == pytest.approx(float(more.float().mean()))
    for factor, correct in zip(("0.5", "1", "1.5"), sweep, strict=True):
        assert v[f"acc_eps_x{factor}"] == pytest.approx(float(correct.float().mean()))
    for flag in ("zero_grad", "softmax_output", "randomized"):
        assert v[f"flag_{flag}"] == 0.0, flag
    assert v["num_flags"] == sum(v[k] for k in v if k.startswith("flag_"))


class Masked(nn.Module):
    """Deliberately broken nets: softmax outputs, dropout at eval time, or quantised inputs."""

    def __init__(self, net: nn.Module, kind: str) -> None:
        super().__init__()
        self.net, self.kind = net, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "quantised":
            x = torch.round(x * 2) / 2  # zero gradient almost everywhere
        out = self.net(x)
        if self.kind == "softmax":
            return out.softmax(1)
        if self.kind == "random":
            return out + 0.5 * torch.randn_like(out)
        return out


@pytest.mark.parametrize(
    ("kind", "flag", "message"),
    [
        ("softmax", "softmax_output", "probabilities"),
        ("random", "randomized", "randomized"),
        ("quantised", "zero_grad", "zero input gradient"),
    ],
)
def test_gradient_masking_flags_broken_nets(fitted, kind, flag, message, tmp_path):
    _, model, dm, _, _, _ = fitted
    module = PGDAT(net=Masked(model.net, kind), eps=EPS, eval_attack=PGD(steps=3, seed=0))
    cb = GradientMaskingCheck(num_samples=50, base_steps=3, steps_factor=2, restarts=1, random_restarts=5)
    trainer = validator(cb, tmp_path)
    with pytest.warns(UserWarning, match=message):
        trainer.validate(module, datamodule=dm, verbose=False)
    assert cb.last[f"flag_{flag}"] == 1.0
    assert float(trainer.callback_metrics[f"masking/flag_{flag}"]) == 1.0
    if kind == "quantised":
        assert cb.last["zero_grad"] > 0.9


# ------------------------------------------------------------------------------------- AdversarialExamples
def test_adversarial_examples_grid(fitted):
    trainer, model, _, cbs, x, y = fitted
    last = cbs["adv"].last
    pngs = sorted(p.name for p in (last["path"].parent).glob("*.png"))
    assert pngs == ["epoch_000.png", "epoch_001.png"]
    assert last["path"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert torch.equal(last["x"], x[:6]) and torch.equal(last["y"], y[:6])
    delta = last["x_adv"] - last["x"]
    assert float(delta.abs().max()) <= EPS + 1e-6 and float(delta.abs().max()) > 0
    assert 0 <= float(last["x_adv"].min()) and float(last["x_adv"].max()) <= 1
    with torch.no_grad():
        assert torch.equal(last["pred_adv"], model.net(last["x_adv"]).argmax(1))
        assert torch.equal(last["pred"], model.net(x[:6]).argmax(1))


# ------------------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    ("factory", "name"),
    [
        (lambda: RobustOverfitting(patience=0), "RobustOverfitting.patience"),
        (lambda: RobustOverfitting(min_delta=-1), "RobustOverfitting.min_delta"),
        (lambda: ConfidenceGap(radii=[1.0, -0.5]), "ConfidenceGap.radii[1]"),
        (lambda: ConfidenceGap(bins=0), "ConfidenceGap.bins"),
        (lambda: ConfidenceGap(radii=0.5), "ConfidenceGap.radii"),
        (lambda: ConfidenceGap(attack="pgd"), "ConfidenceGap.attack"),
        (lambda: LipschitzEstimate(every_n_epochs=0), "LipschitzEstimate.every_n_epochs"),
        (lambda: LipschitzEstimate(iters=1.5), "LipschitzEstimate.iters"),
        (lambda: GradientMaskingCheck(eps_factors=[2.0, 1.0]), "GradientMaskingCheck.eps_factors"),
        (lambda: GradientMaskingCheck(tolerance=math.nan), "GradientMaskingCheck.tolerance"),
        (lambda: AdversarialExamples(num_images=0), "AdversarialExamples.num_images"),
        (lambda: WandbRun(summaries={"val/robust_acc": "best-ever"}), "WandbRun.summaries"),
        (lambda: WandbRun(watch="weights"), "WandbRun.watch"),
    ],
)
def test_bad_arguments_name_the_argument(factory, name):
    with pytest.raises(ConfigError, match=name.replace("[", r"\[").replace("]", r"\]")):
        factory()
