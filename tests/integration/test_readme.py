"""Every ``python -m lit_robust`` command of the README runs, in README order, in a scratch folder holding
``configs/`` and ``callbacks/``, with tiny data and one epoch appended to the commands that train or
evaluate (optional ``[...]`` parts dropped, ``configs/X.yaml`` and ``<ckpt>`` filled in). The "Adding a
method" example is written to ``my_methods/mixed_at.py`` exactly as the README shows it and trained.

Not run here: ``make demo`` and ``make test`` (the set-up commands; CI runs ``make test``, and ``make demo``
is a 20-minute CPU run).
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from lit_robust.cli import main

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
TRAINS = ("fit", "test", "evaluate", "validate", "predict")


def readme_commands() -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line.strip())
            if "-m lit_robust" in line:
                commands.append(re.sub(r"\s+", " ", re.sub(r"\[[^\]]*\]", "", line)).strip())
    return commands


COMMANDS = readme_commands()


def tiny(mnist_root: str, subcommand: str, words: list[str]) -> list[str]:
    if subcommand not in TRAINS or any(w.endswith("help") or w == "--print_config" for w in words):
        return []
    extra = [
        f"--data.init_args.data_dir={mnist_root}",
        "--data.init_args.val_size=32",
        "--data.init_args.test_subset=32",
        "--trainer.enable_progress_bar=false",
    ]
    if subcommand == "fit":
        extra += ["--data.init_args.train_subset=256", "--trainer.max_epochs=1"]
    if subcommand == "evaluate":
        extra += ["--suite=quick"]
    return extra


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    for name in ("configs", "callbacks"):
        (folder / name).symlink_to(REPO / name)
    section = README[README.index("## Adding a method") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (folder / "my_methods").mkdir()
    (folder / "my_methods" / "mixed_at.py").write_text(code)
    return folder


def test_the_readme_has_the_commands_it_should():
    assert len(COMMANDS) >= 14 and any("MixedAT" in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=[c[:70] for c in COMMANDS])
def test_readme_command_runs(command, scratch, mnist_root, monkeypatch, capsys):
    monkeypatch.chdir(scratch)
    words = shlex.split(command.replace("configs/X.yaml", "configs/mnist_pgd_at_demo.yaml"))
    if words[0].startswith("PYTHONPATH="):
        monkeypatch.syspath_prepend(str(scratch / words.pop(0).split("=", 1)[1]))
        sys.modules.pop("my_methods", None)
    assert words[:3] == ["python", "-m", "lit_robust"], command
    args = [w.replace("<ckpt>", "logs/mnist_pgd_at_demo/version_0/checkpoints/last.ckpt") for w in words[3:]]
    argv = [*args, *tiny(mnist_root, args[0], args)]
    try:
        main(argv)
    except SystemExit as done:  # --help and --print_config exit 0 after printing
        assert done.code in (0, None), capsys.readouterr().err[-2000:]
