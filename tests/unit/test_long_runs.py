"""Issue 14, first part: a diverged loss stops the fit with one message (or skips the batch), checkpoints
carry the random streams, and they load safely (weights_only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from lit_robust.attacks import PGD
from lit_robust.checkpoint import TRUST_ENV, read_checkpoint, set_rng_states
from lit_robust.data import MNIST
from lit_robust.errors import ConfigError, TrainingDivergedError
from lit_robust.methods import ERM, PGDAT
from lit_robust.nets import MLP


def data(root: str) -> MNIST:
    return MNIST(data_dir=root, train_subset=192, val_size=64, batch_size=32, eval_batch_size=64, seed=0)


def trainer(tmp_path: Path, epochs: int, **kw) -> Trainer:
    return Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        default_root_dir=str(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        deterministic=True,
        **kw,
    )


class NaNAfter(ERM):
    """ERM whose loss is NaN from global step ``at`` on (a diverged run, made on purpose)."""

    def __init__(self, at: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.at = at

    def training_loss(self, batch):
        loss = super().training_loss(batch)
        return loss * float("nan") if self.global_step >= self.at else loss


def test_a_nonfinite_loss_stops_the_fit_naming_step_and_checkpoint(mnist_root, tmp_path):
    torch.manual_seed(0)
    model = NaNAfter(at=7, net=MLP(hidden=[16]))  # 6 steps per epoch: epoch 0 ends with a checkpoint
    t = trainer(tmp_path, epochs=3)
    with pytest.raises(TrainingDivergedError) as info:
        t.fit(model, datamodule=data(mnist_root))
    message = str(info.value)
    assert "NaNAfter: the training loss is nan at global step 7 (epoch 1)" in message
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert f"The last good checkpoint is {last}" in message and "nonfinite=skip" in message
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 6  # written after epoch 0, untouched by the diverged step
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_skip_mode_skips_and_counts_nonfinite_batches(mnist_root, tmp_path):
    torch.manual_seed(0)
    model = NaNAfter(at=4, net=MLP(hidden=[16]), nonfinite="skip")
    trainer(tmp_path, epochs=1, enable_checkpointing=False).fit(model, datamodule=data(mnist_root))
    assert model.skipped_batches == 2  # steps 4 and 5 of 6
    assert all(torch.isfinite(v).all() for v in model.net.state_dict().values())
    # a skipped batch changes nothing: with every loss NaN the weights stay where they started
    torch.manual_seed(0)
    frozen = NaNAfter(at=0, net=MLP(hidden=[16]), nonfinite="skip")
    before = {k: v.clone() for k, v in frozen.net.state_dict().items()}
    trainer(tmp_path, epochs=1, enable_checkpointing=False).fit(frozen, datamodule=data(mnist_root))
    assert frozen.skipped_batches == 6
    assert all(torch.equal(v, before[k]) for k, v in frozen.net.state_dict().items())


def test_checkpoints_carry_the_random_streams_and_load_safely(mnist_root, tmp_path):
    """Every checkpoint holds the global RNG streams (the attacks' random starts draw from torch's) and
    loads with weights_only=True (no pickled objects: attacks stay out of the hyperparameters)."""
    torch.manual_seed(0)
    model = PGDAT(net=MLP(hidden=[16]), eps=0.3, train_attack=PGD(steps=1, keep_best=False))
    trainer(tmp_path, epochs=1).fit(model, datamodule=data(mnist_root))
    torch.manual_seed(5)
    expected = torch.get_rng_state()
    saved = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert set(saved["rng_states"]) >= {"python", "numpy", "torch"}
    assert "train_attack" not in saved["hyper_parameters"]
    set_rng_states(saved["rng_states"])
    assert not torch.equal(torch.get_rng_state(), expected)
    assert torch.equal(torch.get_rng_state(), saved["rng_states"]["torch"])


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_whose_unpickling_runs_code_is_refused(tmp_path, monkeypatch):
    exploit = Exploit()
    exploit.marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": exploit}, path)
    with pytest.raises(ConfigError, match=rf"--ckpt_path: '{path}' holds more than tensors .* {TRUST_ENV}=1"):
        read_checkpoint(path)
    assert not exploit.marker.exists()
