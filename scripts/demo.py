"""`make demo`: train PGD-AT and its ERM baseline on real MNIST through the CLI, test the checkpoints
selected on the validation split, and print clean and PGD-20 robust accuracy (L_inf, eps 0.3) on the
10,000 MNIST test images. About 6 minutes on 2 CPU cores.

    python scripts/demo.py [--data_dir data] [--fast]
"""

from __future__ import annotations

import argparse
import os
import shlex
import time

import torch

from lit_robust.cli import main

# The same small CNN for both, so that the comparison is about the training method only.
SMALL_CNN = ["--model.init_args.net.init_args.channels=[16,32]", "--model.init_args.net.init_args.hidden=128"]


def run(name: str, config: str, extra: list[str]) -> dict[str, float]:
    fit = ["fit", "--config", config, *extra]
    print(f"\n=== {name}: python -m lit_robust {shlex.join(fit)}", flush=True)
    start = time.perf_counter()
    cli = main(fit)
    best = cli.trainer.checkpoint_callback.best_model_path
    test = ["test", "--config", config, *extra, f"--ckpt_path={best}"]
    print(f"\n=== {name}: python -m lit_robust {shlex.join(test)}", flush=True)
    metrics = main(test).trainer.callback_metrics
    return {
        "clean": float(metrics["test/clean_acc"]),
        "robust": float(metrics["test/robust_acc"]),
        "minutes": (time.perf_counter() - start) / 60,
        "checkpoint": best,
    }


def main_demo() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--fast", action="store_true", help="5000 training images (a smoke test, ~1 min)")
    args = parser.parse_args()
    common = [
        f"--data.init_args.data_dir={args.data_dir}",
        "--data.init_args.val_size=2000",
        "--data.init_args.eval_batch_size=500",
        "--trainer.enable_progress_bar=false",
    ]
    if args.fast:
        common += ["--data.init_args.train_subset=5000", "--data.init_args.test_subset=1000"]
    results = {
        "ERM": run("ERM", "configs/mnist_erm.yaml", [*common, *SMALL_CNN, "--trainer.max_epochs=1"]),
        "PGD-AT": run("PGD-AT", "configs/mnist_pgd_at_demo.yaml", common),
    }
    n = "1000" if args.fast else "10000"
    print(
        f"\nMNIST test set ({n} images), L_inf eps = 0.3, PGD-20 (step 0.0375, random start), "
        f"checkpoints selected on the validation split; {os.cpu_count()} CPU cores, torch "
        f"{torch.__version__} with {torch.get_num_threads()} threads (the figures depend on the thread "
        "count: float summation order):"
    )
    print("| method | clean acc | PGD-20 robust acc | fit+test minutes |\n|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {100 * r['clean']:.2f}% | {100 * r['robust']:.2f}% | {r['minutes']:.1f} |")
    gap = 100 * (results["PGD-AT"]["robust"] - results["ERM"]["robust"])
    print(f"\nPGD-AT robust accuracy is {gap:.1f} points above ERM's.")


if __name__ == "__main__":
    main_demo()
