"""Issue 15, items 2-4: `export` and the README snippet, `evaluate` of a run without `--config`, of an export
folder, a plain state dict and a safetensors file, all giving the same clean accuracy, and written into
the run's folder (no new version_N)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lit_robust.cli import main

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "mnist_pgd_at_demo.yaml")


@pytest.fixture(scope="module")
def run(mnist_root, tmp_path_factory) -> Path:
    """A 1-epoch demo fit on 512 images: its version folder."""
    logs = tmp_path_factory.mktemp("export_logs")
    main(
        [
            "fit",
            "--config",
            DEMO,
            f"--data.init_args.data_dir={mnist_root}",
            "--data.init_args.train_subset=512",
            "--data.init_args.val_size=64",
            "--data.init_args.test_subset=100",
            "--trainer.max_epochs=1",
            "--model.init_args.train_attack.init_args.steps=2",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={logs}",
        ]
    )
    (version,) = (logs / "mnist_pgd_at_demo").glob("version_*")
    return version


def test_export_then_the_readme_snippet_rebuilds_the_net(run, mnist_root):
    main(["export", "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])  # no --config: the run's
    folder = run / "export"
    meta = json.loads((folder / "model.json").read_text())
    assert meta["net"]["class_path"] == "lit_robust.nets.SmallCNN" and meta["method"]["name"] == "PGDAT"
    assert meta["threat_model"] == {"eps": 0.3, "norm": "inf"} and meta["git_commit"]
    readme = (REPO / "README.md").read_text()
    snippet = re.search(r"<!-- export-snippet -->\n```python\n(.*?)```", readme, re.S).group(1)
    assert len(snippet.strip().splitlines()) <= 10
    scope: dict = {}
    exec(snippet.replace('"logs/mnist_pgd_at_demo/version_0/export"', repr(str(folder))), scope)
    net = scope["net"]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    x = torch.rand(8, 1, 28, 28)
    from lit_robust.nets import SmallCNN

    reference = SmallCNN(**meta["net"]["init_args"]).eval()
    reference.load_state_dict({k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))
    assert sorted(p.name for p in run.parent.iterdir()) == [run.name]  # no new version_N


def test_every_checkpoint_format_evaluates_to_the_same_clean_accuracy(run, tmp_path, capsys):
    ckpt = run / "checkpoints" / "last.ckpt"
    if not (run / "export" / "model.safetensors").is_file():
        main(["export", "--ckpt_path", str(ckpt)])
    weights = {
        k[4:]: v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items() if k.startswith("net.")
    }
    plain, wrapped, st = tmp_path / "plain.pt", tmp_path / "wrapped.pt", tmp_path / "weights.safetensors"
    torch.save(weights, plain)
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}}, wrapped)  # RobustBench-style
    save_file({k: v.contiguous() for k, v in weights.items()}, str(st))
    config = str(run / "config.yaml")
    results = {}
    for name, path, extra in [
        ("run checkpoint", ckpt, []),
        ("export folder", run / "export", ["--config", config]),
        ("state dict", plain, ["--config", config]),
        ("module. prefixed", wrapped, ["--config", config]),
        ("safetensors", st, ["--config", config]),
    ]:
        out = tmp_path / name.replace(" ", "_")
        main(
            [
                "evaluate",
                *extra,
                f"--ckpt_path={path}",
                "--suite=quick",
                "--skip=[apgd-ce]",
                f"--output_dir={out}",
            ]
        )
        (report,) = out.glob("*.json")
        results[name] = json.loads(report.read_text())["accuracy"]
    assert len({json.dumps(v, sort_keys=True) for v in results.values()}) == 1, results
    assert sorted(p.name for p in run.parent.iterdir()) == [run.name]


def test_predict_writes_a_csv_into_the_run(run):
    main(
        [
            "predict",
            "--ckpt_path",
            str(run / "checkpoints" / "last.ckpt"),
            "--model.init_args.predict_adversarial=true",
        ]
    )
    with open(run / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 100 and list(rows[0]) == ["index", "label", "prediction", "adversarial_prediction"]
    assert sorted(p.name for p in run.parent.iterdir()) == [run.name]


def test_a_default_fit_is_quiet_and_ends_with_a_summary(mnist_root, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lit_robust",
            "fit",
            "--config",
            DEMO,
            f"--data.init_args.data_dir={mnist_root}",
            "--data.init_args.train_subset=256",
            "--data.init_args.val_size=32",
            "--trainer.max_epochs=1",
            "--model.init_args.train_attack.init_args.steps=1",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    for noise in ("💡 Tip", "LeafSpec", "will override existing callbacks", "args parameter is intended"):
        assert noise not in out
    assert "PGDAT fit finished in" in out and "best validation epoch 0: robust accuracy" in out
    assert f"evaluate it: python -m lit_robust evaluate {tmp_path}/mnist_pgd_at_demo/version_0" in out


def test_fine_tuning_starts_from_weights_in_any_format(run, tmp_path):
    from lit_robust.methods import TRADES
    from lit_robust.nets import SmallCNN

    ckpt = run / "checkpoints" / "last.ckpt"
    if not (run / "export" / "model.safetensors").is_file():
        main(["export", "--ckpt_path", str(ckpt)])
    meta = json.loads((run / "export" / "model.json").read_text())
    weights = {
        k[4:]: v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items() if k.startswith("net.")
    }
    plain, st = tmp_path / "plain.pt", tmp_path / "w.safetensors"
    torch.save(weights, plain)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(st))
    for source in (ckpt, run / "export", plain, st):  # another method (TRADES) from PGD-AT's weights
        model = TRADES(net=SmallCNN(**meta["net"]["init_args"]), init_from=str(source))
        assert all(torch.equal(v, weights[k]) for k, v in model.net.state_dict().items()), source


def test_evaluate_logs_its_table_to_wandb(run, tmp_path):
    args = f"{{save_dir: {tmp_path}, project: t}}"
    wandb = f"{{class_path: lightning.pytorch.loggers.WandbLogger, init_args: {args}}}"
    logger = f"--trainer.logger=[{wandb}]"
    main(
        [
            "evaluate",
            str(run),
            "--suite=quick",
            "--skip=[apgd-ce]",
            logger,
            f"--output_dir={tmp_path / 'eval'}",
        ]
    )
    (table,) = tmp_path.glob("wandb/offline-run-*/files/media/table/eval/quick_*.table.json")
    content = json.loads(table.read_text())
    assert content["columns"] == ["attack", "accuracy", "implementation"]
    assert [row[0] for row in content["data"]] == ["clean", "pgd-20", "worst_case"]
