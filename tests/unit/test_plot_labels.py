"""Plots for people: every axis has a label (with units where there are units), epoch axes have integer
ticks, the figure's title names the run, and curves have a legend."""

from __future__ import annotations

import csv

import matplotlib.figure
import pytest

from lit_robust.plot import plot_run

KEYS = [
    "epoch",
    "step",
    "val/robust_acc",
    "val/clean_acc",
    "val/loss",
    "val/robust_loss",
    "val/mean_gap",
    "lipschitz/layer_product_estimate",
    "lipschitz/layer/0",
    "masking/acc_clean",
    "masking/acc_whitebox",
]


@pytest.fixture
def figures(tmp_path, monkeypatch):
    run = tmp_path / "demo" / "version_3"
    run.mkdir(parents=True)
    with open(run / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=KEYS)
        writer.writeheader()
        for epoch in range(3):
            writer.writerow(
                {"epoch": epoch, "step": 10 * epoch + 9, **{k: 0.5 + 0.1 * epoch for k in KEYS[2:]}}
            )
    drawn: list = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, path, **kw: drawn.append(self))
    plot_run(run)
    return drawn


def test_axes_have_labels_integer_epoch_ticks_legends_and_the_run_in_the_title(figures):
    assert len(figures) == 4  # overfitting, gaps, Lipschitz, masking
    for fig in figures:
        assert fig.get_suptitle() == "run demo/version_3"
        for ax in fig.axes:
            assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
            if ax.get_xlabel() == "epoch":
                ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
                assert ticks and all(float(t).is_integer() for t in ticks), ticks
            if ax.get_lines():
                assert ax.get_legend() is not None
