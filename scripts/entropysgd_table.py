"""The MNIST EntropySGD table of docs/entropysgd_table.md: PGD-AT (the demo's Adam, and SGD), AT+EnSGD,
AT+2ndEnSGD, AWP, AWP+EnSGD and AWP+2ndEnSGD (Kanai et al., "Smoothness Analysis of Adversarial
Training", Tables 1 and 3) with the net and attack of configs/mnist_pgd_at_demo.yaml, at L_inf eps 0.3,
over several seeds.

Every run trains on the same ``--train_subset`` images for ``--epochs`` epochs (``--val_size`` more held out
for validation), keeps the epoch with the best validation PGD-20 robust accuracy, and is then tested with
PGD-20 (step 2.5 eps / 20, random start, best iterate) on the first ``--test_subset`` MNIST test images.
The eps ramp of the demo (300 of its 906 mini-batches) is scaled to the same fraction of the budget and
given in optimiser steps: mini-batches for PGD-AT/AWP, mini-batches / L for EnSGD (one outer step per L).

    python scripts/entropysgd_table.py [--seeds 0 1 2] [--variants pgd_at at_ensgd ...]
        [--train_subset 10240] [--val_size 1000] [--epochs 2] [--test_subset 2000]
    python scripts/entropysgd_table.py --long   # docs/results.md: about 70 minutes

``--long`` is the comparison of docs/results.md, long enough for an ordering to mean something: PGD-AT
(SGD) against AT+EnSGD only, 50,000 training images (2,000 held out) for 5 epochs = 1,955 mini-batches
(98 EnSGD outer steps of L = 20; the same mini-batches and PGD-10 gradient evaluations for both), tested
on all 10,000 test images, records in docs/results/entropysgd_long (other options still override it).

Each step prints the exact ``python -m lit_robust`` command it runs. A finished (variant, seed) is recorded
in ``{out_dir}/{variant}_s{seed}.json`` and reused on the next call; the table is rewritten after each run
to ``{out_dir}/table.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

from _runs import cli, fit_once

ORDER2 = ["--model.init_args.optimizer.init_args.order=2"]
SGD = [  # the SGD of the paper's baselines, at the lr of the EnSGD chain (configs/mnist_entropysgd_at.yaml)
    "--model.init_args.optimizer=torch.optim.SGD",
    "--model.init_args.optimizer.init_args.lr=0.05",
    "--model.init_args.optimizer.init_args.momentum=0.9",
    "--model.init_args.optimizer.init_args.nesterov=true",
]
VARIANTS = {  # key: (name, config, overrides, mini-batches per optimiser step)
    "pgd_at": ("PGD-AT (Adam, demo)", "configs/mnist_pgd_at_demo.yaml", [], 1),
    "pgd_at_sgd": ("PGD-AT (SGD)", "configs/mnist_pgd_at_demo.yaml", SGD, 1),
    "at_ensgd": ("AT+EnSGD", "configs/mnist_entropysgd_at.yaml", [], 20),
    "at_ensgd2": ("AT+2ndEnSGD", "configs/mnist_entropysgd_at.yaml", ORDER2, 20),
    "awp": ("AWP (SGD)", "configs/mnist_entropysgd_at_awp_only.yaml", [], 1),
    "awp_ensgd": ("AWP+EnSGD", "configs/mnist_entropysgd_at_awp.yaml", [], 20),
    "awp_ensgd2": ("AWP+2ndEnSGD", "configs/mnist_entropysgd_at_awp.yaml", ORDER2, 20),
}
LONG = {
    "variants": ["pgd_at_sgd", "at_ensgd"],
    "train_subset": 50_000,
    "val_size": 2000,
    "epochs": 5,
    "test_subset": 10_000,
    "out_dir": "docs/results/entropysgd_long",
    "logs": "logs/entropysgd_long",
}
DEMO_BATCHES, DEMO_WARMUP = 906, 300  # configs/mnist_pgd_at_demo.yaml: 2 epochs of 58,000 images at batch 128


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(key: str, seed: int, args: argparse.Namespace, out_dir: Path) -> dict:
    record = out_dir / f"{key}_s{seed}.json"
    if record.is_file():  # reused even where its checkpoint is gone (a fresh clone): delete it to redo
        print(f"\n{key} seed {seed}: reusing {record} (delete it to redo)", flush=True)
        return json.loads(record.read_text())
    name, config, extra, per_step = VARIANTS[key]
    batches = args.epochs * -(-args.train_subset // 128)
    warmup = max(1, round(DEMO_WARMUP / DEMO_BATCHES * batches / per_step))
    common = [
        "--config",
        config,
        *extra,
        f"--seed_everything={seed}",
        f"--data.init_args.data_dir={args.data_dir}",
        f"--data.init_args.train_subset={args.train_subset}",
        f"--data.init_args.val_size={args.val_size}",
        "--data.init_args.eval_batch_size=500",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={args.logs}",
        f"--trainer.logger.init_args.name={key}_s{seed}",
    ]
    fit_args = [
        *common,
        f"--trainer.max_epochs={args.epochs}",
        f"--trainer.callbacks.init_args.warmup_steps={warmup}",
    ]
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    fit = fit_once(out_dir / f"{key}_s{seed}_fit.json", fit_args, f"{name} seed {seed}")
    fit_cpu = cpu_seconds() - cpu0
    cpu1 = cpu_seconds()
    test = cli(
        ["test", *common, f"--data.init_args.test_subset={args.test_subset}", f"--ckpt_path={fit['ckpt']}"]
    )
    metrics = {k: float(v) for k, v in test.trainer.callback_metrics.items() if k.startswith("test/")}
    done = {
        "variant": name,
        "seed": seed,
        "config": config,
        "fit_args": fit_args,
        "ckpt": fit["ckpt"],
        "log_dir": fit["log_dir"],
        "test_subset": args.test_subset,
        "clean": metrics["test/clean_acc"],
        "robust": metrics["test/robust_acc"],
        "fit_cpu_minutes": fit_cpu / 60,
        "test_cpu_minutes": (cpu_seconds() - cpu1) / 60,
        "wall_minutes": (time.perf_counter() - wall0) / 60,
    }
    record.write_text(json.dumps(done, indent=1))
    return done


def table(results: dict[str, list[dict]], args: argparse.Namespace) -> str:
    lines = [
        f"MNIST, L_inf eps 0.3, PGD-20 on the first {args.test_subset} test images; checkpoint = best "
        f"validation epoch; mean ± std over seeds ({args.train_subset} training images, "
        f"{args.epochs} epochs).",
        "",
        "| method | robust acc. (%) | clean acc. (%) | seeds | CPU min / run |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, runs in results.items():
        if not runs:
            continue
        rob = [100 * r["robust"] for r in runs]
        cln = [100 * r["clean"] for r in runs]
        std = statistics.stdev if len(runs) > 1 else (lambda _: 0.0)
        cpu = statistics.mean(r["fit_cpu_minutes"] + r["test_cpu_minutes"] for r in runs)
        lines.append(
            f"| {VARIANTS[key][0]} | {statistics.mean(rob):.2f} ± {std(rob):.2f} | "
            f"{statistics.mean(cln):.2f} ± {std(cln):.2f} | {len(runs)} | {cpu:.1f} |"
        )
    lines += ["", "Per seed (robust / clean %):", ""]
    for key, runs in results.items():
        cells = ", ".join(f"s{r['seed']} {100 * r['robust']:.2f} / {100 * r['clean']:.2f}" for r in runs)
        lines.append(f"- {VARIANTS[key][0]}: {cells}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--train_subset", type=int, default=10240)
    parser.add_argument("--val_size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--test_subset", type=int, default=2000)
    parser.add_argument("--out_dir", default="docs/entropysgd_table")
    parser.add_argument("--logs", default="logs/entropysgd_table", help="save_dir of the runs' logs")
    parser.add_argument("--long", action="store_true", help="the long comparison of docs/results.md")
    args = parser.parse_args()
    if args.long:  # its defaults; options given on the command line still win
        parser.set_defaults(**LONG)
        args = parser.parse_args()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {key: [] for key in args.variants}
    for seed in args.seeds:  # seed-major: a partial run still covers every variant
        for key in args.variants:
            results[key].append(run(key, seed, args, out_dir))
            (out_dir / "table.md").write_text(table(results, args))
    print("\n" + table(results, args))


if __name__ == "__main__":
    main()
