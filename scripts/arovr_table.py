"""Table 1 of Zach, "Strengthening the Internal Adversarial Robustness in Lifted Neural Networks"
(arXiv 2503.07818): test accuracy of a 784-256-256-10 ReLU MLP trained on 5000 MNIST / Fashion-MNIST
samples by back-propagation, AROVR, AROVR_{alpha,beta} and AROVR^g_{alpha,beta}, without and with
back-propagation pretraining, over 3 seeds, next to the paper's numbers.

    OMP_NUM_THREADS=1 python scripts/arovr_table.py [--epochs 100] [--seeds 0 1 2]
        [--datasets mnist fashion_mnist] [--cells bp arovr ...] [--lifted_args "--model.init_args.X=..."]
        [--out_dir docs/arovr_table --doc docs/arovr_table.md --log_dir logs/arovr_table] [--dry_run]

Every run is a ``python -m lit_robust fit`` subprocess with ``configs/{dataset}_{bp_mlp,arovr,arovr_ab,
arovr_g}.yaml`` (seed S: ``--seed_everything S --data.init_args.seed S``, so the 5000-sample subset, the
10000-sample validation split, the init and the noise all change with the seed), then ``python -m
lit_robust test`` on the checkpoint with the best validation accuracy. The "w/ pre" cells start from the
checkpoint of the backprop run of the same dataset and seed (``--model.init_args.init_from``): its
best-validation checkpoint, at which BP already interpolates the 5000 training samples. (The module's
``last.ckpt`` is the same file: Lightning's ``save_last=True`` copies each saved checkpoint, and only
improvements are saved, so it is not the final epoch.) Each command is printed; each finished run is
recorded in ``docs/arovr_table/{dataset}_{cell}_seed{S}.json`` and reused on the next call (delete the
file to redo it). ``docs/arovr_table.md`` is rewritten after every run, with
``docs/arovr_table/notes.md`` (hand-written discussion) appended when it exists.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATASETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
#: key -> (column title, config suffix, BP-pretrained)
CELLS = {
    "bp": ("Backprop", "bp_mlp", False),
    "arovr": ("AROVR", "arovr", False),
    "arovr_ab": ("AROVR_{α,β}", "arovr_ab", False),
    "arovr_g": ("AROVR^g_{α,β}", "arovr_g", False),
    "arovr_pre": ("AROVR", "arovr", True),
    "arovr_ab_pre": ("AROVR_{α,β}", "arovr_ab", True),
    "arovr_g_pre": ("AROVR^g_{α,β}", "arovr_g", True),
}
#: Table 1 of the paper: mean, std (%)
PAPER = {
    "mnist": {
        "bp": (95.60, 0.13),
        "arovr": (96.04, 0.15),
        "arovr_ab": (96.19, 0.13),
        "arovr_g": (96.35, 0.06),
        "arovr_pre": (95.67, 0.14),
        "arovr_ab_pre": (96.17, 0.10),
        "arovr_g_pre": (96.41, 0.10),
    },
    "fashion_mnist": {
        "bp": (85.49, 0.09),
        "arovr": (85.63, 0.32),
        "arovr_ab": (85.78, 0.10),
        "arovr_g": (85.98, 0.21),
        "arovr_pre": (85.31, 0.19),
        "arovr_ab_pre": (85.86, 0.33),
        "arovr_g_pre": (85.82, 0.25),
    },
}


def config(dataset: str, cell: str) -> str:
    return f"configs/{dataset}_{CELLS[cell][1]}.yaml"


def lit(args: list[str], log: Path, dry_run: bool) -> None:
    cmd = [sys.executable, "-m", "lit_robust", *args]
    print(f"$ OMP_NUM_THREADS=1 python -m lit_robust {shlex.join(args)}", flush=True)
    if dry_run:
        return
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log, "a") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"command failed (exit {proc.returncode}); see {log}")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], name: str) -> list[tuple[int, float]]:
    return [(int(r["epoch"]), float(r[name])) for r in rows if r.get(name)]


def run(dataset: str, cell: str, seed: int, args: argparse.Namespace, need_ckpt: bool = False) -> dict | None:
    """Fit and test one (dataset, cell, seed), or reuse its record. ``need_ckpt``: the caller pretrains
    from this run's checkpoint, so a record whose checkpoint is gone (a fresh clone) is redone."""
    out_dir, log_root = Path(args.out_dir), Path(args.log_dir)
    record = out_dir / f"{dataset}_{cell}_seed{seed}.json"
    if record.is_file():
        done = json.loads(record.read_text())
        if done["epochs"] == args.epochs and (not need_ckpt or Path(done["best_ckpt"]).is_file()):
            print(f"{dataset} {cell} seed {seed}: reusing {record}", flush=True)
            return done
    init_from = None
    if CELLS[cell][2]:
        bp = run(dataset, "bp", seed, args, need_ckpt=not args.dry_run)
        if bp is None:
            return None
        init_from = bp["best_ckpt"]
    name, version = f"{dataset}_{cell}", f"seed{seed}"
    run_dir = log_root / name / version
    common = [
        "--config",
        config(dataset, cell),
        f"--seed_everything={seed}",
        f"--data.init_args.seed={seed}",
        f"--data.init_args.data_dir={args.data_dir}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={log_root}",
        f"--trainer.logger.init_args.name={name}",
    ]
    fit = [
        "fit",
        *common,
        f"--trainer.max_epochs={args.epochs}",
        f"--trainer.logger.init_args.version={version}",
    ]
    if init_from is not None:
        fit.append(f"--model.init_args.init_from={init_from}")
    if cell != "bp":
        fit += shlex.split(args.lifted_args)
    if not args.dry_run:
        for stale in (run_dir, log_root / name / f"{version}_test"):
            shutil.rmtree(stale, ignore_errors=True)
        run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "stdout.log"
    start = time.perf_counter()
    lit(fit, log, args.dry_run)
    fit_minutes = (time.perf_counter() - start) / 60
    ckpt_dir = run_dir / "checkpoints"
    best = (
        sorted(ckpt_dir.glob("best-epoch*.ckpt")) if not args.dry_run else [ckpt_dir / "best-epochXXX.ckpt"]
    )
    if len(best) != 1:
        raise SystemExit(f"expected one best-epoch*.ckpt in {ckpt_dir}, found {[p.name for p in best]}")
    test = ["test", *common, f"--ckpt_path={best[0]}", f"--trainer.logger.init_args.version={version}_test"]
    start = time.perf_counter()
    lit(test, log, args.dry_run)
    if args.dry_run:
        return None
    test_rows = read_csv(log_root / name / f"{version}_test" / "metrics.csv")
    fit_rows = read_csv(run_dir / "metrics.csv")
    val = column(fit_rows, "val/clean_acc")
    best_epoch = int(best[0].stem.removeprefix("best-epoch"))
    train = column(fit_rows, "train/clean_acc_epoch")
    result = {
        "dataset": dataset,
        "cell": cell,
        "seed": seed,
        "epochs": args.epochs,
        "pretrain": "bp-best" if init_from else None,
        "config": config(dataset, cell),
        "init_from": init_from,
        "fit_command": "python -m lit_robust " + shlex.join(fit),
        "test_command": "python -m lit_robust " + shlex.join(test),
        "best_ckpt": str(best[0]),
        "last_ckpt": str(ckpt_dir / "last.ckpt"),
        "best_epoch": best_epoch,
        "val_acc": dict(val)[best_epoch],
        "test_acc": float(test_rows[-1]["test/clean_acc"]),
        "test_fgsm_acc": float(test_rows[-1]["test/robust_acc"]),
        "final_train_acc": train[-1][1] if train else None,
        "val_curve": [v for _, v in val],
        "fit_minutes": fit_minutes,
        "test_minutes": (time.perf_counter() - start) / 60,
    }
    record.write_text(json.dumps(result, indent=1))
    print(
        f"{dataset} {cell} seed {seed}: test {100 * result['test_acc']:.2f}% "
        f"(val {100 * result['val_acc']:.2f}% at epoch {best_epoch}, {fit_minutes:.1f} min)",
        flush=True,
    )
    return result


