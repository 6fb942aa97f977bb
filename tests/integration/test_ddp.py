"""DDP on CPU (2 processes, gloo) against 1 process: a fit makes the same updates, and every callback
reports the same validation numbers.

Design and tolerances:

- Fit and validate run as `python -m lit_robust` subprocesses (Lightning re-launches sys.argv for rank 1,
  which inside pytest would re-run the test session).
- Fit (`test_ddp_fit_sees_the_one_process_batches`): under DDP the datamodule gives rank r the elements
  r, r+2, ... of the 1-process epoch order (`EpochSeededDistributedSampler`, which Lightning keeps), so
  2 processes at batch 8 see exactly the global batches of 1 process at batch 16, and DDP's gradient
  average over the ranks equals the 1-process batch mean. What is left is float summation order
  (per-rank batched matmuls, the gloo all-reduce), and the run is set up so that it is not amplified:
  an MLP: no BatchNorm (statistics per rank), and no max-pool, likely why the demo SmallCNN drifted
  apart (weights 5e-2 relative after 32 Adam steps, 1e-4 with SGD; the MLP 7e-7 and 1e-7). The training
  attack is L2 PGD without random start: deterministic, continuous steps (no sign() to flip on a
  near-zero input gradient), and unlike L_inf eps 0.3 it lets the net learn in 34 steps.
  Data seed 1: at data seed 0 and seed_everything 0 the 1-process order happens to equal that of
  Lightning's own DistributedSampler (both draw torch.randperm from a generator seeded with the epoch),
  so the test would not tell the two samplers apart.
  2 epochs of 264 images (17 steps each, the last one 8 images, 4 per rank) cover the epoch boundary
  (set_epoch) and a short last batch.
  Measured when written: final weights within 2.4e-7 relative (per tensor, ||a - b|| / ||a||), all
  compared metrics equal. With Lightning's DistributedSampler order instead (the previous behaviour) the
  weights differed by 0.10 to 0.67, clean accuracy by 8 and 5 images, the losses by 3e-3 to 3e-2.
  Tolerances: weights 1e-5 relative, losses 1e-4 relative (a keep_best choice of the evaluation attack
  that flips for an image on a decision boundary would move the robust loss by ~1e-3 / 100 images);
  accuracies within 1 image.
- Validate (`test_ddp_validation_equals_one_process`) isolates the reduction across ranks: one
  checkpoint, evaluated by DDP and by 1 process. The checkpoint comes from a DDP fit, which also shows
  that DDP checkpoints load in 1 process.
- 100 validation images, 50 per rank: no DistributedSampler padding. The evaluation attack is PGD-3
  without random start (deterministic), and the callbacks take "the first N images" as N/2 per rank,
  which is the same set (ranks hold images 0,2,4,... and 1,3,5,...).
- Exact up to float summation order (rel 1e-5): clean/robust accuracy (torchmetrics counts), mean
  gaps, histograms, layer spectral norms and their product (same weights, seeded
  power iteration), attack-pair lower bound, and the deterministic masking checks (clean, white-box,
  zero gradients, randomness, softmax).
- Within 1e-4 relative: the local Jacobian norms. Each image's power iteration starts from a random
  vector drawn by its position in the batch, which differs between the two layouts; after 50
  iterations the two estimates agreed to ~1e-7 when this test was written.
- Not compared: the masking checks built on random draws (random-vertex black box, PGD restarts, eps
  sweep), which see different draws for the same image in the two layouts for the same reason.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_cli import REPO, read_metrics, tiny
from test_plot import TINY_MONITORING, monitored_args

from lit_robust.cli import main

pytestmark = pytest.mark.ddp

EXACT = [
    "val/clean_acc",
    "val/robust_acc",
    "val/loss",
    "val/robust_loss",
    "val/mean_gap",
    "val/mean_gap_adv",
    "val/mean_correct_gap",
    "val/mean_correct_gap_adv",
    "lipschitz/layer_product_estimate",
    "lipschitz/attack_pair_max",
    "masking/acc_clean",
    "masking/acc_whitebox",
    "masking/zero_grad",
    "masking/randomized",
    "masking/softmax_output",
]
CLOSE = ["lipschitz/jacobian_max", "lipschitz/jacobian_mean", "lipschitz/lower_bound"]
DDP = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]


def args(mnist_root: str, tmp: Path, version: str) -> list[str]:
    return [
        *monitored_args(mnist_root, tmp, TINY_MONITORING.replace("jacobian_iters: 10", "jacobian_iters: 50")),
        "--model.init_args.eval_attack.init_args.random_start=false",
        "--data.init_args.train_subset=1024",  # 8 steps per epoch and rank at batch 64: a model that learns
        "--data.init_args.batch_size=64",
        "--model.init_args.optimizer.init_args.lr=0.005",
        f"--trainer.logger.init_args.version={version}",
    ]


def run_cli(argv: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    out = subprocess.run(
        [sys.executable, "-m", "lit_robust", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "distributed_backend=gloo" in out.stderr + out.stdout or "--trainer.devices=2" not in argv


def last_values(log_dir: Path) -> dict[str, float]:
    values: dict[str, float] = {}
    for row in read_metrics(log_dir):
        values.update({k: float(v) for k, v in row.items() if v})
    return values


@pytest.fixture(scope="module")
def runs(mnist_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    run_cli(["fit", *args(mnist_root, tmp, "ddp_fit"), *DDP])
    fit_dir = tmp / "mnist_pgd_at_demo" / "ddp_fit"
    ckpt = fit_dir / "checkpoints" / "last.ckpt"
    run_cli(["validate", *args(mnist_root, tmp, "ddp_val"), *DDP, f"--ckpt_path={ckpt}"])
    main(["validate", *args(mnist_root, tmp, "one_val"), "--trainer.devices=1", f"--ckpt_path={ckpt}"])
    return fit_dir, tmp / "mnist_pgd_at_demo" / "ddp_val", tmp / "mnist_pgd_at_demo" / "one_val"


def test_ddp_validation_equals_one_process(runs):
    _, ddp_dir, one_dir = runs
    ddp, one = last_values(ddp_dir), last_values(one_dir)
    for key in EXACT:
        assert ddp[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key
    for key in CLOSE:
        assert ddp[key] == pytest.approx(one[key], rel=1e-4), key
    layers = [k for k in one if k.startswith("lipschitz/layer/")]
    assert len(layers) == 4 and all(ddp[k] == pytest.approx(one[k], rel=1e-5) for k in layers)
    assert one["val/robust_acc"] < one["val/clean_acc"] and one["val/clean_acc"] > 0.3  # not a constant net


def test_ddp_files_written_once(runs):
    fit_dir, ddp_dir, _ = runs
    with open(fit_dir / "confidence_gap.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 10  # epochs x (clean, adv) x bins: rank 1 wrote nothing
    assert sum(int(r["count"]) for r in rows if r["epoch"] == "1" and r["kind"] == "clean") == 100
    assert sorted(p.name for p in (fit_dir / "adversarial_examples").glob("*.png")) == [
        "epoch_000.png",
        "epoch_001.png",
    ]
    summary = json.loads((fit_dir / "robust_overfitting.json").read_text())
    val = [float(r["val/robust_acc"]) for r in read_metrics(fit_dir) if r["val/robust_acc"]]
    assert len(summary["history"]) == 2 and summary["summary"]["best_robust_acc"] == pytest.approx(max(val))
    assert (ddp_dir / "adversarial_examples" / "validate_000.png").is_file()


# The same-batches fit: MLP, L2 PGD-AT (3 steps of 0.5 in eps 1.5, no random start), Adam, data seed 1.
SAME_BATCHES = [
    "--model.init_args.net=lit_robust.nets.MLP",
    "--model.init_args.net.init_args.hidden=[128,128]",
    "--model.init_args.norm=2",
    "--model.init_args.eps=1.5",
    "--model.init_args.train_attack.init_args.alpha=0.5",
    "--model.init_args.train_attack.init_args.random_start=false",
    "--model.init_args.eval_attack.init_args.eps=1.5",
    "--model.init_args.eval_attack.init_args.random_start=false",
    "--model.init_args.optimizer.init_args.lr=0.002",
    "--data.init_args.seed=1",
    "--data.init_args.train_subset=264",
    "--data.init_args.val_size=100",
    "--data.init_args.eval_batch_size=50",
    "--trainer.max_epochs=2",
    "--trainer.accelerator=cpu",
]
# replaces the demo's 300-step radius ramp, which would keep this 34-step run near eps 0
WARMUP = """
trainer:
  callbacks:
    - class_path: lit_robust.callbacks.EpsWarmup
      init_args: {warmup_steps: 16}
