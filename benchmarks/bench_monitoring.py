"""What ``callbacks/monitoring.yaml`` adds to an epoch of ``configs/mnist_pgd_at_demo.yaml`` (PGD-AT,
SmallCNN, 2000 validation images under PGD-20; the config trains on the full 58k-image pool).

The preset only acts on validation, so its cost is measured there, where it is not drowned by the
run-to-run noise of a training epoch: a bare 1-epoch fit on ``--train_subset`` images gives the training
time per image and a trained model; ``trainer.validate`` on that model is then timed without and with the
preset, in interleaved rounds (median), and

    overhead = (validate with preset - validate without) / T,   T = the config's full epoch:
    T = (fit time - validate without) * 58000 / train_subset + validate without

(training time scales with the number of batches). Imports and data loading are outside every timer.

    python benchmarks/bench_monitoring.py [--data_dir data] [--repeats 3] [--train_subset 10000]

Goal: overhead <= 10%. Part of ``make bench`` (benchmarks/bench.py).
"""

from __future__ import annotations

import argparse
import tempfile

from _timing import PeakRSS, interleaved, median, quiet, row, seconds, table

from lit_robust.cli import main as cli_main

SECTION = "monitoring"
GOAL = 0.10
POOL = 58_000  # the demo config's training pool (60k minus 2000 validation images)
PRESET = ["--config", "callbacks/monitoring.yaml"]


def build(extra: list[str], data_dir: str, root: str, train_subset: int):
    args = ["--config", "configs/mnist_pgd_at_demo.yaml", *extra]
    args += ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.logger.init_args.save_dir", root, "--data.init_args.data_dir", data_dir]
    args += ["--data.init_args.train_subset", str(train_subset)]
    return cli_main(args, run=False)


def rows(opts: argparse.Namespace) -> list[dict]:
    quiet()
    peak = PeakRSS()
    peak.reset()
    with tempfile.TemporaryDirectory() as root:
        bare = build([], opts.data_dir, root, opts.train_subset)
        fit = seconds(lambda: bare.trainer.fit(bare.model, datamodule=bare.datamodule))
        monitored = build(PRESET, opts.data_dir, root, opts.train_subset)

        def validate(cli):
            return lambda: cli.trainer.validate(bare.model, datamodule=cli.datamodule, verbose=False)

        t = interleaved({"bare": validate(bare), "monitored": validate(monitored)}, opts.repeats)
    val_bare, val_monitored = median(t["bare"]), median(t["monitored"])
    epoch = (fit - val_bare) * POOL / opts.train_subset + val_bare
    return [
        row(
            SECTION,
            "callbacks/monitoring.yaml overhead per epoch (configs/mnist_pgd_at_demo.yaml)",
            (val_monitored - val_bare) / epoch,
            GOAL,
            unit="of an epoch",
            peak_mib=peak.mib(),
            limit="the sampled monitors' own attacks (gradient-masking sweeps on 100 images)",
            note=f"validation {val_bare:.1f} s -> {val_monitored:.1f} s; full epoch {epoch:.0f} s "
            f"(from {opts.train_subset} images)",
            validate_s=val_bare,
            validate_with_monitoring_s=val_monitored,
            epoch_s=epoch,
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train_subset", type=int, default=10_000)
    print(table(rows(parser.parse_args())))


if __name__ == "__main__":
    main()
