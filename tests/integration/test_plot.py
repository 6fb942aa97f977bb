"""`python -m lit_robust plot RUN_DIR`: PNGs from a real (tiny) monitored fit's CSV logs; clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.image import imread
from test_cli import REPO, read_metrics, run_error, tiny

from lit_robust.callbacks import (
    AdversarialExamples,
    ConfidenceGap,
    EpsWarmup,
    GradientMaskingCheck,
    LipschitzEstimate,
    RobustOverfitting,
)
from lit_robust.cli import main
from lit_robust.plot import read_epochs

# The five callbacks with test-sized budgets; `callbacks+:` appends them to the demo config's EpsWarmup.
TINY_MONITORING = """
trainer:
  callbacks+:
    - class_path: lit_robust.callbacks.RobustOverfitting
    - class_path: lit_robust.callbacks.ConfidenceGap
      init_args: {radii: [0.1, 0.5], bins: 10}
    - class_path: lit_robust.callbacks.LipschitzEstimate
      init_args: {num_samples: 20, iters: 30, jacobian_iters: 10}
    - class_path: lit_robust.callbacks.GradientMaskingCheck
      init_args: {num_samples: 40, base_steps: 3, steps_factor: 2, restarts: 1, random_restarts: 5}
    - class_path: lit_robust.callbacks.AdversarialExamples
      init_args: {num_images: 4}
"""


def monitored_args(mnist_root: str, tmp_path: Path, preset_text: str = TINY_MONITORING) -> list[str]:
    """The CLI test's tiny demo fit, 2 epochs on 256 images with 100 validation images, monitored."""
    preset = tmp_path / "tiny_monitoring.yaml"
    preset.write_text(preset_text)
    return [
        *tiny(mnist_root, tmp_path),
        f"--config={preset}",
        "--data.init_args.train_subset=256",
        "--data.init_args.val_size=100",
        "--data.init_args.eval_batch_size=50",
        "--model.init_args.eval_attack.init_args.steps=3",
        "--trainer.max_epochs=2",
    ]


@pytest.fixture(scope="module")
def run_dir(mnist_root, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("plot")
    cli = main(["fit", *monitored_args(mnist_root, tmp)])
    return Path(cli.trainer.log_dir)


def test_presets_compose_by_appending(mnist_root):
    """`callbacks+:` in the shipped presets appends: the demo's EpsWarmup stays, the presets' callbacks
    follow in order, and the W&B preset adds a logger next to the CSV one."""
    cli = main(
        [
            "--config=configs/mnist_pgd_at_demo.yaml",
            "--config=callbacks/monitoring.yaml",
            f"--data.init_args.data_dir={mnist_root}",
        ],
        run=False,
    )
    types = [type(cb) for cb in cli.trainer.callbacks]
    expected = [EpsWarmup, RobustOverfitting, ConfidenceGap, LipschitzEstimate, GradientMaskingCheck]
    assert types[: len(expected) + 1] == [*expected, AdversarialExamples]
    l2nnn = main(
        [
            "--config=configs/mnist_pgd_at_demo.yaml",
            "--config=callbacks/l2nnn.yaml",
            f"--data.init_args.data_dir={mnist_root}",
        ],
        run=False,
    )
    gap = next(cb for cb in l2nnn.trainer.callbacks if isinstance(cb, ConfidenceGap))
    assert gap.radii == [0.5, 1.0, 2.0]
    assert any(isinstance(cb, LipschitzEstimate) for cb in l2nnn.trainer.callbacks)


def test_plot_writes_pngs_from_the_csv_logs(run_dir, tmp_path):
    paths = main(["plot", str(run_dir), f"--out={tmp_path}"])
    names = sorted(p.name for p in paths)
    assert names == ["confidence_gap.png", "gradient_masking.png", "lipschitz.png", "robust_overfitting.png"]
    for path in paths:
        image = imread(path)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500, path.name
        assert image.std() > 0.05, path.name  # not a blank canvas
    # the plotted series are the logged ones: one point per epoch
    rows = read_metrics(run_dir)
    data = read_epochs(run_dir / "metrics.csv")
    logged = [float(r["val/robust_acc"]) for r in rows if r["val/robust_acc"]]
    assert [v for _, v in data["val/robust_acc"]] == logged and [e for e, _ in data["val/robust_acc"]] == [
        0,
        1,
    ]
    assert [e for e, _ in data["lipschitz/layer_product_estimate"]] == [0, 1]


def test_plot_default_folder_and_module_entry_point(run_dir):
    out = subprocess.run(
        [sys.executable, "-m", "lit_robust", "plot", str(run_dir)], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (run_dir / "plots").glob("*.png")) == [
        "confidence_gap.png",
        "gradient_masking.png",
        "lipschitz.png",
        "robust_overfitting.png",
    ]
    assert f"wrote {run_dir / 'plots' / 'lipschitz.png'}" in out.stdout


def test_plot_errors_name_the_folder(run_dir, tmp_path, capsys):
    err = run_error(["plot", str(tmp_path)], capsys)
    assert str(tmp_path) in err and "has no metrics.csv" in err
    err = run_error(["plot", str(run_dir.parent)], capsys)  # the logger's name folder, not a version
    assert "has no metrics.csv" in err and str(run_dir) in err  # points at the run below it
    only_steps = tmp_path / "steps"
    only_steps.mkdir()
    (only_steps / "metrics.csv").write_text("epoch,step,train/loss_step\n0,0,2.3\n")
    err = run_error(["plot", str(only_steps)], capsys)
    assert "no epoch-level metrics" in err