def stats(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else math.nan


def fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.2f} ± {std:.2f}" + ("" if n == 3 else f" (n={n})") if n > 1 else f"{mean:.2f} (n=1)"


def table(records: list[dict], epochs: int) -> str:
    by_cell: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        by_cell.setdefault((r["dataset"], r["cell"]), []).append(r)
    header = "| | " + " | ".join(
        f"{title} ({'w/ pre' if pre else 'w/o pre'})" if key != "bp" else title
        for key, (title, _, pre) in CELLS.items()
    )
    lines = [
        "# Table 1 of Zach (arXiv 2503.07818), reproduced with lit_robust",
        "",
        "Test accuracy (%) of a 784-256-256-10 ReLU MLP (lifted, FY potential, linear output) trained on",
        "5000 samples, checkpoint with the best accuracy on 10 000 held-out validation samples, mean ± std",
        f"(sample std, ddof = 1) over seeds; {epochs} epochs per run, Adam 2e-4, batch 50, α = 0.49,",
        "β = 1/4, g ~ N(0, 1/16), 20 top-down inference sweeps. Pretraining = the best-validation checkpoint",
        "of the backprop run of the same seed (it interpolates the training set).",
        "Produced by `OMP_NUM_THREADS=1 python scripts/arovr_table.py"
        + (f" --epochs {epochs}" if epochs != 100 else "")
        + "`; per-run records (commands, checkpoints, validation curves) in `docs/arovr_table/`.",
        "",
        "## Ours vs the paper",
        "",
        header + " |",
        "|---|" + "---:|" * len(CELLS),
    ]
    flagged = []
    for ds, pretty in DATASETS.items():
        ours, paper, delta = [f"{pretty} (ours)"], [f"{pretty} (paper)"], [f"{pretty} (ours − paper)"]
        for key in CELLS:
            rs = by_cell.get((ds, key), [])
            p_mean, p_std = PAPER[ds][key]
            paper.append(f"{p_mean:.2f} ± {p_std:.2f}")
            if not rs:
                ours.append("—")
                delta.append("—")
                continue
            mean, std = stats([100 * r["test_acc"] for r in rs])
            ours.append(fmt(mean, std, len(rs)))
            d = mean - p_mean
            far = abs(d) > 2 * p_std
            delta.append(f"{d:+.2f}" + (" **(>2σ)**" if far else ""))
            if far:
                flagged.append(f"{pretty} {CELLS[key][0]} {'w/ pre' if CELLS[key][2] else 'w/o pre'}")
        lines += ["| " + " | ".join(row) + " |" for row in (ours, paper, delta)]
    lines += [
        "",
        "σ in the flag is the paper's std of that cell. Cells more than 2σ from the paper: "
        + (", ".join(flagged) if flagged else "none")
        + ".",
        "",
        "## Per-run details",
        "",
        "| dataset | cell | seed | test % | best val % | best epoch | final train acc % | FGSM-0.1 test % "
        "| fit min |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(records, key=lambda r: (r["dataset"], list(CELLS).index(r["cell"]), r["seed"])):
        train = "—" if r["final_train_acc"] is None else f"{100 * r['final_train_acc']:.2f}"
        lines.append(
            f"| {r['dataset']} | {r['cell']} | {r['seed']} | {100 * r['test_acc']:.2f} "
            f"| {100 * r['val_acc']:.2f} | {r['best_epoch']} | {train} | {100 * r['test_fgsm_acc']:.2f} "
            f"| {r['fit_minutes']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--log_dir", default="logs/arovr_table")
    parser.add_argument("--out_dir", default="docs/arovr_table")
    parser.add_argument("--doc", default="docs/arovr_table.md")
    parser.add_argument(
        "--lifted_args",
        default="",
        help="extra fit arguments for the AROVR cells, e.g. '--model.init_args.damping=none' (use another "
        "--out_dir/--doc/--log_dir so that the default records are not reused)",
    )
    parser.add_argument("--dry_run", action="store_true", help="print the commands only")
    args = parser.parse_args()
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    records: list[dict] = []

    def write() -> None:
        text = table(records, args.epochs)
        notes = Path(args.out_dir) / "notes.md"
        if notes.is_file():
            text += "\n" + notes.read_text()
        Path(args.doc).write_text(text)

    for seed in args.seeds:  # seed-major: a complete (one-seed) table early on
        for ds in args.datasets:
            for cell in args.cells:
                r = run(ds, cell, seed, args)
                if r is not None and r not in records:
                    records.append(r)
                    if not args.dry_run:
                        write()
    if records:
        print("\n" + table(records, args.epochs))


if __name__ == "__main__":
    main()