"""
COMPARED = ["val/clean_acc", "val/robust_acc", "val/loss", "val/robust_loss", "train/robust_acc_epoch"]


def fit_args(mnist_root: str, tmp: Path, version: str, batch_size: int) -> list[str]:
    preset = tmp / "warmup.yaml"
    preset.write_text(WARMUP)
    return [
        *tiny(mnist_root, tmp),
        f"--config={preset}",
        *SAME_BATCHES,
        f"--data.init_args.batch_size={batch_size}",
        f"--trainer.logger.init_args.version={version}",
    ]


@pytest.fixture(scope="module")
def same_batch_fits(mnist_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp_fit")
    run_cli(["fit", *fit_args(mnist_root, tmp, "one", 16), "--trainer.devices=1"])
    run_cli(["fit", *fit_args(mnist_root, tmp, "ddp", 8), *DDP])
    return tmp / "mnist_pgd_at_demo" / "one", tmp / "mnist_pgd_at_demo" / "ddp"


def epoch_values(log_dir: Path) -> dict[int, dict[str, float]]:
    """The epoch-level values of metrics.csv, by epoch."""
    values: dict[int, dict[str, float]] = {}
    for row in read_metrics(log_dir):
        epoch = values.setdefault(int(row["epoch"]), {})
        epoch.update({k: float(v) for k, v in row.items() if v and k in COMPARED})
    return values


def assert_same_fit(one_dir: Path, other_dir: Path) -> None:
    """Per-epoch metrics and final weights of two 2-epoch fits agree up to float summation order
    (tolerances in the module docstring)."""
    one, other = epoch_values(one_dir), epoch_values(other_dir)
    assert sorted(one) == sorted(other) == [0, 1]
    for epoch in one:
        assert set(one[epoch]) == set(other[epoch]) == set(COMPARED), epoch
        for key in COMPARED:
            if key.endswith("_acc") or key.endswith("_acc_epoch"):
                images = 264 if key.startswith("train") else 100
                assert other[epoch][key] == pytest.approx(one[epoch][key], abs=1.01 / images), (epoch, key)
            else:
                assert other[epoch][key] == pytest.approx(one[epoch][key], rel=1e-4), (epoch, key)
    assert one[1]["val/clean_acc"] > 0.4  # the run learned, so the weights carry its batches

    ckpts = [
        torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        for d in (one_dir, other_dir)
    ]
    assert ckpts[0]["global_step"] == ckpts[1]["global_step"] == 34  # 2 epochs x 17 optimiser steps
    weights_one, weights_other = (
        {k: v for k, v in c["state_dict"].items() if k.startswith("net.")} for c in ckpts
    )
    assert list(weights_one) == list(weights_other) and len(weights_one) == 6  # 3 linear layers
    for name, w in weights_one.items():
        diff = (weights_other[name] - w).norm() / w.norm()
        assert diff < 1e-5, (name, float(diff))


def test_ddp_fit_sees_the_one_process_batches(same_batch_fits):
    """2 processes at batch 8 make the updates of 1 process at batch 16."""
    assert_same_fit(*same_batch_fits)


@pytest.mark.parametrize(
    "hook, step, stops_at",
    [
        ("on_train_batch_start", 5, 6),
        ("on_validation_start", -1, 1),  # in the sanity check
        # as the training loader starts, in a fit without a sanity check (as every resumed fit), after
        # Lightning has installed its handlers
        ("train_dataloader", 0, 1),
    ],
    ids=["mid-epoch", "sanity-check", "loader-start"],
)
def test_sigterm_on_one_rank_stops_every_rank_at_one_step_and_resumes_exactly(
    hook, step, stops_at, same_batch_fits, mnist_root, tmp_path
):
    """SIGTERM (torchrun, SLURM preemption) reaches rank 1 only: both ranks stop after the same batch
    (rank 1 by its signal, rank 0 by the agreement), ``last.ckpt`` is written and the launching process
    exits with 143; the 2-process resume ends with the weights of the uninterrupted 2-process fit, bit
    for bit. In the sanity check and as the loader started, the signal went to Lightning's handler,
    whose broadcast inside the handler hung both ranks."""
    env = {
        **os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(REPO),
        "SIGNAL_HOOK": hook, "SIGNAL_STEP": str(step), "SIGNAL_NAME": "SIGTERM", "SIGNAL_RANK": "1",
    }  # fmt: skip
    argv = ["fit", *fit_args(mnist_root, tmp_path, "stopped", 8), *DDP]
    if hook == "train_dataloader":
        argv.append("--trainer.num_sanity_val_steps=0")
    driver = Path(__file__).with_name("signal_driver.py")
    proc = subprocess.Popen(
        [sys.executable, str(driver), *argv], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # rank 1 is a child of rank 0: a hang is ended by killing the group
    )  # fmt: skip
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        raise AssertionError(f"the ranks did not stop in 300 s:\n{proc.communicate()[1][-3000:]}") from None
    assert proc.returncode == 128 + 15, err[-3000:]
    assert f"stopped by SIGTERM at global step {stops_at} " in err  # rank 1
    assert f"stopped by a signal on another rank at global step {stops_at} " in err  # rank 0
    folder = tmp_path / "mnist_pgd_at_demo" / "stopped"
    last = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == stops_at
    run_cli([*argv, "--ckpt_path=last"])
    resumed, whole = (
        torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        for d in (folder, same_batch_fits[1])
    )
    assert resumed["global_step"] == whole["global_step"] == 34
    for name, w in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], w), name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_two_nodes(argv: list[str]) -> None:
    """``argv`` as two "nodes" on localhost: two torchrun launchers (static rendezvous on 127.0.0.1, gloo),
    one process each, ``--trainer.num_nodes=2 --trainer.devices=1``."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc_per_node=1",
                f"--node_rank={rank}",
                "--master_addr=127.0.0.1",
                f"--master_port={port}",
                "-m",
                "lit_robust",
                *argv,
                "--trainer.accelerator=cpu",
                "--trainer.strategy=ddp",
                "--trainer.num_nodes=2",
                "--trainer.devices=1",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=540)[0] for node in nodes]
    for rank, (node, out) in enumerate(zip(nodes, outputs, strict=True)):
        assert node.returncode == 0, f"node {rank}:\n{out[-3000:]}"
    assert "distributed_backend=gloo" in outputs[0] and "All distributed processes registered" in outputs[0]


