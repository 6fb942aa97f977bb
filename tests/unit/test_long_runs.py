"""Issue 14, first part: a diverged loss stops the fit with one message (or skips the batch), checkpoints
carry the random streams, and they load safely (weights_only)."""

from __future__ import annotations

import csv
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


def _fit_config(save_dir: Path, wandb: bool, ckpt_path: str):
    """A parsed ``fit`` config (Namespace) with a CSV logger and optionally a W&B logger."""
    from jsonargparse import Namespace

    loggers = [
        Namespace(
            class_path="lightning.pytorch.loggers.CSVLogger",
            init_args=Namespace(save_dir=str(save_dir), name="run", version=None),
        )
    ]
    if wandb:
        loggers.append(
            Namespace(
                class_path="lightning.pytorch.loggers.WandbLogger",
                init_args=Namespace(save_dir=str(save_dir), id=None),
            )
        )
    return Namespace(ckpt_path=ckpt_path, trainer=Namespace(logger=loggers, default_root_dir=None))


def test_checkpoints_record_the_wandb_run_id(mnist_root, tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    torch.manual_seed(0)
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="resume_test")
    t = Trainer(
        max_epochs=1,
        logger=logger,
        default_root_dir=str(tmp_path),
        enable_progress_bar=False,
        inference_mode=False,
        limit_train_batches=2,
    )
    t.fit(ERM(net=MLP(hidden=[8])), datamodule=data(mnist_root))
    saved = torch.load(Path(t.checkpoint_callback.dirpath) / "last.ckpt", weights_only=True)
    assert saved["wandb_id"] == logger.version and saved["wandb_id"]


def test_resume_resolution_picks_the_latest_run_and_its_wandb_id(tmp_path, capsys):
    from lit_robust.resume import resolve_resume

    for version, wandb_id in ((0, "first"), (1, "second")):
        folder = tmp_path / "run" / f"version_{version}" / "checkpoints"
        folder.mkdir(parents=True)
        torch.save(
            {"epoch": version, "global_step": 6 * version + 6, "wandb_id": wandb_id}, folder / "last.ckpt"
        )
    (tmp_path / "run" / "version_2").mkdir()  # a run that died before its first checkpoint
    config = _fit_config(tmp_path, wandb=True, ckpt_path="last")
    resolve_resume(config)
    assert config.ckpt_path == str(tmp_path / "run" / "version_1" / "checkpoints" / "last.ckpt")
    csv_logger, wandb_logger = config.trainer.logger
    assert csv_logger.init_args.version == 1 and csv_logger.class_path == "lit_robust.loggers.CSVLogger"
    assert wandb_logger.init_args.id == "second" and wandb_logger.init_args.resume == "allow"
    assert f"resuming {config.ckpt_path}: epoch 1, global step 12" in capsys.readouterr().err


