"""The CLI end to end on real MNIST subsets: fit -> checkpoint -> test, configs, loggers, bad input."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_robust.cli import main

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "mnist_pgd_at_demo.yaml")


def tiny(mnist_root: str, save_dir: Path, *extra: str) -> list[str]:
    """Overrides that shrink the demo config to seconds: 2000 training images, 1 epoch, PGD-3/PGD-5."""
    return [
        "--config",
        DEMO,
        f"--data.init_args.data_dir={mnist_root}",
        "--data.init_args.train_subset=2000",
        "--data.init_args.val_size=300",
        "--data.init_args.test_subset=300",
        "--model.init_args.train_attack.init_args.steps=3",
        "--model.init_args.train_attack.init_args.alpha=0.1",
        "--model.init_args.eval_attack=lit_robust.attacks.PGD",
        "--model.init_args.eval_attack.init_args.eps=0.3",
        "--model.init_args.eval_attack.init_args.steps=5",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={save_dir}",
        *extra,
    ]


def read_metrics(log_dir: Path) -> list[dict[str, str]]:
    with open(log_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def fitted(mnist_root, tmp_path_factory):
    """One `fit` of the demo config on a 2000-image subset, shared by the tests below."""
    save_dir = tmp_path_factory.mktemp("logs")
    cli = main(["fit", *tiny(mnist_root, save_dir)])
    return cli, save_dir


def test_fit_writes_checkpoints_and_validation_metrics(fitted):
    cli, _ = fitted
    log_dir = Path(cli.trainer.log_dir)
    ckpts = sorted(p.name for p in (log_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and any(name.startswith("best-") for name in ckpts)
    assert cli.trainer.checkpoint_callback.monitor == "val/robust_acc"
    rows = read_metrics(log_dir)
    header = rows[0].keys()
    for key in (
        "val/clean_acc",
        "val/robust_acc",
        "val/robust_acc_best",
        "train/loss_epoch",
        "train/robust_acc_epoch",
    ):
        assert key in header
    val = [float(r["val/robust_acc"]) for r in rows if r["val/robust_acc"]]
    clean = [float(r["val/clean_acc"]) for r in rows if r["val/clean_acc"]]
    assert len(val) == 1 and 0.0 <= val[0] <= clean[0] <= 1.0
    assert (log_dir / "config.yaml").is_file()


def test_test_subcommand_on_the_checkpoint(fitted, mnist_root):
    cli, save_dir = fitted
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    test_cli = main(["test", *tiny(mnist_root, save_dir), f"--ckpt_path={ckpt}"])
    metrics = test_cli.trainer.callback_metrics
    assert {"test/clean_acc", "test/robust_acc"} <= metrics.keys()
    assert 0.0 <= float(metrics["test/robust_acc"]) <= float(metrics["test/clean_acc"]) <= 1.0
    assert (
        float(metrics["test/clean_acc"]) > 0.5
    )  # PGD-AT at eps 0.3 for one short epoch still learns something

    # the command line, not the hyperparameters saved in the checkpoint (eps 0.3), sets the threat model
    smaller = ["--model.init_args.eps=0.1", "--model.init_args.eval_attack.init_args.eps=0.1"]
    at_01 = main(["test", *tiny(mnist_root, save_dir), f"--ckpt_path={ckpt}", *smaller])
    assert at_01.model.eps == 0.1 and at_01.model.eval_attack.eps == 0.1
    assert torch.load(ckpt, weights_only=False)["hyper_parameters"]["eps"] == 0.3
    assert float(at_01.trainer.callback_metrics["test/robust_acc"]) > float(metrics["test/robust_acc"])


def test_validate_works_even_with_inference_mode(fitted, mnist_root, tmp_path):
    """Attacks enable grads themselves, so Lightning's inference mode cannot silently disable them."""
    cli, _ = fitted
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    args = tiny(mnist_root, tmp_path, f"--ckpt_path={ckpt}")
    plain = main(["validate", *args]).trainer.callback_metrics
    inference = main(["validate", *args, "--trainer.inference_mode=true"]).trainer.callback_metrics
    assert float(plain["val/robust_acc"]) < float(plain["val/clean_acc"])
    assert float(inference["val/robust_acc"]) == pytest.approx(float(plain["val/robust_acc"]), abs=0.02)


def test_model_eps_override_reaches_every_attack(mnist_root, tmp_path):
    # run=False: LightningCLI instantiates without a subcommand
    cli = main(
        ["--config", DEMO, "--model.init_args.eps=0.1", f"--data.init_args.data_dir={mnist_root}"], run=False
    )
    assert cli.model.eps == 0.1 and cli.model.train_attack.eps == 0.1  # the YAML's attack leaves eps open
    assert cli.model.train_attack.step_size == 0.04  # an explicit step stays
    assert cli.model.eval_attack.eps == 0.1  # default PGD-20 built from the module's eps
    assert cli.model.eval_attack.steps == 20
    assert cli.config["trainer"]["inference_mode"] is False


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_config_instantiates(config, mnist_root):
    cli = main(
        ["--config", str(REPO / "configs" / config), f"--data.init_args.data_dir={mnist_root}"], run=False
    )
    assert cli.model.eps > 0 and cli.model.eval_attack.eps == cli.model.eps
    train_attack = getattr(cli.model, "train_attack", None)
    if train_attack is not None and train_attack.norm == cli.model.norm:  # L2NNN Model 4: L_inf vs L_2
        assert train_attack.eps == cli.model.eps
    assert cli.config["trainer"]["inference_mode"] is False


