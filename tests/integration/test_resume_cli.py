"""Issue 14 through the CLI, in subprocesses: a fit killed with SIGKILL resumes bit-exactly with
``--ckpt_path last`` in its own version folder (metrics continued); ``last`` with nothing to resume is an
error and ``auto`` starts; SIGUSR1 under (fake) SLURM writes ``last.ckpt``, calls ``scontrol requeue`` and
the requeued command resumes exactly; a kill during a checkpoint write leaves the previous ``last.ckpt``.

The config is PGD-AT with a random start on 320 MNIST images, batch 16 (20 steps per epoch), 2 epochs,
``last.ckpt`` also every 5 steps: each fit takes a few seconds.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
model:
  class_path: lit_robust.methods.PGDAT
  init_args:
    eps: 0.1
    checkpoint_every_n_steps: 5
    net: {{class_path: lit_robust.nets.MLP, init_args: {{hidden: [32]}}}}
    train_attack: {{class_path: lit_robust.attacks.PGD, init_args: {{steps: 3, random_start: true}}}}
    eval_attack: {{class_path: lit_robust.attacks.PGD, init_args: {{steps: 3, random_start: true}}}}
data:
  class_path: lit_robust.data.MNIST
  init_args: {{data_dir: {data}, train_subset: 320, val_size: 64, batch_size: 16, seed: 0}}
trainer:
  max_epochs: 2
  deterministic: true
  enable_progress_bar: false
  enable_model_summary: false
  logger: {{class_path: lit_robust.loggers.CSVLogger, init_args: {{save_dir: logs, name: run}}}}
"""


