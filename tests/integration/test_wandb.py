"""The W&B preset (`callbacks/wandb.yaml`) in WANDB_MODE=offline: the offline run file is read back and
must hold the run config, metric summaries, gap histograms, the image grid and the checkpoint artifact."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from test_cli import REPO
from test_plot import monitored_args

from lit_robust.cli import main

BLOCK = 32 * 1024  # the .wandb file is a LevelDB-style log: 32 KiB blocks of (crc, length, type) chunks


def read_records(path: Path) -> list:
    """Every protobuf ``Record`` of a W&B run file (the 7-byte ':W&B' header, then framed chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf, records = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if pos + 7 + length > len(data):  # a chunk still being written
            break
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
    return records


def items(updates) -> dict[str, object]:
    return {(u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in updates}


@pytest.fixture(scope="module")
def offline_run(mnist_root, tmp_path_factory):
    import wandb

    tmp = tmp_path_factory.mktemp("wandb")
    cwd = tmp / "cwd"
    cwd.mkdir()
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.chdir(cwd)  # an empty working directory: nothing may be written into it
    try:
        cli = main(["fit", *monitored_args(mnist_root, tmp), f"--config={REPO / 'callbacks' / 'wandb.yaml'}"])
        wandb.finish()
    finally:
        mp.undo()
    # every callback (the demo's EpsWarmup, the five monitors, WandbRun) and both loggers wrote under the
    # run's log folder: the W&B run sits next to the CSV logs, the working directory stays empty
    assert sorted(p.name for p in cwd.iterdir()) == []
    files = list((tmp / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    # wandb's service process may still be writing after finish(): wait for the run's exit record
    for _ in range(120):
        records = read_records(files[0])
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        time.sleep(0.5)
    return cli, files[0], records


def test_history_has_metrics_histograms_and_images(offline_run):
    _, path, records = offline_run
    history = [items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    keys = set().union(*history)
    for key in (
        "val/robust_acc",
        "val/clean_acc",
        "val/mean_gap",
        "lipschitz/layer_product_estimate",
        "masking/num_flags",
        "overfit/best_robust_acc",
        "trainer/global_step",
    ):
        assert key in keys, key
    hist = [h for h in history if "val/gap_histogram_clean/_type" in h]
    assert len(hist) == 2 and hist[-1]["val/gap_histogram_clean/_type"] == "histogram"
    assert sum(hist[-1]["val/gap_histogram_clean/values"]) == 100  # every validation image
    images = [h for h in history if "val/adversarial_examples/_type" in h]
    assert len(images) == 2 and images[0]["val/adversarial_examples/_type"] == "image-file"
    assert (path.parent / "files" / images[0]["val/adversarial_examples/path"]).is_file()


def test_summaries_config_and_checkpoint_artifact(offline_run):
    cli, _, records = offline_run
    kinds = [r.WhichOneof("record_type") for r in records]
    metrics = {r.metric.name: r.metric for r in records if r.WhichOneof("record_type") == "metric"}
    assert metrics["val/robust_acc"].summary.max and metrics["val/robust_loss"].summary.min
    assert metrics["val/robust_acc"].step_metric == "trainer/global_step"
    # the summary of val/robust_acc is its best value over the epochs
    history = [items(r.history.item) for r, kind in zip(records, kinds, strict=True) if kind == "history"]
    accs = [h["val/robust_acc"] for h in history if "val/robust_acc" in h]
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(items(r.summary.update))
    assert len(accs) == 2 and summary["val/robust_acc"] == {"max": max(accs)}
    config = {}
    for r in records:
        if r.WhichOneof("record_type") in ("run", "config"):
            updates = r.run.config.update if r.WhichOneof("record_type") == "run" else r.config.update
            config.update(items(updates))
    assert config["cli"]["model"]["class_path"] == "lit_robust.methods.PGDAT"
    assert config["cli"]["trainer"]["max_epochs"] == 2 and config["eps"] == 0.3
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert artifacts and artifacts[0].type == "model"
    # CSV stays: the preset appends the WandbLogger to the config's CSVLogger
    assert (Path(cli.trainer.log_dir) / "metrics.csv").is_file()
