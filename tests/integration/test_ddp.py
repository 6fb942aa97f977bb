"""DDP on CPU (2 processes, gloo) against 1 process: the same validation numbers from every callback.

Design and tolerances:

- Fit and validate run as `python -m lit_robust` subprocesses (Lightning re-launches sys.argv for rank 1,
  which inside pytest would re-run the test session).
- The comparison is an evaluation (`validate`) of one checkpoint, DDP vs 1 process, because there only
  the reduction across ranks differs: a 2-process *fit* sees a different sample order
  (DistributedSampler's interleaving instead of the 1-process shuffle), so its weights differ.
  The checkpoint comes from the DDP fit, which also shows that DDP checkpoints load in 1 process.
- 100 validation images, 50 per rank: no DistributedSampler padding. The evaluation attack is PGD-3
  without random start (deterministic), and the callbacks take "the first N images" as N/2 per rank,
  which is the same set (ranks hold images 0,2,4,... and 1,3,5,...).
- Exact up to float summation order (rel 1e-5): clean/robust accuracy (torchmetrics counts), mean
  gaps, certified accuracy, histograms, layer spectral norms and their product (same weights, seeded
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
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import REPO, read_metrics
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
    "val/certified_acc@0.1",
    "val/certified_acc@0.5",
    "lipschitz/upper_bound",
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