def test_a_fit_puts_back_the_signal_handlers_it_found(mnist_root, tmp_path, monkeypatch):
    """The Preemption callback's SIGUSR1/SIGTERM handlers live as long as the fit: a script or notebook
    that fits in-process gets its own handlers back after a finished fit and after a preempted one (the
    preempted fit's handler, a flag nobody read, stayed installed and swallowed both signals)."""
    from lit_robust.methods.base import RobustClassifier

    signals = (signal.SIGUSR1, signal.SIGTERM)
    before = {s: signal.getsignal(s) for s in signals}
    short = [
        "--data.init_args.train_subset=512",
        "--data.init_args.batch_size=64",
        "--trainer.limit_val_batches=1",
    ]
    main(["fit", *tiny(mnist_root, tmp_path / "finished", *short)])
    assert {s: signal.getsignal(s) for s in signals} == before

    original = RobustClassifier.on_train_batch_start

    def signal_at_step_1(self, *args):
        if self.trainer.global_step == 1:
            os.kill(os.getpid(), signal.SIGUSR1)  # the fit's handler takes it: a flag, then a stop
        return original(self, *args)

    monkeypatch.setattr(RobustClassifier, "on_train_batch_start", signal_at_step_1)
    with pytest.raises(SystemExit) as stopped:
        main(["fit", *tiny(mnist_root, tmp_path / "preempted", *short)])
    assert stopped.value.code == 128 + signal.SIGUSR1
    assert {s: signal.getsignal(s) for s in signals} == before


def test_help_lists_methods_and_datamodules():
    out = subprocess.run(
        [sys.executable, "-m", "lit_robust", "fit", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    for name in (
        "lit_robust.methods.ERM",
        "lit_robust.methods.PGDAT",
        "lit_robust.data.MNIST",
        "lit_robust.data.FashionMNIST",
        "lit_robust.data.CIFAR10",
    ):
        assert name in out, name
    assert "inference_mode" in out


def test_wandb_logger_offline(mnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    args = tiny(mnist_root, tmp_path)
    args = [a for a in args if not a.startswith("--trainer.logger")]
    cli = main(
        [
            "fit",
            *args,
            "--data.init_args.train_subset=256",
            "--trainer.limit_val_batches=1",
            "--trainer.logger=lightning.pytorch.loggers.WandbLogger",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--trainer.logger.init_args.offline=true",
            "--trainer.logger.init_args.project=lit_robust_tests",
        ]
    )
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert runs, "no offline W&B run was written"
    assert "val/robust_acc" in cli.trainer.callback_metrics


# ---------------------------------------------------------------------------------------------- bad input
def run_error(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_unknown_config_key(mnist_root, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(DEMO).read_text().replace("    norm: inf\n", "    norm: inf\n    epsilon: 0.3\n", 1))
    err = run_error(["fit", "--config", str(bad)], capsys)
    assert "epsilon" in err


def test_negative_eps(mnist_root, tmp_path, capsys):
    err = run_error(
        ["fit", *tiny(mnist_root, tmp_path, "--model.init_args.eval_attack.init_args.eps=-0.1")], capsys
    )
    assert "eps must be a finite number >= 0, got -0.1" in err


def test_missing_data_dir(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    err = run_error(["fit", *tiny(str(missing), tmp_path)], capsys)
    assert str(missing) in err and "fetch_offline_data.sh" in err and "download" in err


@pytest.mark.parametrize("subcommand", ["test", "validate", "evaluate"])
def test_checkpoint_of_another_net(fitted, mnist_root, tmp_path, capsys, subcommand):
    """A checkpoint of the demo SmallCNN (16-32 channels) given to a wider net: one error naming model.net
    and the first mismatching weight, before anything runs."""
    cli, _ = fitted
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    wider = "--model.init_args.net.init_args.channels=[16,64]"
    err = run_error([subcommand, *tiny(mnist_root, tmp_path), wider, f"--ckpt_path={ckpt}"], capsys)
    assert "checkpoint does not fit model.net (SmallCNN)" in err and "net.features" in err
    assert "(64, 16, " in err and "(32, 16, " in err


def test_net_that_does_not_fit_the_data(cifar10_data, tmp_path, capsys):
    args = tiny(
        cifar10_data.root,
        tmp_path,
        "--data=lit_robust.data.CIFAR10",
        f"--data.init_args.data_dir={cifar10_data.root}",
    )
    args = [a for a in args if "subset" not in a and "val_size" not in a]
    err = run_error(["fit", *args, "--data.init_args.val_size=20"], capsys)
    assert "model.net (SmallCNN)" in err and "(3, 32, 32)" in err
