"""What ``callbacks/monitoring.yaml`` adds to an epoch of ``configs/mnist_pgd_at_demo.yaml`` (PGD-AT,
SmallCNN, the full 58k-image MNIST training pool, 2000 validation images under PGD-20).

The preset only acts on validation, so its cost is measured there, where it is not drowned by the
run-to-run noise of a 3-minute training epoch (a few percent on this machine): one bare 1-epoch fit gives
the epoch time T and a trained model; ``trainer.validate`` on that model is then timed without and with the
preset (best of ``--repeats``), and

    overhead = (validate with preset - validate without) / T

``--fit_pair`` also times a whole 1-epoch fit with the preset (the direct but noisy comparison). Imports and
data loading are outside every timer.

    python benchmarks/bench_monitoring.py [--data_dir data] [--repeats 2] [--fit_pair] [--label monitoring]

Goal: overhead <= 10%. Result: ``benchmarks/results/{label}.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _timing import write_result

from lit_robust.cli import main

GOAL = 0.10
PRESET = ["--config", "callbacks/monitoring.yaml"]


def build(extra: list[str], data_dir: str, root: str):
    args = ["--config", "configs/mnist_pgd_at_demo.yaml", *extra]
    args += ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.logger.init_args.save_dir", root, "--data.init_args.data_dir", data_dir]
    return main(args, run=False)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fit_pair", action="store_true")
    parser.add_argument("--label", default="monitoring")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        bare = build([], opts.data_dir, root)
        epoch = timed(lambda: bare.trainer.fit(bare.model, datamodule=bare.datamodule))
        monitored = build(PRESET, opts.data_dir, root)

        def validate(cli) -> float:
            return timed(lambda: cli.trainer.validate(bare.model, datamodule=cli.datamodule, verbose=False))

        val_bare = min(validate(bare) for _ in range(opts.repeats))
        val_monitored = min(validate(monitored) for _ in range(opts.repeats))
        result = {
            "config": "configs/mnist_pgd_at_demo.yaml, 1 epoch, + callbacks/monitoring.yaml",
            "epoch_s": round(epoch, 2),
            "validate_s": round(val_bare, 2),
            "validate_with_monitoring_s": round(val_monitored, 2),
            "overhead": round((val_monitored - val_bare) / epoch, 4),
            "goal": GOAL,
        }
        if opts.fit_pair:
            fit = build(PRESET, opts.data_dir, root)
            result["epoch_with_monitoring_s"] = round(
                timed(lambda: fit.trainer.fit(fit.model, datamodule=fit.datamodule)), 2
            )
            result["fit_pair_overhead"] = round(result["epoch_with_monitoring_s"] / epoch - 1, 4)
    result["meets_goal"] = result["overhead"] <= GOAL
    print(result)
    print("wrote", write_result(opts.label, result))


if __name__ == "__main__":
    run()
