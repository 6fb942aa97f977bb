"""The commands in docs/*.md stay valid: each ``python -m lit_robust`` command parses with all its options
and configs (``--print_config``: configs, class paths and option names are checked, nothing runs; the
GPU and cluster commands too, their shell variables filled in), each ``python scripts/X.py`` command's
script exists and accepts ``--help``, and each ``make`` target exists (``make -n``). The README's commands
are *run* by ``test_readme.py``; the docs' commands are reproduction runs of tens of minutes to days.
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
