"""Issue 14: bad input, clear errors. Every row of ``CASES`` runs ``python -m lit_robust`` (in process) on a
tiny config and must give: a non-zero exit, exactly one ``error:`` line that names the field and contains
the expected text, no traceback, no new run folder where the failure can be found before the run starts
(``early``), and the checkpoint of an earlier run in the same log folder left byte for byte as it was.

The threat-model warnings (eps with no constraint left) are in ``test_vacuous_eps_warns_naming_the_value``:
those runs go on.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import time
from pathlib import Path

import pytest
import torch

from lit_robust.cli import main

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
model:
  class_path: lit_robust.methods.PGDAT
  init_args:
    eps: 0.1
    optimizer: {{class_path: torch.optim.Adam, init_args: {{lr: 0.001}}}}
    net: {{class_path: lit_robust.nets.MLP, init_args: {{hidden: [16]}}}}
    train_attack: {{class_path: lit_robust.attacks.PGD, init_args: {{steps: 2}}}}
    eval_attack: {{class_path: lit_robust.attacks.PGD, init_args: {{steps: 2}}}}
data:
  class_path: lit_robust.data.MNIST
  init_args: {{data_dir: {data}, train_subset: 128, val_size: 32, test_subset: 32, batch_size: 32}}
trainer:
  max_epochs: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger: {{class_path: lit_robust.loggers.CSVLogger, init_args: {{save_dir: {logs}, name: run}}}}
"""

