"""The GPU paths, checked for correctness on CPU: attacks under the trainer's precision (bf16 autocast for
the model, fp32 for the perturbation), channels_last, torch.compile with the attacks' input gradients, and
no host-device synchronisation inside any attack's loop."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.data import DataLoader, TensorDataset

from lit_robust.attacks import APGD, BETA, FGSM, PGD, TRADESKL, CarliniWagnerL2
from lit_robust.errors import ConfigError
from lit_robust.methods import PGDAT, TRADES
from lit_robust.nets import SmallCNN


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(channels=[4, 8], hidden=16)


def batch(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


class DtypeRecorder:
    """Records the dtype of the first conv's output on every forward of ``net``."""

    def __init__(self, net: nn.Module) -> None:
        self.dtypes: list[torch.dtype] = []
        conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
        self.handle = conv.register_forward_hook(lambda m, i, out: self.dtypes.append(out.dtype))


def bf16_fit(module) -> Trainer:
    """One epoch of ``module`` on 2 batches of 16 under ``precision="bf16-mixed"`` on CPU, validating on
    the same batches; returns the trainer."""
    x, y = batch(32)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        precision="bf16-mixed",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        inference_mode=False,
    )
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    return trainer


def in_ball_and_box(x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> bool:
    return bool((x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1)


# ---------------------------------------------------------------------------------------------- precision
@pytest.mark.parametrize("attack", [PGD(0.3, steps=3), APGD(0.3, steps=3), BETA(0.3, steps=2)])
def test_attack_forward_follows_the_callers_autocast_and_the_perturbation_stays_fp32(attack):
    net = small_cnn()
    x, y = batch()
    rec = DtypeRecorder(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = attack(net, x, y)
    assert set(rec.dtypes) == {torch.bfloat16}
    assert x_adv.dtype == torch.float32 and in_ball_and_box(x, x_adv, 0.3)
    rec.dtypes.clear()
    attack(net, x, y)  # outside autocast: fp32
    assert set(rec.dtypes) == {torch.float32}


def test_precision_fp32_opts_out_of_autocast():
    net = small_cnn()
    x, y = batch()
    rec = DtypeRecorder(net)
    attack = PGD(0.3, steps=3)
    attack.precision = "fp32"  # what a method's attack_precision="fp32" sets
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = attack(net, x, y)
    assert set(rec.dtypes) == {torch.float32}
    assert in_ball_and_box(x, x_adv, 0.3)
    with pytest.raises(ConfigError, match=r"PGD.precision must be one of \['auto', 'fp32'\], got 'fp16'"):
        attack.precision = "fp16"


def test_bf16_attack_still_lowers_accuracy_like_fp32():
    """bf16 forward/backward changes the gradient's low bits, not the attack: on a net fitted to its
    batch, bf16-PGD and fp32-PGD break (nearly) the same share of points."""
    net = small_cnn()
    x, y = batch(64)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    clean = (net(x).argmax(1) == y).float().mean()
    attack = PGD(0.1, steps=10, seed=0)
    acc32 = (net(attack(net, x, y)).argmax(1) == y).float().mean()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x16 = attack(net, x, y)
    acc16 = (net(x16).argmax(1) == y).float().mean()
    assert clean > 0.9 and acc32 < clean - 0.3
    assert abs(float(acc16 - acc32)) <= 0.1


@pytest.mark.parametrize("attack_precision, expected", [("auto", torch.bfloat16), ("fp32", torch.float32)])
def test_bf16_mixed_trainer_runs_the_training_and_validation_attacks_in_its_precision(
    attack_precision, expected
):
    net = small_cnn()
    module = TRADES(net=net, eps=0.3, attack_precision=attack_precision)
    assert module.train_attack.precision == module.eval_attack.precision == attack_precision
    seen: list[torch.dtype] = []
    for attack in (module.train_attack, module.eval_attack):
        original = attack.perturb

        def perturb(*args, _original=original, **kwargs):
            rec = DtypeRecorder(net)
            try:
                return _original(*args, **kwargs)
            finally:
                rec.handle.remove()
                seen.extend(rec.dtypes)

        attack.perturb = perturb
    bf16_fit(module)
    assert seen and set(seen) == {expected}
    assert all(p.dtype == torch.float32 for p in net.parameters())  # master weights stay fp32
    assert torch.isfinite(torch.stack([p.detach().abs().sum() for p in net.parameters()])).all()


def test_attack_precision_is_validated():
    with pytest.raises(ConfigError, match="model.attack_precision must be one of"):
        PGDAT(net=small_cnn(), attack_precision="bf16")


# ---------------------------------------------------------------------------------------------- memory format
def test_channels_last_gives_the_same_logits_and_attack_step():
    x, y = batch()
    plain = PGDAT(net=small_cnn(), eps=0.3)
    fast = PGDAT(net=small_cnn(), eps=0.3, channels_last=True)
    conv = next(m for m in fast.net.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert list(fast.state_dict()) == list(plain.state_dict())
    seen: list[bool] = []
    channels_last = torch.channels_last
    conv.register_forward_pre_hook(lambda m, i: seen.append(i[0].is_contiguous(memory_format=channels_last)))
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    attack = PGD(0.3, steps=1, seed=0, random_start=False)
    torch.testing.assert_close(attack(fast.net, x, y), attack(plain.net, x, y), rtol=0, atol=1e-6)
    assert seen and all(seen)
    with pytest.raises(ConfigError, match="model.channels_last must be true or false, got 1"):
        PGDAT(net=small_cnn(), channels_last=1)


# ---------------------------------------------------------------------------------------------- torch.compile
def test_compiled_net_gives_the_same_outputs_and_attack_step():
    x, y = batch(8)
    plain = PGDAT(net=small_cnn(), eps=0.3)
    compiled = PGDAT(net=small_cnn(), eps=0.3, compile=True)
    keys = list(compiled.state_dict())
    compiled.compile_net()
    assert compiled.net._compiled_call_impl is not None
    assert list(compiled.state_dict()) == keys == list(plain.state_dict())
    plain.eval(), compiled.eval()
    torch.testing.assert_close(compiled(x), plain(x), rtol=1e-5, atol=1e-5)
    attack = PGD(0.3, steps=2, seed=0)
    x_plain, x_comp = attack(plain.net, x, y), attack(compiled.net, x, y)
    torch.testing.assert_close(x_comp, x_plain, rtol=0, atol=1e-5)
    assert in_ball_and_box(x, x_comp, 0.3)
    with pytest.raises(ConfigError, match="model.compile must be true, false or torch.compile's keyword"):
        PGDAT(net=small_cnn(), compile="yes")


# ---------------------------------------------------------------------------------------------- host syncs
_SYNCING = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "nonzero", "masked_select"}


class HostSyncs(TorchFunctionMode):
    """Counts the tensor operations that make the host wait for the device: reading a value (``item``,
    ``bool``, ``float``, ...), ``nonzero`` and boolean-mask indexing (data-dependent shapes)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _SYNCING:
            self.calls.append(name)
        elif name in ("__getitem__", "__setitem__") and len(args) > 1:
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index):
                self.calls.append(f"{name}[bool]")
        return func(*args, **(kwargs or {}))


ATTACKS = {
    "pgd": lambda s: PGD(0.3, steps=s),
    "pgd-l2-restarts-targeted": lambda s: PGD(1.0, "2", steps=s, restarts=2, targeted=True),
    "apgd-ce": lambda s: APGD(0.3, steps=s),
    "apgd-t": lambda s: APGD(0.3, steps=s, targeted=True, n_target_classes=3),
    "beta": lambda s: BETA(0.3, steps=s),
    "cw-l2": lambda s: CarliniWagnerL2(1.0, "2", steps=s),
    "trades-kl": lambda s: TRADESKL(0.3, steps=s),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_no_host_sync_inside_the_attack_loop(name):
    """A GPU attack stalls whenever the host reads a device value; the count of such reads per call must
    not grow with the number of steps (the per-call input check and the output's finiteness are all)."""
    net = small_cnn()
    x, y = batch(8)
    counts = []
    for steps in (3, 9):
        with HostSyncs() as mode:
            ATTACKS[name](steps)(net, x, y)
        counts.append(len(mode.calls))
    assert counts[0] == counts[1], f"{name}: {counts[0]} host syncs with 3 steps, {counts[1]} with 9"
    with HostSyncs() as mode:
        FGSM(0.3)(net, x, y)
    assert len(mode.calls) <= 4


def test_a_fit_with_compile_bf16_and_channels_last_trains_and_attacks():
    """The three GPU options together through a Lightning fit (training attack, validation attack): the
    weights move, stay finite and keep their fp32 dtype and checkpoint keys."""
    net = small_cnn()
    module = PGDAT(
        net=net, eps=0.3, train_attack=PGD(steps=2, keep_best=False), channels_last=True, compile=True
    )
    keys, before = list(module.state_dict()), [p.detach().clone() for p in net.parameters()]
    trainer = bf16_fit(module)
    assert module._compiled and list(module.state_dict()) == keys
    assert 0 <= float(trainer.callback_metrics["val/robust_acc"]) <= 1
    after = list(net.parameters())
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
