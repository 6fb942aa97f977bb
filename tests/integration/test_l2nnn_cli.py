"""L2NNN through the CLI on real MNIST: fit logs certified accuracy, `evaluate` reports certificates that no
attack contradicts, and the paper's ablations are plain config switches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import REPO, read_metrics

from lit_robust.cli import main
from lit_robust.nets.l2nnn_layers import MaxPool, OneSidedReLU

CONFIG = str(REPO / "configs" / "mnist_l2nnn.yaml")


def tiny(mnist_root: str, save_dir: Path, *extra: str) -> list[str]:
    return [
        "--config",
        CONFIG,
        f"--data.init_args.data_dir={mnist_root}",
        "--data.init_args.train_subset=1500",
        "--data.init_args.val_size=200",
        "--data.init_args.test_subset=100",
        "--model.init_args.net.init_args.conv_channels=[8,16]",
        "--model.init_args.net.init_args.fc=[64,16]",
        "--model.init_args.eval_attack=lit_robust.attacks.PGD",
        "--model.init_args.eval_attack.init_args.steps=5",
        "--model.init_args.optimizer.init_args.lr=0.003",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={save_dir}",
        *extra,
    ]


@pytest.fixture(scope="module")
def fitted(mnist_root, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("l2nnn")
    preset = str(REPO / "callbacks" / "l2nnn.yaml")
    return main(["fit", *tiny(mnist_root, save_dir, "--config", preset)]), save_dir


def test_fit_logs_certified_accuracy_and_gaps(fitted):
    cli, _ = fitted
    rows = [r for r in read_metrics(Path(cli.trainer.log_dir)) if r["val/clean_acc"]]
    last = rows[-1]
    assert float(last["val/clean_acc"]) > 0.6
    cert = [float(last[f"val/certified_acc@{r}"]) for r in ("0.5", "1.0", "2.0")]
    assert cert[0] >= cert[1] >= cert[2] and cert[0] <= float(last["val/clean_acc"])
    assert float(last["val/lipschitz_bound"]) == pytest.approx(1.0, abs=1e-4)
    assert float(last["val/mean_correct_gap"]) > 0
    # the callbacks/l2nnn.yaml preset adds adversarial gaps and Lipschitz bounds without clashing
    assert float(last["val/mean_gap_adv"]) < float(last["val/mean_gap"])
    assert float(last["lipschitz/lower_bound"]) <= float(last["val/lipschitz_bound"]) + 1e-4


def test_evaluate_reports_certificates_that_attacks_respect(fitted, mnist_root, tmp_path):
    """At eps = radius = 0.05, a certified point must survive every attack (a violation means a bug)."""
    cli, save_dir = fitted
    ckpt = str(Path(cli.trainer.checkpoint_callback.best_model_path).with_name("last.ckpt"))
    cw = '--attacks={"cw": {"class_path": "lit_robust.attacks.CarliniWagnerL2", "init_args": {"steps": 30}}}'
    args = tiny(mnist_root, save_dir, "--model.init_args.eps=0.05")
    main(
        [
            "evaluate",
            *args,
            f"--ckpt_path={ckpt}",
            "--suite=quick",
            cw,
            "--radii=[0.02,0.05]",
            f"--output_dir={tmp_path}",
        ]
    )
    report = json.loads((tmp_path / f"eval_{Path(ckpt).stem}.json").read_text())
    assert report["certificate"] == {"lipschitz": pytest.approx(1.0, abs=1e-4), "per_logit": True}
    per_sample = report["per_sample"]
    assert sum(per_sample["certified@0.05"]) > 0
    for i, certified in enumerate(per_sample["certified@0.05"]):
        if certified:
            assert per_sample["worst_case"][i] == 1
    assert report["certified"]["0.05"] <= report["certified"]["0.02"] <= report["accuracy"]["clean"]
    # the report checks it per image: every L_2 attack at eps 0.05 against the points certified at 0.05
    assert report["certified_but_broken"] == {"pgd-20@0.05": 0, "apgd-ce@0.05": 0, "cw@0.05": 0}
    assert report["attacks"]["cw"]["norm"] == "2" and report["attacks"]["cw"]["eps"] == 0.05
    table = (tmp_path / f"eval_{Path(ckpt).stem}.md").read_text()
    assert "Certified accuracy" in table and "gap / 2" in table
    assert "broken by an L_2 attack inside the radius: none (pgd-20@0.05, apgd-ce@0.05, cw@0.05)" in table


def test_ablations_are_config_switches(mnist_root):
    cli = main(
        [
            "--config",
            CONFIG,
            f"--data.init_args.data_dir={mnist_root}",
            "--model.init_args.weight_scheme=none",
            "--model.init_args.omega=0",
            "--model.init_args.net.init_args.pooling=max",
            "--model.init_args.net.init_args.activation=relu",
        ],
        run=False,
    )
    net = cli.model.net
    assert cli.model.omega == 0 and net.weight_scheme == "none"
    assert any(isinstance(m, MaxPool) for m in net.modules())
    assert any(isinstance(m, OneSidedReLU) for m in net.modules())
    assert net.lipschitz_certificate()[0] > 1  # no constraint: the bound is just the product of norms
