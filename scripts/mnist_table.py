"""The MNIST method table of docs/mnist_table.md: train ERM, PGD-AT, TRADES, MART and BETA-AT with the
same small CNN, data and epochs (configs/mnist_*_demo.yaml), pick each checkpoint on the validation split,
then run ``python -m lit_robust evaluate --suite table`` (clean, PGD-40, APGD-CE, BETA-10, AutoAttack with
the original budgets) on the first ``--test_subset`` MNIST test images at L_inf eps 0.3.

    python scripts/mnist_table.py [--data_dir data] [--test_subset 200] [--methods erm pgd_at ...]
                                  [--fit_only]

Each step prints the exact ``python -m lit_robust`` command it runs, so any row can be redone by hand.
A finished fit is recorded in ``{out_dir}/{method}_fit.json`` and reused on the next call; where its
checkpoint is gone (a fresh clone), a method with a recorded evaluation is not retrained.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from _runs import evaluate_once, fit_once, script_args

from lit_robust.attacks.autoattack import square_check

SMALL_CNN = ["--model.init_args.net.init_args.channels=[16,32]", "--model.init_args.net.init_args.hidden=128"]
METHODS = {
    "erm": (
        "ERM",
        "configs/mnist_erm.yaml",
        [*SMALL_CNN, "--trainer.max_epochs=2", "--data.init_args.val_size=2000"],
    ),
    "pgd_at": ("PGD-AT", "configs/mnist_pgd_at_demo.yaml", []),
    "trades": ("TRADES", "configs/mnist_trades_demo.yaml", []),
    "mart": ("MART", "configs/mnist_mart_demo.yaml", []),
    "beta_at": ("BETA-AT", "configs/mnist_beta_at_demo.yaml", []),
}
COLUMNS = ("clean", "pgd-40", "apgd-ce", "beta-10", "autoattack", "worst_case")


def recorded(key: str, out_dir: Path, test_subset: int) -> dict | None:
    """The row of ``key`` from its committed records alone (no checkpoint needed): its fit and the
    evaluation of that fit's checkpoint on ``test_subset`` images."""
    fit, done = out_dir / f"{key}_fit.json", out_dir / f"{key}.json"
    if not (fit.is_file() and done.is_file()):
        return None
    fit, done = json.loads(fit.read_text()), json.loads(done.read_text())
    meta = done["report"]["meta"]
    if meta["ckpt_path"] != fit["ckpt"] or meta["n_samples"] != test_subset:
        return None
    name, config, _ = METHODS[key]
    return {"name": name, "config": config, "fit_minutes": fit["minutes"], "ckpt": fit["ckpt"], **done}


def run(key: str, data_dir: str, test_subset: int, out_dir: Path, fit_only: bool = False) -> dict | None:
    name, config, extra = METHODS[key]
    if not fit_only and (row := recorded(key, out_dir, test_subset)) and not Path(row["ckpt"]).is_file():
        print(f"\n{name}: fitted and evaluated (delete {out_dir / f'{key}_fit.json'} to redo)", flush=True)
        return row  # a fresh machine: the records stand, the checkpoint is not retrained to redo them
    common = [
        "--config",
        config,
        *extra,
        f"--data.init_args.data_dir={data_dir}",
        "--data.init_args.eval_batch_size=500",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger.init_args.save_dir=logs/mnist_table",
        f"--trainer.logger.init_args.name={key}",
    ]
    fit = fit_once(out_dir / f"{key}_fit.json", common, name)
    if fit_only:
        return None
    evaluation = evaluate_once(
        out_dir / f"{key}.json",
        [*common, f"--data.init_args.test_subset={test_subset}", "--suite=table"],
        fit["ckpt"],
        test_subset,
        name,
    )
    return {"name": name, "config": config, "fit_minutes": fit["minutes"], "ckpt": fit["ckpt"], **evaluation}


def table(rows: list[dict], test_subset: int) -> str:
    impl = rows[0]["report"]["attacks"]
    lines = [
        f"Accuracy (%) on the first {test_subset} MNIST test images, L_inf eps = 0.3; a sample counts only",
        'if it is correct clean and under the attack; "worst case" is per sample over all four attacks.',
        "",
        "| method | clean | PGD-40 | APGD-CE | BETA-10 | AutoAttack | worst case |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        acc = r["report"]["accuracy"]
        cells = " | ".join(f"{100 * acc[c]:.2f}" for c in COLUMNS)
        lines.append(f"| {r['name']} | {cells} |")
    lines += [
        "",
        "Implementations: " + "; ".join(f"{k}: {v['implementation']}" for k, v in impl.items()) + ".",
    ]
    lines += ["Attacks: " + "; ".join(f"{k} = `{_describe(v['attack'])}`" for k, v in impl.items()) + "."]
    lines += ["", "Points AutoAttack broke, by component (of the points still robust when it ran):", ""]
    for r in rows:
        lines.append(f"- {r['name']}: {_broken(r['report']['attacks']['autoattack'])}")
    flagged = [(r["name"], m) for r in rows for m in _warnings(r["report"])]
    lines += ["", "AutoAttack's sanity checks: " + ("none raised." if not flagged else "")]
    lines += [f"- {name}: {message}" for name, message in flagged]
    return "\n".join(lines) + "\n"


_LAST = re.compile(r", last_breakdown=(\{[^}]*\})")


def _describe(attack: str) -> str:
    """An attack's repr without run-time state (reports written before reprs dropped it kept it)."""
    return _LAST.sub("", attack)


def _warnings(report: dict) -> list[str]:
    """AutoAttack's sanity-check findings in a report; for reports written before evaluate recorded them,
    the Square check recomputed from the breakdown (``lit_robust.attacks.autoattack.square_check``)."""
    if "warnings" in report:
        return report["warnings"].get("autoattack", [])
    broken = report["attacks"]["autoattack"].get("broken_by_component", {})
    message = square_check(broken.get("square", 0), report["meta"]["n_samples"])
    return [] if message is None else [message]


def _broken(entry: dict) -> str:
    counts = entry.get("broken_by_component")
    if counts is None:  # older reports: the state of a single-batch run is in the repr
        match = _LAST.search(entry["attack"])
        counts = ast.literal_eval(match.group(1)) if match else {}
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def main_table() -> None:
    args = script_args(__doc__, "methods", list(METHODS), "docs/mnist_table")
    out_dir = Path(args.out_dir)
    rows, ran = [], False
    for key in METHODS:  # the table keeps every recorded method, not only those of this call
        chosen = key in args.methods
        row = run(key, args.data_dir, args.test_subset, out_dir, args.fit_only) if chosen else None
        ran = ran or row is not None
        if row is not None or (row := recorded(key, out_dir, args.test_subset)) is not None:
            rows.append(row)
            if ran:
                (out_dir / "table.md").write_text(table(rows, args.test_subset))
    if not ran:
        return
    print("\n" + table(rows, args.test_subset))
    for r in rows:
        acc = r["report"]["accuracy"]
        lowest = min(acc[c] for c in ("pgd-40", "apgd-ce", "beta-10", "autoattack"))
        if acc["autoattack"] > lowest:
            print(
                f"note: for {r['name']} AutoAttack is not the lowest column "
                f"({acc['autoattack']:.4f} > {lowest:.4f})"
            )


if __name__ == "__main__":
    main_table()
