"""``python -m lit_robust plot RUN_DIR [--out DIR]``: PNG plots of a run from its CSV logs.

RUN_DIR is a CSVLogger version folder (``logs/<name>/version_<n>``) holding ``metrics.csv`` and, with the
monitoring callbacks, ``confidence_gap.csv``. Written to ``RUN_DIR/plots/`` (or ``--out``), each only
when its columns were logged:

- ``robust_overfitting.png``: train/val clean and robust accuracy per epoch (best val robust epoch
  marked) and the losses;
- ``confidence_gap.png``: histogram of the top1 - top2 gap (clean and adversarial, last logged epoch),
  the mean gaps per epoch and certified accuracy per radius;
- ``lipschitz.png``: upper bound (product of layer norms), lower bounds (local Jacobian, attack pairs)
  per epoch on a log scale, and the per-layer spectral norms;
- ``gradient_masking.png``: accuracies under the checks of GradientMaskingCheck per epoch.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

from lit_robust.errors import ConfigError


def read_epochs(path: Path) -> dict[str, list[tuple[int, float]]]:
    """``{column: [(epoch, value), ...]}`` from a CSVLogger ``metrics.csv``: per epoch the last non-empty
    value of each column (epoch-level metrics are logged once per epoch)."""
    per_epoch: dict[str, dict[int, float]] = defaultdict(dict)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for key, value in row.items():
                if key not in ("epoch", "step") and value not in ("", None):
                    per_epoch[key][epoch] = float(value)
    return {key: sorted(values.items()) for key, values in per_epoch.items()}


def read_histograms(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """Last logged gap histogram per kind from ``confidence_gap.csv``: ``{kind: (edges, counts)}``."""
    rows: dict[str, list[dict[str, str]]] = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows[row["kind"]].append(row)
    out = {}
    for kind, kind_rows in rows.items():
        last = max((int(r["step"]), int(r["epoch"])) for r in kind_rows)
        sel = [r for r in kind_rows if (int(r["step"]), int(r["epoch"])) == last]
        edges = [float(r["bin_left"]) for r in sel] + [float(sel[-1]["bin_right"])]
        out[kind] = (edges, [float(r["count"]) for r in sel])
    return out


def _series(ax, data, key: str, label: str | None = None, **kw) -> bool:
    if key not in data:
        return False
    epochs, values = zip(*data[key], strict=True)
    ax.plot(epochs, values, marker="o", label=label or key, **kw)
    return True


def _figure(ncols: int, width: float = 5.5):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, 4.0))
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _save(fig, axes, path: Path, title: str, outside: bool = False) -> Path:
    """Grid, legend, integer epoch ticks and a title naming the run, then write the PNG."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            where = {"loc": "center left", "bbox_to_anchor": (1.01, 0.5)} if outside else {}
            ax.legend(fontsize=8, **where)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_overfitting(data, out: Path, title: str = "") -> Path | None:
    if "val/robust_acc" not in data:
        return None
    fig, (acc, loss) = _figure(2)
    for key in ("train/clean_acc_epoch", "train/robust_acc_epoch", "val/clean_acc", "val/robust_acc"):
        _series(acc, data, key, key.replace("_epoch", ""))
    best_epoch, best = max(data["val/robust_acc"], key=lambda p: (p[1], -p[0]))
    acc.axvline(best_epoch, color="grey", ls="--", lw=1)
    acc.set_title(f"accuracy (best val robust {best:.3f} at epoch {best_epoch})", fontsize=10)
    acc.set_xlabel("epoch")
    acc.set_ylabel("accuracy (fraction of images)")
    for key in ("train/loss_epoch", "val/loss", "val/robust_loss"):
        _series(loss, data, key, key.replace("_epoch", ""))
    loss.set_title("loss", fontsize=10)
    loss.set_xlabel("epoch")
    loss.set_ylabel("cross-entropy (nats)")
    return _save(fig, (acc, loss), out / "robust_overfitting.png", title)


