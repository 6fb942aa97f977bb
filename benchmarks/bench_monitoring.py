"""What ``callbacks/monitoring.yaml`` adds to an epoch: one epoch of ``configs/mnist_pgd_at_demo.yaml``
(PGD-AT, SmallCNN, the full 58k-image MNIST training pool, 2000 validation images) with and without the
preset, each timed around ``trainer.fit`` in this process (imports and data loading excluded).

    python benchmarks/bench_monitoring.py [--data_dir data] [--train_subset N]

Goal: the preset adds at most 10% to the epoch. Result: ``benchmarks/results/monitoring.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from _timing import write_result
from lit_robust.cli import main

GOAL = 0.10


def timed_fit(extra: list[str], data_dir: str, train_subset: int | None, root: str) -> float:
    args = ["--config", "configs/mnist_pgd_at_demo.yaml", *extra]
    args += ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.logger.init_args.save_dir", root, "--data.init_args.data_dir", data_dir]
    if train_subset is not None:
        args += ["--data.init_args.train_subset", str(train_subset)]
    cli = main(args, run=False)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return time.perf_counter() - start


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--train_subset", type=int, default=None)
    parser.add_argument("--label", default="monitoring")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        bare = timed_fit([], opts.data_dir, opts.train_subset, root)
        monitored = timed_fit(
            ["--config", "callbacks/monitoring.yaml"], opts.data_dir, opts.train_subset, root
        )
    overhead = monitored / bare - 1
    result = {
        "config": "configs/mnist_pgd_at_demo.yaml, 1 epoch",
        "train_subset": opts.train_subset,
        "epoch_s": round(bare, 2),
        "epoch_with_monitoring_s": round(monitored, 2),
        "overhead": round(overhead, 4),
        "goal": GOAL,
        "meets_goal": overhead <= GOAL,
    }
    print(result)
    print("wrote", write_result(opts.label, result))


if __name__ == "__main__":
    run()
