"""The commands in docs/*.md stay valid: each ``python -m lit_robust`` command parses with all its options
and configs (``--print_config``: configs, class paths and option names are checked; the GPU and cluster
commands too, their shell variables filled in), each ``python scripts/X.py`` command's script exists and
accepts ``--help``, and each ``make`` target exists (``make -n``). Then every page's ``python -m
lit_robust`` commands that a CPU can run (all but the GPU/cluster launches of docs/cluster.md) *run*, in
the page's order, with tiny data and one epoch appended: ``fit``, then ``test``/``evaluate`` on that
fit's checkpoint and ``plot`` of its run folder. The README's commands are run by ``test_readme.py``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lit_robust.cli import main

REPO = Path(__file__).resolve().parents[2]
SHELL_VARS = {"$SLURM_NNODES": "2", "$SLURM_NTASKS_PER_NODE": "4", "$NODE_RANK": "0", "$MAIN": "127.0.0.1"}


def doc_commands() -> list[tuple[str, str]]:
    found = []
    for doc in sorted((REPO / "docs").glob("*.md")):
        text = doc.read_text()
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line.strip())
                if "lit_robust" in line or line.startswith(("python scripts/", "make ")):
                    found.append((doc.name, re.sub(r"\s+", " ", line)))
    return found


COMMANDS = doc_commands()


def test_docs_have_commands():
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("doc, command", COMMANDS, ids=[f"{d}: {c[:60]}" for d, c in COMMANDS])
def test_doc_command_is_valid(doc, command, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    for var, value in SHELL_VARS.items():
        command = command.replace(f'"{var}"', value).replace(var, value)
    words = shlex.split(re.sub(r"<[^>]+>", "placeholder.ckpt", command))  # <best checkpoint> etc.
    if words[0] == "make":
        done = subprocess.run(["make", "-n", *words[1:]], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return
    if words[0] == "python" and words[1].startswith("scripts/"):
        assert (REPO / words[1]).is_file(), words[1]
        done = subprocess.run([sys.executable, words[1], "--help"], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return
    start = words.index("lit_robust") + 1  # python -m lit_robust ..., srun python -m ..., torchrun ... -m ...
    args = words[start:]
    if args[0] == "plot":
        with pytest.raises(SystemExit) as done:
            main(["plot", "--help"])
        assert done.value.code == 0
        return
    if not any(a.startswith("--config") for a in args):  # an inline fragment, e.g. `evaluate --suite table`
        args = [*args, "--config", "configs/mnist_pgd_at_demo.yaml"]
    with pytest.raises(SystemExit) as done:
        main([*args, "--print_config"])
    assert done.value.code in (0, None), capsys.readouterr().err[-2000:]


def runnable(command: str) -> bool:
    """A ``python -m lit_robust`` command a CPU runs (not a GPU or multi-node launch)."""
    return command.startswith("python -m lit_robust") and "accelerator=gpu" not in command


RUNNABLE = {}
for _doc, _command in COMMANDS:
    if runnable(_command):
        RUNNABLE.setdefault(_doc, []).append(_command)


def tiny(mnist_root: str, subcommand: str, save_dir: Path) -> list[str]:
    extra = [
        f"--data.init_args.data_dir={mnist_root}",
        "--data.init_args.val_size=32",
        "--data.init_args.test_subset=32",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={save_dir}",
    ]
    if subcommand == "fit":
        extra += [
            "--data.init_args.train_subset=256",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
        ]
    return extra


def test_docs_have_runnable_commands():
    assert set(RUNNABLE) >= {"entropysgd_table.md", "pgd_at_run.md"}


@pytest.mark.parametrize("doc", sorted(RUNNABLE))
def test_doc_commands_run_in_order(doc, mnist_root, tmp_path, monkeypatch):
    """Each page's CPU commands, in order: a ``fit`` gives the run folder and checkpoint that the page's
    later ``test``/``evaluate`` (its ``<...>`` placeholder) and ``plot`` (its run folder) use."""
    monkeypatch.chdir(REPO)
    run_dir, ckpt = None, None
    for command in RUNNABLE[doc]:
        args = shlex.split(re.sub(r"<[^>]+>", str(ckpt), command))[3:]  # <best checkpoint>: the fit's
        if args[0] == "plot":
            assert run_dir is not None, f"{doc}: plot before any fit"
            paths = main(["plot", str(run_dir), "--out", str(tmp_path / "plots")])
            assert paths and all(Path(p).is_file() for p in paths)
            continue
        cli = main([*args, *tiny(mnist_root, args[0], tmp_path / "logs")])
        if args[0] == "fit":
            run_dir = Path(cli.trainer.log_dir)
            ckpt = cli.trainer.checkpoint_callback.best_model_path
            assert Path(ckpt).is_file()
        else:
            assert cli.trainer.logged_metrics, f"{doc}: {args[0]} logged nothing"