def write_config(folder: Path, mnist_root: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(CONFIG.format(data=mnist_root))
    return path


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    out.update({"WANDB_MODE": "offline", "PYTHONPATH": str(REPO), **extra})
    return out


def cli(folder: Path, *args: str, **kw) -> list[str]:
    return [sys.executable, "-m", "lit_robust", "fit", "--config", str(folder / "config.yaml"), *args]


def start(folder: Path, *args: str, environ: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        cli(folder, *args),
        cwd=folder,
        env=environ or env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(folder: Path, *args: str, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli(folder, *args), cwd=folder, env=environ or env(), capture_output=True, text=True, timeout=600
    )


def last_step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # not there yet, or being replaced
        return -1


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(
                f"the fit ended before the test could stop it:\n{proc.stderr.read()[-3000:]}"
            )
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out waiting for the fit")
        time.sleep(0.05)


def val_rows(version: Path) -> list[dict[str, str]]:
    with open(version / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get("val/robust_acc")]


def weights(version: Path) -> dict[str, torch.Tensor]:
    state = torch.load(version / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return {k: v for k, v in state["state_dict"].items() if k.startswith("net.")}


def fake_slurm(folder: Path) -> tuple[dict[str, str], Path]:
    """The environment of a 1-task SLURM job whose ``scontrol`` only records its arguments (in the file
    returned with it)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    record = folder / "scontrol.args"
    fake = bin_dir / "scontrol"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    fake.chmod(0o755)
    slurm = env(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        SLURM_JOB_ID="4242",
        SLURM_JOB_NAME="lit_robust_test",
        SLURM_NTASKS="1",
        SLURM_PROCID="0",
        SLURM_LOCALID="0",
        SLURM_NODEID="0",
        SLURM_NODELIST="localhost",
    )
    return slurm, record


@pytest.fixture(scope="module")
def reference(mnist_root, tmp_path_factory) -> Path:
    """The uninterrupted fit: its version folder."""
    folder = tmp_path_factory.mktemp("reference")
    write_config(folder, mnist_root)
    done = run(folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "logs" / "run" / "version_0"


def assert_same_run(version: Path, reference: Path) -> None:
    ref, got = weights(reference), weights(version)
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref), "resumed weights differ from the uninterrupted fit"
    keys = ("epoch", "step", "val/clean_acc", "val/robust_acc", "val/loss")
    assert [[r[k] for k in keys] for r in val_rows(version)] == [
        [r[k] for k in keys] for r in val_rows(reference)
    ]


def test_last_with_nothing_to_resume_is_an_error_and_auto_starts(mnist_root, tmp_path):
    write_config(tmp_path, mnist_root)
    failed = run(tmp_path, "--ckpt_path", "last", "--trainer.max_epochs=1")
    assert failed.returncode == 2
    assert "--ckpt_path last: nothing to resume, no logs/run/version_*/checkpoints/last.ckpt" in failed.stderr
    assert "Traceback" not in failed.stderr and not (tmp_path / "logs").exists()  # nothing written
    started = run(tmp_path, "--ckpt_path", "auto", "--trainer.max_epochs=1")
    assert started.returncode == 0, started.stderr[-3000:]
    assert "--ckpt_path auto: nothing to resume under logs/run, starting a new run" in started.stderr
    assert (tmp_path / "logs" / "run" / "version_0" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("at", ["between epochs", "mid-epoch"])
def test_sigkill_then_ckpt_path_last_resumes_exactly_in_the_same_folder(at, reference, mnist_root, tmp_path):
    write_config(tmp_path, mnist_root)
    version = tmp_path / "logs" / "run" / "version_0"
    last = version / "checkpoints" / "last.ckpt"
    # 20 steps per epoch; "between epochs" writes last.ckpt only after each validation
    only_epochs = ["--model.init_args.checkpoint_every_n_steps=null"] if at == "between epochs" else []
    proc = start(tmp_path, *only_epochs)
    stop_after = 20 if at == "between epochs" else 25
    wait_for(lambda: last_step(last) >= stop_after, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = last_step(last)
    assert saved == 20 if at == "between epochs" else 25 <= saved < 40  # killed before the end
    resumed = run(tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {Path('logs/run/version_0/checkpoints/last.ckpt')}: epoch" in resumed.stderr
    assert f"global step {saved}" in resumed.stderr
    assert not (tmp_path / "logs" / "run" / "version_1").exists()  # the same folder, continued
    assert_same_run(version, reference)


def test_sigusr1_under_slurm_saves_requeues_and_the_requeued_job_resumes_exactly(
    reference, mnist_root, tmp_path
):
    write_config(tmp_path, mnist_root)
    slurm, record = fake_slurm(tmp_path)
    version = tmp_path / "logs" / "run" / "version_0"
    last = version / "checkpoints" / "last.ckpt"
    proc = start(tmp_path, "--ckpt_path", "auto", environ=slurm)
    wait_for(lambda: last_step(last) >= 7, proc)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGUSR1, err[-3000:]
    assert "stopped by SIGUSR1 at global step" in err and "SLURM job 4242 requeued" in err
    assert "Traceback" not in err
    assert record.read_text().split() == ["requeue", "4242"]
    saved = last_step(last)
    assert 7 <= saved < 40
    again = run(tmp_path, "--ckpt_path", "auto", environ=slurm)  # what the requeued job runs
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"global step {saved}" in again.stderr
    assert record.read_text().split() == ["requeue", "4242"]  # not requeued again
    assert_same_run(version, reference)


SLOW_WRITER = """
import io, os, sys, time, torch
real = torch.save
def slow(obj, f, *a, **k):
    if isinstance(f, (str, os.PathLike)) or int(os.environ.get("SAVES", "0")) < 1:
        os.environ["SAVES"] = str(int(os.environ.get("SAVES", "0")) + 1)
        return real(obj, f, *a, **k)
    buf = io.BytesIO(); real(obj, buf, *a, **k); data = buf.getvalue()
    for i in range(0, len(data), 2048):  # a slow disk: the kill lands in the middle of this write
        f.write(data[i:i + 2048]); f.flush(); time.sleep(0.02)
torch.save = slow
from lit_robust.cli import main
main()
"""


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_last_ckpt(mnist_root, tmp_path):
    write_config(tmp_path, mnist_root)
    driver = tmp_path / "slow_fit.py"
    driver.write_text(SLOW_WRITER)
    folder = tmp_path / "logs" / "run" / "version_0" / "checkpoints"
    proc = subprocess.Popen(
        [sys.executable, str(driver), "fit", "--config", str(tmp_path / "config.yaml")],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: last_step(folder / "last.ckpt") == 5 and any(folder.glob(".last.ckpt.*.tmp")), proc)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = list(folder.glob(".last.ckpt.*.tmp"))
    assert partial, "the kill should have landed during the write"
    assert last_step(folder / "last.ckpt") == 5  # the previous checkpoint, whole
    resumed = run(tmp_path, "--ckpt_path", "last", "--trainer.max_epochs=1")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "global step 5" in resumed.stderr
    assert not any(folder.glob(".last.ckpt.*.tmp"))  # cleaned up by the next write


DRIVER = Path(__file__).with_name("signal_driver.py")  # lit_robust that signals itself at a hook


@pytest.mark.parametrize(
    "hook, step, name, stops_at",
    [
        # during the last batch of epoch 0: validation and the epoch's end still have to run, so the
        # checkpoint waits for the next resumable point (Lightning resumes a checkpoint written at the
        # last batch as if they had run)
        ("on_train_batch_start", 19, "SIGUSR1", 21),
        # during the sanity check, before training: this handler (not Lightning's hpc_ckpt) takes it
        ("on_validation_start", -1, "SIGUSR1", 1),
        # SIGTERM there too (torchrun, containers, SLURM's preemption): not Lightning's handler, whose
        # SIGTERMException ended the fit mid-sanity-check without a last.ckpt or a requeue
        ("on_validation_start", -1, "SIGTERM", 1),
        # a kill while epoch 0 validates: last.ckpt must not be the step-20 one written before validation
        ("on_validation_start", 20, "SIGKILL", 15),
    ],
    ids=["usr1-last-batch", "usr1-sanity-check", "term-sanity-check", "kill-in-validation"],
)
def test_a_stop_at_an_epoch_end_resumes_exactly(hook, step, name, stops_at, reference, mnist_root, tmp_path):
    write_config(tmp_path, mnist_root)
    slurm, record = fake_slurm(tmp_path)
    command = [
        sys.executable,
        str(DRIVER),
        "fit",
        "--config",
        str(tmp_path / "config.yaml"),
    ]
    stopped = subprocess.run(
        [*command, "--ckpt_path", "auto"],
        cwd=tmp_path,
        env={**slurm, "SIGNAL_HOOK": hook, "SIGNAL_STEP": str(step), "SIGNAL_NAME": name},
        capture_output=True,
        text=True,
        timeout=600,
    )
    signum = getattr(signal, name)
    last = tmp_path / "logs" / "run" / "version_0" / "checkpoints" / "last.ckpt"
    if signum == signal.SIGKILL:
        assert stopped.returncode == -signal.SIGKILL, stopped.stderr[-3000:]
    else:
        assert stopped.returncode == 128 + signum, stopped.stderr[-3000:]
        assert f"stopped by {name} at global step {stops_at} " in stopped.stderr
        assert record.read_text().split() == ["requeue", "4242"]  # once, by this handler
    assert last_step(last) == stops_at
    assert not list(tmp_path.glob("hpc_ckpt_*.ckpt")), "Lightning's own SLURM handler wrote a checkpoint"
    again = run(tmp_path, "--ckpt_path", "auto", environ=slurm)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"global step {stops_at}" in again.stderr
    assert_same_run(tmp_path / "logs" / "run" / "version_0", reference)


@pytest.mark.parametrize("subcommand", ["validate", "test"])
def test_sigterm_during_validate_or_test_is_not_reported_as_success(
    subcommand, reference, mnist_root, tmp_path
):
    """Lightning answers SIGTERM in ``validate``/``test`` with its SIGTERMException, a SystemExit without a
    status: the run stopped after one batch and exited 0, as if it had finished. It exits with 143 and
    says that it stopped and that its results are incomplete."""
    write_config(tmp_path, mnist_root)
    hook = "on_validation_start" if subcommand == "validate" else "on_test_start"
    ckpt = reference / "checkpoints" / "last.ckpt"
    config = ["--config", str(tmp_path / "config.yaml"), "--data.init_args.test_subset=64"]
    stopped = subprocess.run(
        [sys.executable, str(DRIVER), subcommand, *config, f"--ckpt_path={ckpt}"],
        cwd=tmp_path,
        env=env(SIGNAL_HOOK=hook, SIGNAL_STEP="0", SIGNAL_NAME="SIGTERM"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert f"stopped: {subcommand} received SIGTERM" in stopped.stderr and "incomplete" in stopped.stderr
    assert "Traceback" not in stopped.stderr