def test_the_csv_log_is_continued_without_the_rows_after_the_checkpoint(tmp_path):
    from lit_robust.loggers import CSVLogger, drop_rows_from

    first = CSVLogger(save_dir=str(tmp_path), name="run", version=0)
    for step in range(10):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.save()
    assert drop_rows_from(Path(first.log_dir) / "metrics.csv", 6) == 4  # steps 6..9 logged after the ckpt
    second = CSVLogger(save_dir=str(tmp_path), name="run", version=0)  # Lightning's would delete the file
    for step in range(6, 8):
        second.log_metrics({"train/loss": float(step), "val/acc": 0.5}, step=step)
    second.save()
    with open(Path(first.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(8))
    assert rows[7]["val/acc"] == "0.5" and rows[0]["val/acc"] == ""


def _log_beside(folder: str, writer: int, start, saves: int) -> None:
    """One of two processes logging into the same run folder: every save brings a new column."""
    from lit_robust.loggers import CSVLogger

    logger = CSVLogger(save_dir=folder, name="run", version=0)
    start.wait()
    for i in range(saves):
        logger.log_metrics({f"eval{writer}/k{i}": float(i)}, step=1000 * writer + i)
        logger.save()


def test_two_processes_logging_into_one_run_lose_no_row(tmp_path):
    """``evaluate`` of a run's checkpoint continues the run's metrics.csv, and scripts/mnist_long.py runs two
    chunks at once: each new column rewrote the file, and a rewrite that read the file while the other
    process had just truncated it for its own lost the run's training rows (seen in a test beside the
    evaluation: the fit's metrics.csv held one evaluation row). Both writers keep every row now."""
    import multiprocessing

    from lit_robust.loggers import CSVLogger

    fit = CSVLogger(save_dir=str(tmp_path), name="run", version=0)
    for step in range(20):
        fit.log_metrics({"train/loss": float(step)}, step=step)
    fit.save()
    context = multiprocessing.get_context("fork")
    start, saves = context.Barrier(2), 40
    writers = [context.Process(target=_log_beside, args=(str(tmp_path), w, start, saves)) for w in (1, 2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    assert [w.exitcode for w in writers] == [0, 0]
    with open(Path(fit.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    steps = sorted(int(r["step"]) for r in rows)
    assert steps == [*range(20), *range(1000, 1000 + saves), *range(2000, 2000 + saves)]
    assert [r["train/loss"] for r in rows if int(r["step"]) < 20] == [str(float(s)) for s in range(20)]
    assert all(r[f"eval2/k{saves - 1}"] == "" for r in rows if int(r["step"]) < 2000 + saves - 1)


class NaNTerm(ERM):
    """ERM through ``loss_from_terms`` whose second term is NaN from global step 1."""

    def training_loss(self, batch):
        x, y = batch
        ce = torch.nn.functional.cross_entropy(self(x), y, reduction="none")
        bad = ce * float("nan") if self.global_step >= 1 else ce * 0
        return self.loss_from_terms({"natural": ce, "robust": bad})


class NaNGradient(ERM):
    """A finite loss (0 at the first layer's sqrt(0)) whose gradient is NaN from global step 1."""

    def training_loss(self, batch):
        loss = super().training_loss(batch)
        if self.global_step < 1:
            return loss
        w = next(self.net.parameters())
        return loss + torch.sqrt(w.sum() * 0).clamp_min(0)


def test_the_divergence_message_names_each_loss_term(mnist_root, tmp_path):
    torch.manual_seed(0)
    with pytest.raises(TrainingDivergedError) as info:
        trainer(tmp_path, epochs=1).fit(NaNTerm(net=MLP(hidden=[8])), datamodule=data(mnist_root))
    message = str(info.value)
    assert "the training loss is nan (terms: natural 2." in message and "robust nan)" in message
    assert "at global step 1 (epoch 0)" in message


def test_a_nonfinite_gradient_stops_or_is_skipped(mnist_root, tmp_path):
    torch.manual_seed(0)
    with pytest.raises(
        TrainingDivergedError, match=r"the gradient of net\..* is not finite at global step 1"
    ):
        trainer(tmp_path, epochs=1).fit(NaNGradient(net=MLP(hidden=[8])), datamodule=data(mnist_root))
    skip = NaNGradient(net=MLP(hidden=[8]), nonfinite="skip")
    trainer(tmp_path / "skip", epochs=1, enable_checkpointing=False).fit(skip, datamodule=data(mnist_root))
    assert skip.skipped_batches == 5  # steps 1..5 of 6
    assert all(torch.isfinite(p).all() for p in skip.parameters())


class NaNNet(torch.nn.Module):
    """Logits (and so input gradients) NaN: any gradient attack's output would be NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(784, 10)

    def forward(self, x):
        return self.linear(x.flatten(1)) * float("nan")


def test_an_attack_with_nonfinite_output_is_refused_not_trained_on(mnist_root, tmp_path):
    from lit_robust.errors import NonFiniteAttackError

    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    attack = PGD(eps=1.0, norm="2", steps=2, keep_best=False)  # normalised steps: a NaN gradient gives NaN
    with pytest.raises(NonFiniteAttackError, match="PGD produced non-finite inputs for 4 of 4 images"):
        attack(NaNNet(), x, y)
    model = PGDAT(net=NaNNet(), eps=1.0, norm="2", train_attack=attack, nonfinite="skip")
    before = [p.clone() for p in model.parameters()]
    trainer(tmp_path, epochs=1, enable_checkpointing=False, limit_val_batches=0).fit(
        model, datamodule=data(mnist_root)
    )
    assert model.skipped_batches == 6 and all(
        torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
    )