def test_two_nodes_with_torchrun_and_resume_across_process_counts(same_batch_fits, mnist_root, tmp_path):
    """Epoch 0 on 2 torchrun "nodes" (batch 8 each), epoch 1 resumed in 1 process (batch 16), and the
    reverse: both end where the 1-process fit ends (weights within 1e-5, the same per-epoch metrics)."""
    one_dir, _ = same_batch_fits
    runs = tmp_path / "mnist_pgd_at_demo"
    torchrun_two_nodes(
        ["fit", *fit_args(mnist_root, tmp_path, "nodes_then_one", 8), "--trainer.max_epochs=1"]
    )
    run_cli(
        [
            "fit",
            *fit_args(mnist_root, tmp_path, "nodes_then_one", 16),
            "--trainer.devices=1",
            "--ckpt_path=last",
        ]
    )
    assert_same_fit(one_dir, runs / "nodes_then_one")
    run_cli(
        [
            "fit",
            *fit_args(mnist_root, tmp_path, "one_then_nodes", 16),
            "--trainer.devices=1",
            "--trainer.max_epochs=1",
        ]
    )
    torchrun_two_nodes(["fit", *fit_args(mnist_root, tmp_path, "one_then_nodes", 8), "--ckpt_path=last"])
    assert_same_fit(one_dir, runs / "one_then_nodes")