def plot_gaps(data, histograms, out: Path, title: str = "") -> Path | None:
    if not histograms and "val/mean_gap" not in data:
        return None
    fig, (hist, means) = _figure(2)
    for kind, (edges, counts) in histograms.items():
        total = sum(counts) or 1.0
        hist.stairs([c / total for c in counts], edges, label=kind, fill=kind == "clean", alpha=0.6)
    hist.set_title("top1 - top2 logit gap (last validation)", fontsize=10)
    hist.set_xlabel("top1 - top2 logit gap (logit units)")
    hist.set_ylabel("fraction of images")
    for key in ("val/mean_gap", "val/mean_gap_adv", "val/mean_correct_gap", "val/mean_correct_gap_adv"):
        _series(means, data, key)
    for key in sorted(k for k in data if k.startswith("val/certified_acc@")):
        _series(means, data, key, ls="--")
    means.set_title("mean gaps (and certified accuracy) per epoch", fontsize=10)
    means.set_xlabel("epoch")
    means.set_ylabel("mean gap (logit units); certified acc. (fraction)")
    return _save(fig, (hist, means), out / "confidence_gap.png", title)


def plot_lipschitz(data, out: Path, title: str = "") -> Path | None:
    if "lipschitz/layer_product_estimate" not in data and "lipschitz/lower_bound" not in data:
        return None
    fig, (bounds, layers) = _figure(2)
    for key, label in (
        ("lipschitz/layer_product_estimate", "estimate: prod of layer norms"),
        ("lipschitz/certificate", "certificate"),
        ("lipschitz/jacobian_max", "lower: max local Jacobian"),
        ("lipschitz/attack_pair_max", "lower: attack pairs"),
    ):
        _series(bounds, data, key, label)
    bounds.set_yscale("log")
    bounds.set_title("L2 Lipschitz bounds of the logits", fontsize=10)
    bounds.set_xlabel("epoch")
    bounds.set_ylabel("L2 Lipschitz constant (log scale)")
    for key in sorted(k for k in data if k.startswith("lipschitz/layer/")):
        _series(layers, data, key, key.removeprefix("lipschitz/layer/"))
    layers.set_title("per-layer spectral norms", fontsize=10)
    layers.set_xlabel("epoch")
    layers.set_ylabel("spectral norm")
    return _save(fig, (bounds, layers), out / "lipschitz.png", title)


def plot_masking(data, out: Path, title: str = "") -> Path | None:
    keys = sorted(k for k in data if k.startswith("masking/acc_"))
    if not keys:
        return None
    fig, (ax,) = _figure(1, width=7.5)
    for key in keys:
        _series(ax, data, key, key.removeprefix("masking/acc_"))
    flags = [v for _, v in data.get("masking/num_flags", [])]
    ax.set_title(
        f"gradient-masking checks (flags raised, last epoch: {f'{flags[-1]:g}' if flags else 'n/a'})",
        fontsize=10,
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (fraction of images)")
    return _save(fig, (ax,), out / "gradient_masking.png", title, outside=True)


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Draw every plot the run's logs allow; return the PNG paths. Raises ConfigError naming the folder
    when it has no ``metrics.csv`` (listing version folders below it that do)."""
    run = Path(run_dir)
    metrics = run / "metrics.csv"
    if not metrics.is_file():
        below = sorted(str(p.parent) for p in run.glob("**/metrics.csv"))[:5] if run.is_dir() else []
        hint = f"; runs below it: {', '.join(below)}" if below else ""
        what = "is not a folder" if not run.is_dir() else "has no metrics.csv"
        raise ConfigError(
            f"plot: {run} {what} (expected a CSVLogger run folder, logs/<name>/version_<n>){hint}"
        )
    data = read_epochs(metrics)
    gap_file = run / "confidence_gap.csv"
    histograms = read_histograms(gap_file) if gap_file.is_file() else {}
    out = Path(out_dir) if out_dir is not None else run / "plots"
    out.mkdir(parents=True, exist_ok=True)
    title = f"run {run.absolute().parent.name}/{run.absolute().name}"
    made = [
        plot_overfitting(data, out, title),
        plot_gaps(data, histograms, out, title),
        plot_lipschitz(data, out, title),
        plot_masking(data, out, title),
    ]
    paths = [p for p in made if p is not None]
    if not paths:
        raise ConfigError(
            f"plot: {metrics} has no epoch-level metrics to plot (val/robust_acc, lipschitz/...)"
        )
    return paths


def main(args: list[str]) -> list[Path]:
    """``plot RUN_DIR [--out DIR]`` (called by :func:`lit_robust.cli.main`)."""
    parser = argparse.ArgumentParser(prog="python -m lit_robust plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="CSVLogger run folder with metrics.csv (logs/<name>/version_<n>)")
    parser.add_argument("--out", default=None, help="output folder (default RUN_DIR/plots)")
    ns = parser.parse_args(args)
    paths = plot_run(ns.run_dir, ns.out)
    for path in paths:
        print(f"wrote {path}")
    return paths