RAW = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.fixture(scope="module")
def world(mnist_root, tmp_path_factory):
    """A config, an earlier run with its last.ckpt, damaged data folders and foreign checkpoints."""
    root = tmp_path_factory.mktemp("bad_input")
    logs = root / "logs"
    config = root / "config.yaml"
    config.write_text(CONFIG.format(data=mnist_root, logs=logs))
    main(["fit", "--config", str(config)])  # the earlier run: logs/run/version_0
    last = logs / "run" / "version_0" / "checkpoints" / "last.ckpt"
    assert last.is_file()

    def data_dir(name: str, damage) -> Path:
        folder = root / name / "MNIST" / "raw"
        folder.mkdir(parents=True)
        for f in RAW:
            os.symlink(Path(mnist_root) / "MNIST" / "raw" / f, folder / f)
        damage(folder)
        return root / name

    def bad_magic(folder: Path) -> None:
        (folder / RAW[0]).unlink()
        (folder / RAW[0]).write_bytes(b"\x12\x34\x08\x03" + bytes(16))

    def bad_size(folder: Path) -> None:
        data = (Path(mnist_root) / "MNIST" / "raw" / RAW[1]).read_bytes()
        (folder / RAW[1]).unlink()
        (folder / RAW[1]).write_bytes(data[: len(data) // 2])

    truncated = root / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[:5000])
    crafted = root / "crafted.ckpt"
    torch.save({"state_dict": {}, "when": datetime.timedelta(1)}, crafted)  # a global a safe load refuses
    saved = torch.load(last, weights_only=True)
    missing, extra = root / "missing.ckpt", root / "extra.ckpt"
    torch.save({**saved, "state_dict": dict(list(saved["state_dict"].items())[1:])}, missing)
    torch.save({**saved, "state_dict": {**saved["state_dict"], "net.layers.9.weight": torch.zeros(3)}}, extra)
    return {
        "config": str(config),
        "logs": logs,
        "last": last,
        "magic": data_dir("magic", bad_magic),
        "size": data_dir("size", bad_size),
        "partial": data_dir("partial", lambda folder: (folder / RAW[2]).unlink()),
        "truncated": truncated,
        "crafted": crafted,
        "missing": missing,
        "extra": extra,
        "readonly": "/proc/lit_robust_logs",
        "file_parent": str(config / "logs"),
    }


# (id, arguments after the subcommand ({name} = a path of the world), expected text, early)
CASES = [
    ("devices-64-on-cpu", ["--trainer.devices=64"], "trainer.devices must be between 1 and", True),
    ("devices-0", ["--trainer.devices=0"], "trainer.devices must be between 1 and", True),
    ("gpu-without-gpu", ["--trainer.accelerator=gpu"], "trainer.accelerator=gpu, but no CUDA GPU", True),
    ("num-nodes-outside-a-cluster", ["--trainer.num_nodes=4"], "trainer.num_nodes=4, but this process", True),
    ("num-nodes-0", ["--trainer.num_nodes=0"], "trainer.num_nodes must be an integer >= 1", True),
    ("max-epochs-negative", ["--trainer.max_epochs=-5"], "`max_epochs` must be a non-negative integer", True),
    (
        "lr-negative",
        ["--model.init_args.optimizer.init_args.lr=-1"],
        "model.optimizer: Invalid learning rate",
        False,
    ),
    (
        "lr-1e10-diverges",
        ["--model.init_args.net=lit_robust.nets.SmallCNN", "--model.init_args.optimizer.init_args.lr=1e10"],
        "PGDAT: the training loss is",
        False,
    ),
    ("eps-negative", ["--model.init_args.eps=-0.1"], "model.eps", True),
    ("norm-unknown", ["--model.init_args.norm=3"], "norm", True),
    (
        "attack-steps-0",
        ["--model.init_args.train_attack.init_args.steps=0"],
        "PGD.steps must be an integer >= 1",
        True,
    ),
    ("nonfinite-mode", ["--model.init_args.nonfinite=maybe"], "model.nonfinite must be one of", True),
    (
        "checkpoint-every-0",
        ["--model.init_args.checkpoint_every_n_steps=0"],
        "model.checkpoint_every_n_steps",
        True,
    ),
    ("label-noise-1.5", ["--data.init_args.label_noise=1.5"], "data.label_noise", True),
    ("batch-larger-than-data", ["--data.init_args.batch_size=500"], "data.batch_size must be <= 128", False),
    ("val-size-too-large", ["--data.init_args.val_size=60000"], "data.val_size must be < 60000", False),
    ("data-dir-missing", ["--data.init_args.data_dir=/nonexistent/data"], "/nonexistent/data", False),
    ("data-partial", ["--data.init_args.data_dir={partial}"], "t10k-images-idx3-ubyte", False),
    ("data-bad-magic", ["--data.init_args.data_dir={magic}"], "bad magic number", False),
    ("data-bad-size", ["--data.init_args.data_dir={size}"], "idx header says shape", False),
    (
        "typo-model-key",
        ["--model.init_args.epss=0.1"],
        "PGDAT has no argument 'epss' (did you mean 'eps'?)",
        True,
    ),
    (
        "typo-attack-key",
        ["--model.init_args.train_attack.init_args.stepz=2"],
        "(did you mean 'steps'?)",
        True,
    ),
    ("typo-data-key", ["--data.init_args.batchsize=8"], "(did you mean 'batch_size'?)", True),
    ("typo-trainer-option", ["--trainer.max_epochz=2"], "(did you mean '--trainer.max_epochs'?)", True),
    ("typo-method", ["--model=PGDATT"], "(did you mean 'PGDAT'?)", True),
    ("log-dir-unwritable", ["--trainer.logger.init_args.save_dir={readonly}"], "is not writable", True),
    ("log-dir-under-a-file", ["--trainer.logger.init_args.save_dir={file_parent}"], "is a file", True),
    ("ckpt-truncated", ["--ckpt_path={truncated}"], "cannot read", True),
    ("ckpt-crafted-pickle", ["--ckpt_path={crafted}"], "a safe load refuses", True),
    ("ckpt-missing-file", ["--ckpt_path=/nonexistent.ckpt"], "is not a file", True),
    (
        "ckpt-last-nothing",
        ["--ckpt_path=last", "--trainer.logger.init_args.name=fresh"],
        "nothing to resume",
        True,
    ),
    (
        "ckpt-other-architecture",
        ["--model.init_args.net.init_args.hidden=[8]", "--ckpt_path={last}"],
        "does not fit model.net",
        False,
    ),
    (
        "ckpt-other-method",
        [
            "--model=TRADES",
            "--model.init_args.net=lit_robust.nets.MLP",
            "--model.init_args.net.init_args.hidden=[16]",
            "--ckpt_path={last}",
        ],
        "written by a PGDAT fit",
        False,
    ),
]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _versions(logs: Path) -> list[str]:
    return sorted(str(p.relative_to(logs)) for p in logs.glob("*/version_*"))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line(case, world, capsys):
    name, extra, expected, early = case
    extra = [arg.format(**{k: v for k, v in world.items() if not isinstance(v, dict)}) for arg in extra]
    before, versions = _digest(world["last"]), _versions(world["logs"])
    code, err = _run(["fit", "--config", world["config"], *extra], capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and expected in lines[0], err[-2000:]
    assert "Traceback" not in err and "usage:" not in err
    assert _digest(world["last"]) == before  # the earlier run's checkpoint is untouched
    if early:
        assert _versions(world["logs"]) == versions  # failed before writing a run folder


def test_evaluate_refuses_state_dicts_with_missing_or_extra_keys(world, capsys):
    for which, text in (
        ("missing", "missing net.layers.0.weight"),
        ("extra", "unexpected net.layers.9.weight"),
    ):
        code, err = _run(["evaluate", "--config", world["config"], f"--ckpt_path={world[which]}"], capsys)
        assert code == 2 and text in err and "Traceback" not in err, err[-2000:]


@pytest.mark.parametrize("mode", ["no key", "no network"])
def test_wandb_online_without_a_key_or_a_network_advises_offline_quickly(
    mode, world, capsys, monkeypatch, tmp_path
):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    if mode == "no key":
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
        expected = "has no W&B API key"
    else:
        monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
        monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
        expected = "cannot reach 127.0.0.1:9 within 5 s"
    versions = _versions(world["logs"])
    start = time.monotonic()
    code, err = _run(
        ["fit", "--config", world["config"], "--config", str(REPO / "callbacks" / "wandb.yaml")], capsys
    )
    assert time.monotonic() - start < 10
    assert code == 2 and expected in err and "WANDB_MODE=offline" in err, err[-2000:]
    assert _versions(world["logs"]) == versions


@pytest.mark.parametrize(
    "args, text",
    [
        (["--model.init_args.eps=5"], "model.eps=5 under L_inf: every image in [0, 1] is within reach"),
        (["--model.init_args.norm=2", "--model.init_args.eps=30"], "at least the diameter sqrt(784) = 28"),
    ],
)
def test_vacuous_eps_warns_naming_the_value(args, text, world, tmp_path):
    with pytest.warns(UserWarning, match=r".*") as caught:
        main(
            [
                "fit",
                "--config",
                world["config"],
                *args,
                "--trainer.max_steps=1",
                "--trainer.limit_val_batches=1",
                f"--trainer.logger.init_args.save_dir={tmp_path}",
            ]
        )
    assert any(text in str(w.message) for w in caught), [str(w.message) for w in caught]
